"""What the reliability tests check after hostile input: the daemon still runs and answers, and nothing a home
stored before has changed (files under surveys/, examples/, models/, and the job store's existing rows).

Also the small filesystems of the storage-fault tests: a tmpfs the test mounts (root only; skipped elsewhere) and a
filler file that takes all the space left on it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import RunningDaemon

STORED = ("surveys", "examples", "models")


class DaemonDied(AssertionError):
    """The daemon process exited, or stopped answering, after hostile input."""


def assert_alive(d: RunningDaemon, what: str = "") -> str:
    """The daemon process runs and answers ping; returns its session."""
    if d.proc is None or d.proc.poll() is not None:
        raise DaemonDied(f"seisd exited{' after ' + what if what else ''}:\n{d.output_tail()}")
    return d.client.ping()["session"]


def files_digest(home: Path) -> dict[str, str]:
    """sha256 of every file under the home's surveys/, examples/ and models/, by relative path."""
    out: dict[str, str] = {}
    for sub in STORED:
        for f in sorted((home / sub).rglob("*")):
            if f.is_file():
                out[str(f.relative_to(home))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def job_rows(home: Path, up_to: int | None = None) -> dict[int, tuple[Any, ...]]:
    """The job store's rows (jobs with their history) read straight from SQLite, read-only."""
    db = sqlite3.connect(f"file:{home / 'seisd.db'}?mode=ro", uri=True, timeout=10)
    try:
        jobs = {r[0]: r for r in db.execute("SELECT * FROM jobs ORDER BY id")}
        hist: dict[int, list[tuple[Any, ...]]] = {}
        for r in db.execute("SELECT job_id, time, state, reason FROM job_history ORDER BY rowid"):
            hist.setdefault(r[0], []).append(r)
    finally:
        db.close()
    return {i: (row, tuple(hist.get(i, []))) for i, row in jobs.items() if up_to is None or i <= up_to}


class HomeSnapshot:
    """Files and job rows of a home at one moment; `changes()` lists what differs later (only settled jobs count:
    a finished job's row must never change again)."""

    def __init__(self, home: Path):
        self.home = home
        self.files = files_digest(home)
        rows = job_rows(home)
        self.rows = {i: r for i, r in rows.items() if r[0][3] in ("succeeded", "failed", "cancelled")}

    def changes(self) -> list[str]:
        now_files = files_digest(self.home)
        problems = [f"{p}: changed or removed" for p, h in self.files.items() if now_files.get(p) != h]
        now_rows = job_rows(self.home)
        problems += [f"job {i}: row changed {now_rows.get(i)} != {r}" for i, r in self.rows.items()
                     if now_rows.get(i) != r]
        return problems


def tmpfs_mount(folder: Path, size: int) -> None:
    """Mount a tmpfs of `size` bytes on folder, or skip the test where that is not allowed (not root, a
    container without CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Write a filler file in folder until the filesystem is full (minus about `leave` bytes); returns it."""
    filler = folder / ".filler"
    st = os.statvfs(folder)
    want = max(0, st.f_bavail * st.f_frsize - leave)
    with open(filler, "wb") as f:
        chunk = b"\0" * (1 << 16)
        while want > 0:
            try:
                want -= f.write(chunk[: min(len(chunk), want)])
                f.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler
