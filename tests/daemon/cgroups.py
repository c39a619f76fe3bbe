"""A memory-limited cgroup a test moves an executor into, so the kernel's out-of-memory killer ends it.

Creating one needs write access to the cgroup file system (root, or a delegated subtree); where there is none the
test is skipped, naming why. cgroup v2 (`memory.max`, counter `oom_kill` in memory.events) and v1 (the `memory`
hierarchy: `memory.limit_in_bytes`, counter `oom_kill` in memory.oom_control) are both handled.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path("/sys/fs/cgroup")


class MemoryCgroup:
    def __init__(self, folder: Path, v2: bool):
        self.folder, self.v2 = folder, v2

    def add(self, pid: int) -> None:
        """Move process `pid` into the cgroup: what it allocates from now on counts against the limit."""
        (self.folder / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        """How many processes the out-of-memory killer ended in this cgroup."""
        name = "memory.events" if self.v2 else "memory.oom_control"
        for line in (self.folder / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


def unavailable() -> str | None:
    """Why no memory cgroup can be made here, or None when one can."""
    v1 = ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").is_file():
        return None if os.access(v1, os.W_OK) else f"{v1} is not writable (needs root or a delegated cgroup)"
    controllers = ROOT / "cgroup.controllers"
    if controllers.is_file():
        if "memory" not in controllers.read_text().split():
            return "the cgroup v2 memory controller is not enabled"
        return None if os.access(ROOT, os.W_OK) else f"{ROOT} is not writable (needs root or a delegated cgroup)"
    return "no cgroup file system at /sys/fs/cgroup"


def make(limit: int, name: str) -> MemoryCgroup:
    """A new memory cgroup of `limit` bytes; raises OSError where the system refuses."""
    v1 = ROOT / "memory"
    if (v1 / "memory.limit_in_bytes").is_file():
        folder = v1 / name
        folder.mkdir()
        (folder / "memory.limit_in_bytes").write_text(str(limit))
        return MemoryCgroup(folder, v2=False)
    folder = ROOT / name
    folder.mkdir()
    (folder / "memory.max").write_text(str(limit))
    (folder / "memory.swap.max").write_text("0") if (folder / "memory.swap.max").exists() else None
    return MemoryCgroup(folder, v2=True)


def remove(group: MemoryCgroup) -> None:
    """Move what is left in the cgroup back to its parent, then remove it."""
    parent = group.folder.parent / "cgroup.procs"
    for pid in (group.folder / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            parent.write_text(pid)
    with contextlib.suppress(OSError):
        group.folder.rmdir()


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[MemoryCgroup]:
    """A memory cgroup for one test, removed afterwards; skips the test where none can be made."""
    why = unavailable()
    if why:
        pytest.skip(f"no memory-limited cgroup: {why}")
    try:
        group = make(limit, f"seisd-test-{os.getpid()}")
    except OSError as exc:
        pytest.skip(f"no memory-limited cgroup: {exc}")
    try:
        yield group
    finally:
        remove(group)
