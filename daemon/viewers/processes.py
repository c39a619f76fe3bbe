"""Viewer processes and their records: spawn, look, stop, and the JSON record a later daemon reads.

A viewer is a child process of the daemon (its own session, stdout and stderr appended to `<home>/viewers/<name>.log`).
Its record `<home>/viewers/<name>.json` holds pid, the process's start time (to tell our process from a later one
that reused the pid), port, url, args and state; it is rewritten atomically at every change of state.

NOTE on the ways a viewer ends:
  - stopped on request: SIGTERM, then SIGKILL after a grace period; state stopped;
  - it exits or is killed (SIGKILL, OOM killer): the daemon's poll sees it (Popen.poll, or psutil for an adopted
    process that is not our child); state crashed with the reason;
  - it stops answering HTTP: killed by the manager; state crashed, reason "stopped answering";
  - the daemon dies: the viewer dies too (see daemon/common/lifeline.py); the next daemon finds the record, finds the
    process gone (or kills it when it is ours and unhealthy) and marks it stopped.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from daemon.common.children import exit_reason  # one wording of exit statuses for every child we run

STATES = ("running", "stopped", "crashed", "starting")
PUBLIC_KEYS = ("name", "state", "url", "pid", "port", "started", "log", "reason")


@dataclass
class ViewerRecord:
    """What the daemon knows of one viewer; `public()` is the viewer dict of the protocol."""

    name: str
    state: str = "stopped"
    url: str | None = None
    pid: int | None = None
    port: int | None = None
    started: float | None = None
    log: str = ""
    reason: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    create_time: float | None = None   # psutil's start time of pid: guards against pid reuse

    def public(self) -> dict[str, Any]:
        """The viewer dict: {name, state, url, pid, port, started, log, reason}."""
        d = asdict(self)
        return {k: d[k] for k in PUBLIC_KEYS}

    def save(self, folder: Path) -> None:
        """Write `<folder>/<name>.json` atomically."""
        tmp = folder / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, folder / f"{self.name}.json")

    @classmethod
    def load(cls, path: Path) -> "ViewerRecord | None":
        """A record written by save, or None when it is missing or unreadable (then it is simply forgotten)."""
        try:
            doc = json.loads(path.read_text())
            known = {k: doc[k] for k in cls.__dataclass_fields__ if k in doc}
            return cls(**known)
        except (OSError, ValueError, TypeError):
            return None


class ViewerProcess:
    """A running viewer: our child (Popen) or one adopted from a previous daemon (psutil only)."""

    def __init__(self, pid: int, create_time: float, popen: subprocess.Popen | None = None):
        self.pid = pid
        self.create_time = create_time
        self.popen = popen

    @classmethod
    def spawn(cls, cmd: list[str], log_path: Path, cwd: Path, env: dict[str, str]) -> "ViewerProcess":
        """Start `cmd` in its own session with output appended to log_path."""
        with open(log_path, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            out.flush()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 cwd=str(cwd), env=env, start_new_session=True)
        return cls(p.pid, _create_time(p.pid) or time.time(), p)

    @classmethod
    def adopt(cls, pid: int, create_time: float | None, marker: str) -> "ViewerProcess | None":
        """The live process `pid` when it is still the one we started (same start time, marker in its command
        line), else None."""
        try:
            proc = psutil.Process(pid)
            if create_time is not None and abs(proc.create_time() - create_time) > 0.5:
                return None
            if marker not in " ".join(proc.cmdline()) or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return cls(pid, proc.create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def ended(self) -> str | None:
        """None while it runs, else why it ended. Never blocks."""
        if self.popen is not None:
            code = self.popen.poll()
            return None if code is None else exit_reason(code)
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) <= 0.5 and proc.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            pass
        return "exited (an adopted viewer: its exit status is not known)"

    def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL when it has not exited after grace_s; reaps our child."""
        if self.ended() is not None:
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.ended() is not None:
                return
            time.sleep(0.02)
        self._signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(5)

    def _signal(self, sig: int) -> None:
        try:
            if self.popen is not None:
                self.popen.send_signal(sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def free_port(address: str, preferred: int | None = None) -> int:
    """A TCP port free on `address`: `preferred` when it can be bound (same URL after a restart), else any.

    The port is released before the viewer binds it; another program could take it in between, in which case
    the viewer fails to start and is reported crashed with its log saying so."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free TCP port on {address}")
