"""Fixtures for the reliability suite: a daemon that may read only from chosen folders, a fingerprint of what a
home stores, and a small filesystem the test mounts itself (skipped where mounting is not allowed).

SEISD_LONG_TESTS=1 runs the full counts (10,000+ fuzzed messages, a minute of load); by default the counts are
smaller so `make test` stays within its budget.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.harness import RunningDaemon
from tests.reliability.homecheck import tmpfs_mount
from tests.reliability.badinputs import write_picks

LONG = os.environ.get("SEISD_LONG_TESTS") == "1"


@pytest.fixture(scope="module")
def guarded_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon whose job files may read only below its own `inputs/` folder (paths.inputs): the setting a
    daemon reachable over tcp should have."""
    base = tmp_path_factory.mktemp("guarded")
    inputs = base / "inputs"
    inputs.mkdir()
    with RunningDaemon(base / "home", env={"SEISD_PATHS__INPUTS": f"[{inputs.resolve()}]"}) as d:
        d.inputs = inputs  # type: ignore[attr-defined]
        yield d


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon of its own for one test module, with the default settings (no paths.inputs)."""
    with RunningDaemon(tmp_path_factory.mktemp("seisd") / "home") as d:
        yield d


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[Path, int], Path]]:
    """mount(folder, size_bytes): a tmpfs of that size on folder, unmounted at the end of the test."""
    mounted: list[Path] = []

    def mount(folder: Path, size: int) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        tmpfs_mount(folder, size)
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False, timeout=30)


@pytest.fixture(scope="module")
def stocked_daemon(guarded_daemon: RunningDaemon, shared_data: Path) -> RunningDaemon:
    """The guarded daemon with something to lose: survey f3 (from the real F3 crop) with pick set `two`, example
    set `ex1`, and a small model file `m1`."""
    import shutil

    from tests.harness import wait_state

    d, inputs = guarded_daemon, guarded_daemon.inputs  # type: ignore[attr-defined]
    shutil.copy(shared_data / "segyio" / "f3.sgy", inputs / "f3.sgy")
    c = d.client
    jobs = [{"kind": "import", "survey": "f3", "segy": {"file": str(inputs / "f3.sgy")}},
            {"kind": "import", "survey": "f3", "picks": {"files": [str(p) for p in write_picks(inputs)],
                                                          "set": "two"}},
            {"kind": "extract", "examples": "ex1", "sources": [{"survey": "f3", "picks": "two"}],
             "crop": {"size": [8, 8]}}]
    for job in jobs:
        done = wait_state(c, c.submit(job)["id"], timeout=120)
        assert done["state"] == "succeeded", done
    _save_small_model(d.home / "models" / "m1.h5")
    return d


def _save_small_model(path: Path) -> None:
    from daemon.executor.modelfile import ModelInfo, save_model_file
    from daemon.executor.models import build_model

    model = build_model("patchcnn", 1, 2, [8, 8], {})
    save_model_file(path, model, ModelInfo(name="patchcnn", params={}, in_channels=1, n_classes=2,
                                           input_shape=[8, 8], classes=["sand", "shale"]))
