"""The house rules, kept by the build: import contracts, lint, module sizes, and no torch in the daemon's main process.

The contracts are written in pyproject.toml ([tool.importlinter]; docs/design.md explains them): client knows nothing
of daemon or workers; workers know nothing of daemon or client; daemon.server (the seisd process) and
daemon.executor never import each other and stand on daemon.kinds and daemon.common; the main side imports neither
torch nor the executor side, not even inside a function; no import cycles among the siblings of any package.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client.api import Client
from tests.daemon import odt_wire as odt
from tests.harness import ROOT, RunningDaemon

MAX_MODULE_LINES = 450


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.is_file(), "import-linter is not installed (pip install -e '.[test]')"
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_the_code_is_lint_clean() -> None:
    """ruff with the rules of pyproject.toml ([tool.ruff]: pyflakes' F and lines of at most 120 characters)."""
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.is_file(), "ruff is not installed (pip install -e '.[test]')"
    r = subprocess.run([str(ruff), "check", "--no-cache", "daemon", "workers", "client", "tools", "tests"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_no_module_is_past_the_size_limit() -> None:
    long = [(str(p.relative_to(ROOT)), n) for pkg in ("daemon", "client", "workers")
            for p in sorted((ROOT / pkg).rglob("*.py")) if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility): {long}"


# --- the main process stays torch-free while it runs every job kind -------------------------------------------

USER_MODEL = """
import torch

def build_model(in_channels, n_classes, width=4):
    return torch.nn.Sequential(torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(width, n_classes, 1))
"""

TORCH_LIBRARIES = ("libtorch", "libc10", "/torch/_C", "libgomp")


def torch_mappings(pid: int) -> list[str]:
    """Files of torch's native libraries mapped into a process (its /proc/PID/maps)."""
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps
                   if "/torch/" in line and any(lib in line for lib in TORCH_LIBRARIES)})


def _ok(d: RunningDaemon, job: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    # a generous reply time-out: a user model's submit check starts a child process that imports torch
    with Client(home=d.home, timeout=timeout) as client:
        record = client.wait(client.submit(job)["id"], timeout=timeout)
    assert record["state"] == "succeeded", (job["kind"], record["error"])
    return record


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs /proc (Linux)")
def test_main_process_loads_no_torch_while_running_every_job_kind(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import synth

    s = synth.generate(shape=(32, 32, 32), seed=0)
    synth.write(s, tmp_path / "synth")
    user_model = tmp_path / "user_model.py"
    user_model.write_text(USER_MODEL)
    script = tmp_path / "custom.py"
    script.write_text("print('custom job ran')\n")
    pts = sorted(str(p) for p in (tmp_path / "synth" / "picks").glob("*.pts"))
    data = {"survey": "demo", "crop": {"size": [15, 15]}, "batch_size": 8, "batches_per_epoch": 3,
            "val_batches": 1, "split": {"block": 4}}
    train = {"epochs": 1, "seed": 0, "early_stop": {"enabled": False}}
    with RunningDaemon(tmp_path / "home", env={"SEISD_OPENDTECT__ENABLED": "true"}) as d:
        assert torch_mappings(d.pid) == []
        _ok(d, {"kind": "import", "survey": "demo", "segy": {"file": str(tmp_path / "synth" / "seismic.sgy")}})
        _ok(d, {"kind": "import", "survey": "demo", "picks": {"files": pts, "class_pattern": r"(?P<name>.+)\.pts"}})
        _ok(d, {"kind": "extract", "examples": "demo_set", "crop": {"size": [15, 15]},
                "sources": [{"survey": "demo"}]})
        _ok(d, {"kind": "opendtect", "action": "export", "examples": "demo_set", "file": str(tmp_path / "odt.h5")})
        _ok(d, {"kind": "opendtect", "action": "import", "examples": "odt_set", "file": str(tmp_path / "odt.h5")})
        _ok(d, {"kind": "train", "output": "registry", "data": data,
                "model": {"name": "patchcnn", "params": {"filters": [4, 4, 4]}}, "train": train})
        # a user model is checked at submit by building it: in a child process, never in the daemon
        _ok(d, {"kind": "train", "output": "user", "data": data,
                "model": {"name": "user", "params": {"path": str(user_model)}}, "train": train})
        _ok(d, {"kind": "predict", "model": "registry", "survey": "demo", "output": "pred",
                "figures": {"enabled": False}})
        _ok(d, {"kind": "suggest", "model": "registry", "survey": "demo", "prediction": "pred", "lines": 2})
        _ok(d, {"kind": "custom", "script": str(script)})
        odt_address = d.client.status()["endpoints"]["opendtect"]   # OpendTect's apply server, in the main process
        odt.request_json(odt_address, {"action": "parameters", "model": "registry"})
        assert odt.apply(odt_address, [np.zeros((1, 2, 32, 32), np.float32)])[0].shape == (1, 2, 32, 32)
        loaded = torch_mappings(d.pid)
        executors = [p for p in d.executor_pids() if p]
        assert loaded == [], f"the daemon's main process (pid {d.pid}) mapped torch's libraries: {loaded}"
        # the check can see torch where it is: in an executor that ran the train job
        assert any(torch_mappings(p) for p in executors), "no executor had torch loaded: the check sees nothing"
