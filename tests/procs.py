"""The processes a test daemon started: remembered while they live, so they can be killed after the daemon died.

NOTE: executors start in their own sessions, so killing the daemon's process group does not reach them. Whoever
starts a daemon for a test records every descendant it has seen (psutil) whenever it looks, and on cleanup kills
any that still live; a failing test leaves no process behind even when it killed the daemon itself with SIGKILL.
Shared by tests/harness.py (RunningDaemon) and the conformance suite's own daemon (tests/conformance/wire.py),
which may use no client code.
"""
from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

import psutil


class ProcessFamily:
    """A daemon process and every descendant seen so far."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, psutil.Process] = {}

    def started(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.remember(proc.pid)

    def remember(self, pid: int) -> None:
        try:
            self.seen.setdefault(pid, psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass

    def snapshot(self) -> list[int]:
        """Record the daemon's live descendants (executors, workers); returns their pids."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for k in kids:
            self.seen.setdefault(k.pid, k)
        return [k.pid for k in kids]

    def kill_all(self, home: Path | None, runtime: Path | None = None) -> None:
        """Kill the daemon and every remembered process still alive (psutil checks pid reuse), reap the daemon,
        kill what is left in the cgroups of `home`'s jobs (only that home's next daemon would sweep them), and
        remove the home's runtime folder of sockets unless another live seisd holds the home: a daemon killed does
        not remove it, and each test's home has its own folder in /tmp (hundreds a suite run)."""
        self.snapshot()
        for p in self.seen.values():
            try:
                if p.is_running():
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        psutil.wait_procs([p for p in self.seen.values() if _alive(p)], timeout=5)
        if home is not None:
            from daemon.common.jobcgroup import kill_leftovers
            from daemon.common.orphans import owner_tag

            kill_leftovers(owner_tag(home), "test cleanup", lambda pid: False)
        if runtime is not None and not (home is not None and _home_in_use(home)):
            shutil.rmtree(runtime, ignore_errors=True)


def _home_in_use(home: Path) -> bool:
    """Whether a live seisd holds `home`'s lock (daemon/server/daemon.py, _lock_home): then the runtime folder is
    that daemon's (a test that started a second daemon of a home, which was refused, cleans up the second)."""
    from daemon.common import home as layout

    try:
        with open(layout.lock_file(home)) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:  # no lock file: no daemon ever ran there
        pass
    return False


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class StartedInWith:
    """`with X(...) as d:` for a test daemon: start() on entry, cleanup() on exit, and cleanup() too when start()
    fails, so a daemon that never answered leaves no process behind."""

    def __enter__(self):  # type: ignore[no-untyped-def]
        try:
            self.start()  # type: ignore[attr-defined]
        except BaseException:
            self.cleanup()  # type: ignore[attr-defined]
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()  # type: ignore[attr-defined]
