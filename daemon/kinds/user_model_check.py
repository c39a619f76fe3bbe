"""The submit-time check of a user model file (model: {name: user}), run from the main side without torch.

The file is built and run once on zeros by `python -m daemon.executor.models.user` in a child process of its own
session: a crash, a hang or a stray sys.exit in user code cannot hurt the daemon, and torch is never loaded in the
daemon's process.

NOTE on what the file may start: the child's output goes to temporary files, not pipes, so a process the file left
running cannot hold the check open; when the child ends or its time is up, its process group is killed, and then
every process carrying the check's run marker (daemon/common/orphans.py): a grandchild in a session of its own too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from daemon.common.orphans import kill_run, run_marker

KILL_GRACE_S = 0.5   # what the file started gets SIGTERM, then SIGKILL after this
from workers.regular_files import regular_file_problem


def check_user_model(path: str | Path, in_channels: int = 1, n_classes: int = 2,
                     input_shape: Sequence[int] = (16, 16), params: dict | None = None,
                     timeout_s: float = 120.0) -> list[str]:
    """Problems with a user model file (empty list when it works), found by building it in a child process."""
    file = Path(path).expanduser()
    if (problem := regular_file_problem(file)):  # a FIFO would hold the child until its time-out
        return [f"user model file: {problem}"]
    args = [sys.executable, "-m", "daemon.executor.models.user", str(file.resolve()), "--in-channels", str(in_channels),
            "--n-classes", str(n_classes), "--shape", json.dumps(list(input_shape)),
            "--params", json.dumps(params or {})]
    marker = run_marker()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                                env=dict(os.environ, **marker))
        try:
            code: int | None = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _end_family(proc, marker)
        if code is None:
            return [f"checking {file} took more than {timeout_s:.0f} s (does it train or download at import?)"]
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
        if code != 0 or not lines:
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            return [f"checking {file} crashed (exit {code}): {' | '.join(tail)}"]
    return list(json.loads(lines[-1])["problems"])


def _end_family(proc: subprocess.Popen, marker: dict[str, str]) -> None:
    """The child's group, then whatever else carries the check's marker (left in sessions of their own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    kill_run(marker, KILL_GRACE_S)
