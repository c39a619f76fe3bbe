"""What every child of the daemon (an executor, a viewer) does first: die with the process that started it.

Standard library only, so a child imports nothing heavy before it is guarded.
NOTE on dying with the parent:
  1. PR_SET_PDEATHSIG: the kernel sends SIGKILL when the parent *thread* that forked us exits. The daemon starts
     its children from its main thread, so that is the daemon's death.
  2. A watcher thread compares os.getppid() with the pid the daemon passed us, once a second; this covers the
     window before prctl ran and systems without prctl.
`--parent-pid 0` turns both off: for running a viewer by hand (debugging, or a viewer a later daemon may adopt).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
PARENT_CHECK_S = 1.0


def die_with_parent(parent_pid: int) -> None:
    """Arm both guards for `parent_pid` (0: none); exits at once when that parent is already gone."""
    if parent_pid == 0:
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the watcher thread alone guards
        pass
    if os.getppid() != parent_pid:  # the daemon died before prctl took effect
        sys.stderr.write(f"seisd child {os.getpid()}: parent {parent_pid} is gone; exiting\n")
        os._exit(3)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            sys.stderr.write(f"seisd child {os.getpid()}: parent {parent_pid} is gone; exiting\n")
            sys.stderr.flush()
            os._exit(3)


def ignore_sigint() -> None:
    """Ctrl-C in the daemon's terminal is the daemon's to handle; the daemon stops us with SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
