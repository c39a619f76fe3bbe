# seisd: `make demo` and `make test` do all set-up on a fresh machine (a .venv beside this file).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: install bytecode demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: an unpinned resolve would pull the CUDA build (gigabytes) on a CPU machine
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The project's own bytecode, written once here and brought up to date on each run (compileall skips what is
# current). An editable install leaves it to the first import, and where the environment sets
# PYTHONDONTWRITEBYTECODE (as CI's does) nothing ever writes it: every daemon, executor, data worker and seisctl
# call would compile the sources again, some 0.4 s of CPU per executor. Python reads a .pyc whatever that setting,
# and ignores one whose source changed since.
bytecode: $(STAMP)
	@$(PY) -m compileall -q -j 0 daemon workers client tools tests

install: $(STAMP) bytecode

demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)

# two workers (pytest-xdist), one a core on a 2-core machine: the suite is bound by the CPU there (three took as
# long as two, session 37); tests/conftest.py keeps each module on one worker and the Ray modules together and
# gives each worker its share of the cores. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS)) $(TEST_ARGS)

bench: install
	@for b in tools/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf demo-out .pytest_cache
