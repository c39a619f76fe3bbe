"""Shared fixtures: where the third-party test data lives."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def _share_the_cores() -> None:
    """Each pytest-xdist worker, and every daemon, executor and tool it starts (they inherit the environment),
    computes with its share of the machine's cores: OMP_NUM_THREADS = cores // workers, unless the caller set it.
    Left to torch's default, each of the two workers' executors runs one thread per core: four OpenMP threads on a
    2-core machine, whose parallel regions then wait on teammates the other process holds off the cores. Measured on
    2 cores (session 36): tests/daemon/test_refit.py beside tests/tools/test_loop_experiment.py took 520 s and timed
    out a refit test, against 170 s with one thread each. This runs when a worker loads this file, before any test
    module imports torch."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


_share_the_cores()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the project root; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without xdist it is never called
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test` runs the suite on TEST_WORKERS pytest-xdist workers. This scheduler gives a worker whole test
    modules, so a module's module-scoped daemon starts once, and all the modules that start Ray (test_ray_*.py) to
    one worker, so there is never more than one Ray instance on the machine. (xdist's own `--dist loadgroup` does
    not group with pytest 9: the marks never reach its scheduler.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "ray" if Path(module).name.startswith("test_ray_") else module

        def remove_node(self, node: Any) -> str | None:
            """A worker died (a crash, the OOM killer). xdist 3.8 puts every test it was given back in the queue,
            finished ones too, and the test it died in: the finished modules then go out as empty work that never
            reports back, and the run waits for ever at its end. Only the unfinished tests after the crash go back;
            xdist reports the one it died in as failed."""
            units = self.assigned_work.get(node, {})
            crashed = next((t for unit in units.values() for t, done in unit.items() if not done), None)
            crashitem = super().remove_node(node)
            for scope, unit in list(self.workqueue.items()):
                if crashed in unit:
                    unit[crashed] = True
                if all(unit.values()):
                    del self.workqueue[scope]
            for other in self.assigned_work:
                self._reschedule(other)
            return crashitem

    return ModuleScheduling(config, log)
