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
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
