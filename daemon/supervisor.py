"""Supervisor: starts the executors, watches them, and restarts the ones that die.

It never blocks: `poll()` is called from the daemon's loop and only looks (Popen.poll, clocks). What a death means
for a job is the daemon's business; the supervisor reports it through `on_death(handle, reason)`.

NOTE on the ways an executor ends:
  - exits or is killed (SIGKILL, OOM killer, segfault in a native library): Popen.poll() sees the status; the job it
    ran fails with that reason and a new executor is started after `restart_backoff_s`;
  - hangs (no heartbeat for `heartbeat_timeout_s`): it is SIGKILLed, then handled as above;
  - a cancelled job that does not stop within `cancel_grace_s`: the daemon asks for a kill (`kill(slot, reason)`);
  - the daemon stops: `stop_all()` asks each to exit, then kills what is left. If the daemon is killed instead, the
    executors die with it (PR_SET_PDEATHSIG, see daemon/executor.py).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from daemon.devices import DeviceSlot

log = logging.getLogger("seisd.supervisor")


@dataclass
class ExecutorHandle:
    slot: DeviceSlot
    proc: subprocess.Popen | None = None
    pid: int | None = None
    state: str = "stopped"            # starting, ready, busy, dead, stopped
    job_id: int | None = None
    started: float = 0.0
    last_seen: float = 0.0
    restart_at: float = 0.0
    kill_reason: str | None = None
    restarts: int = 0
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def idle(self) -> bool:
        return self.state == "ready" and self.job_id is None

    def describe(self) -> dict:
        return {"slot": self.slot.name, "kind": self.slot.kind, "description": self.slot.description,
                "executor_pid": self.pid, "state": self.state, "job": self.job_id, "restarts": self.restarts}


class Supervisor:
    def __init__(self, slots: list[DeviceSlot], endpoint: str, home: Path, config: Path | None,
                 logs_dir: Path, heartbeat_timeout_s: float, start_timeout_s: float, restart_backoff_s: float,
                 on_death: Callable[[ExecutorHandle, str], None], on_state: Callable[[ExecutorHandle], None]):
        self.handles = {s.name: ExecutorHandle(s) for s in slots}
        self.endpoint = endpoint
        self.home = home
        self.config = config
        self.logs_dir = logs_dir
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.start_timeout_s = start_timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.on_death = on_death
        self.on_state = on_state

    def start_all(self) -> None:
        for h in self.handles.values():
            self._start(h)

    def _start(self, h: ExecutorHandle) -> None:
        env = dict(os.environ, **h.slot.env())
        cmd = [sys.executable, "-m", "daemon.executor", "--slot", h.slot.name, "--endpoint", self.endpoint,
               "--home", str(self.home), "--parent-pid", str(os.getpid())]
        if self.config:
            cmd += ["--config", str(self.config)]
        h.log_path = self.logs_dir / f"executor-{h.slot.name.replace(':', '')}.log"
        with open(h.log_path, "ab") as out:
            h.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      cwd=str(self.home), env=env, start_new_session=True)
        h.pid, h.state, h.job_id, h.kill_reason = h.proc.pid, "starting", None, None
        h.started = h.last_seen = time.monotonic()
        log.info("executor for %s started, pid %d", h.slot.name, h.pid)
        self.on_state(h)

    def seen(self, slot: str, pid: int | None) -> ExecutorHandle | None:
        """A message arrived from an executor; returns its handle, or None when it is from a dead incarnation."""
        h = self.handles.get(slot)
        if h is None or (pid is not None and pid != h.pid) or h.state in ("dead", "stopped"):
            return None
        h.last_seen = time.monotonic()
        return h

    def kill(self, slot: str, reason: str) -> None:
        h = self.handles[slot]
        if h.proc is not None and h.proc.poll() is None:
            h.kill_reason = reason
            h.proc.kill()

    def poll(self) -> None:
        now = time.monotonic()
        for h in self.handles.values():
            if h.state == "dead":
                if now >= h.restart_at:
                    h.restarts += 1
                    self._start(h)
                continue
            if h.proc is None or h.state == "stopped":
                continue
            code = h.proc.poll()
            if code is None:
                limit = self.start_timeout_s if h.state == "starting" else self.heartbeat_timeout_s
                if now - h.last_seen > limit:
                    self.kill(h.slot.name, f"no heartbeat for {now - h.last_seen:.0f} s")
                continue
            reason = h.kill_reason or _exit_reason(code)
            log.warning("executor for %s (pid %d) ended: %s", h.slot.name, h.pid, reason)
            h.state, h.restart_at = "dead", now + self.restart_backoff_s
            self.on_death(h, reason)
            h.job_id = None
            self.on_state(h)

    def stop_all(self, grace_s: float, send_exit: Callable[[ExecutorHandle], None]) -> None:
        live = [h for h in self.handles.values() if h.proc is not None and h.proc.poll() is None]
        for h in live:
            send_exit(h)
        deadline = time.monotonic() + grace_s
        for h in live:
            try:
                h.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait()
            h.state = "stopped"

    def pids(self) -> list[int]:
        return [h.pid for h in self.handles.values() if h.proc is not None and h.proc.poll() is None]


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
