"""The submit-time check of a user model file (model: {name: user}), run from the main side without torch.

The file is built and run once on zeros by `python -m daemon.executor.models.user` in a child process of its own
session: a crash, a hang or a stray sys.exit in user code cannot hurt the daemon, torch is never loaded in the
daemon's process, and on a time-out the child's whole process group is killed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

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
    # its own session: on a time-out the whole group goes, with anything the user's file started
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return [f"checking {file} took more than {timeout_s:.0f} s (does it train or download at import?)"]
    finally:
        _kill_group(proc)  # grandchildren left behind by a file that exited
    done = subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        return [f"checking {file} crashed (exit {done.returncode}): {' | '.join(tail)}"]
    return list(json.loads(lines[-1])["problems"])


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
