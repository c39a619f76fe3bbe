"""ViewerManager: the daemon's side of viewer servers (TensorBoard, the example-set and survey viewer).

Contract with daemon/server/daemon.py and daemon/server/api.py:
  ViewerManager(home, settings: ViewerSettings, publish)   publish(topic, type, data, job_id=None, store=True)
  .start(name, args) -> viewer dict      .stop(name) -> viewer dict     .restart(name, args|None) -> viewer dict
  .status(name) -> viewer dict           .status_all() -> [viewer dict] .logs(name, offset, max_bytes) -> dict
  .poll()            called from the daemon's loop every tick: cheap, never blocks
  .adopt_or_clean()  at daemon start       .stop_all()  at daemon stop
Errors are client.protocol.ProtocolError (not_found for an unknown viewer name, bad_args for bad args).

States: starting (spawned, not yet answering HTTP) -> running -> stopped (on request, or the daemon stopped) |
crashed (it exited, was killed, never answered within start_timeout_s, or stopped answering). Every change is
published as a viewer.state event on topic viewer.<name> and written to the viewer's record (processes.py).
`start` does not wait for the viewer to answer: the daemon's loop must not block, so a client polls
viewer.status (or listens for viewer.state) until the state is running.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

from client import protocol as P
from daemon.common.home import viewers_folder
from daemon.common.logfiles import read_chunk
from client.protocol import ErrorCode, ProtocolError
from daemon.viewers.health import HealthChecker, check_url
from daemon.viewers.kinds import KINDS, ViewerKind, kind_of, url_host
from daemon.viewers.processes import ViewerProcess, ViewerRecord, free_port

log = logging.getLogger("seisd.viewers")
ROOT = Path(__file__).resolve().parents[2]  # the project root, so `python -m daemon.viewers...` always imports
STARTING_CHECK_S = 0.25   # how often a starting viewer is asked; running ones every settings.health_interval_s
STOP_GRACE_S = 3.0        # SIGTERM, then SIGKILL after this
FAILED_CHECKS = 3         # consecutive failed checks of a running viewer before it is killed as hung


class ViewerManager:
    """Starts, watches, stops and re-adopts the viewer processes of one daemon."""

    def __init__(self, home: Path, settings: Any, publish: Callable[..., None]):
        self.home, self.settings, self.publish = Path(home), settings, publish
        self.folder = viewers_folder(self.home)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, ViewerRecord] = {}
        for name in KINDS:
            rec = ViewerRecord.load(self.folder / f"{name}.json") or ViewerRecord(name)
            rec.log = str(self.folder / f"{name}.log")
            self.records[name] = rec
        self.procs: dict[str, ViewerProcess] = {}
        self.health = HealthChecker()
        self._since: dict[str, float] = {}          # monotonic time a viewer was spawned
        self._kill_reason: dict[str, str] = {}      # why we SIGKILLed it (reported once poll sees it gone)
        self._last_result: dict[str, Any] = {}
        self._failures: dict[str, int] = {}

    # -- operations ----------------------------------------------------------------------------------------------

    def start(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Start viewer `name`, or return it when it already runs (args are then ignored)."""
        kind = kind_of(name)
        args = kind.check_args(args or {})
        self._notice_exit(name)
        if name in self.procs:
            return self.records[name].public()
        return self._spawn(kind, args)

    def stop(self, name: str) -> dict[str, Any]:
        """Stop viewer `name` (SIGTERM, then SIGKILL); its log stays. Stopping a stopped viewer is not an error."""
        kind_of(name)
        self._notice_exit(name)
        if name in self.procs:
            self._stop_process(name, "stopped on request")
        return self.records[name].public()

    def restart(self, name: str, args: dict[str, Any] | None) -> dict[str, Any]:
        """Stop (when running) and start again, on the same port when it is free; args None keeps the last ones."""
        kind = kind_of(name)
        rec = self.records[name]
        args = kind.check_args(args) if args is not None else dict(rec.args)
        self._notice_exit(name)
        if name in self.procs:
            self._stop_process(name, "restarting")
        return self._spawn(kind, args)

    def status(self, name: str) -> dict[str, Any]:
        kind_of(name)
        self._notice_exit(name)
        return self.records[name].public()

    def status_all(self) -> list[dict[str, Any]]:
        return [self.status(name) for name in KINDS]

    def logs(self, name: str, offset: int, max_bytes: int) -> dict[str, Any]:
        """The viewer's log from byte `offset` (all its runs, appended): {text, offset (next), size, state}."""
        kind_of(name)
        return {**read_chunk(Path(self.records[name].log), offset, max_bytes), "state": self.records[name].state}

    # -- the daemon's loop ---------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Notice exits and health answers; kill viewers that never answered or stopped answering. Never blocks:
        Popen.poll, a psutil look at /proc for adopted ones, and the health thread's latest results."""
        for name in list(self.procs):
            if self._notice_exit(name):
                continue
            rec, result = self.records[name], self.health.latest(name)
            if rec.state == "starting":
                self._poll_starting(name, result)
            elif result is not None and result is not self._last_result.get(name):
                self._last_result[name] = result
                self._failures[name] = 0 if result.ok else self._failures.get(name, 0) + 1
                if self._failures[name] >= FAILED_CHECKS:
                    self._kill(name, f"stopped answering at {rec.url} ({result.error}); killed")

    def _poll_starting(self, name: str, result: Any) -> None:
        rec = self.records[name]
        if result is not None and result.ok:
            self.health.set_interval(name, self.settings.health_interval_s)
            self._set_state(name, "running", None)
        elif time.monotonic() - self._since[name] > self.settings.start_timeout_s:
            self._kill(name, f"did not answer at {rec.url} within {self.settings.start_timeout_s:g} s "
                             f"(viewers.start_timeout_s); killed; see its log")

    def adopt_or_clean(self) -> None:
        """At daemon start: a viewer the last daemon left running is adopted when it is ours and answers HTTP,
        killed when it is ours and does not; a record whose process is gone is marked stopped."""
        for name, rec in self.records.items():
            if rec.state not in ("running", "starting") or rec.pid is None:
                continue
            proc = ViewerProcess.adopt(rec.pid, rec.create_time, KINDS[name].module)
            if proc is not None and str(self.home) not in _cmdline(rec.pid):
                proc = None  # a viewer of another home
            if proc is not None and rec.url and check_url(rec.url, timeout=2.0).ok:
                self.procs[name], self._since[name] = proc, time.monotonic()
                self.health.watch(name, rec.url, self.settings.health_interval_s)
                self._set_state(name, "running", "adopted by this daemon at its start")
                log.info("viewer %s (pid %d) adopted at %s", name, rec.pid, rec.url)
            elif proc is not None:
                proc.stop(STOP_GRACE_S)
                self._set_state(name, "stopped", f"cleaned up at daemon start: pid {rec.pid} did not answer at "
                                                 f"{rec.url}; it was killed")
            else:
                self._set_state(name, "stopped", "it ended with the previous daemon")

    def stop_all(self) -> None:
        """At daemon stop: stop every viewer (they would die with the daemon anyway)."""
        for name in list(self.procs):
            self._stop_process(name, "the daemon stopped")
        self.health.close()

    # -- internals -----------------------------------------------------------------------------------------------

    def _spawn(self, kind: ViewerKind, args: dict[str, Any]) -> dict[str, Any]:
        rec = self.records[kind.name]
        address = self.settings.bind_address
        try:
            port = free_port(address, rec.port)
        except OSError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"cannot find a free port on {address} for viewer "
                                f"{kind.name!r}: {exc}; check viewers.bind_address") from None
        cmd = kind.command(self.home, address, port, os.getpid(), args)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        proc = ViewerProcess.spawn(cmd, Path(rec.log), self.home, env)
        self.procs[kind.name], self._since[kind.name] = proc, time.monotonic()
        self._failures[kind.name] = 0
        rec.pid, rec.create_time, rec.port, rec.args = proc.pid, proc.create_time, port, args
        rec.url, rec.started = f"http://{url_host(address)}:{port}/", time.time()
        self.health.watch(kind.name, rec.url, STARTING_CHECK_S)
        self._set_state(kind.name, "starting", None)
        log.info("viewer %s started: pid %d, %s", kind.name, proc.pid, rec.url)
        return rec.public()

    def _notice_exit(self, name: str) -> bool:
        """When the viewer's process has ended, record it (crashed, with the reason); True when it had."""
        proc = self.procs.get(name)
        why = proc.ended() if proc is not None else None
        if why is None:
            return False
        del self.procs[name]
        self.health.unwatch(name)
        reason = self._kill_reason.pop(name, None) or f"pid {proc.pid} {why}; see `seisctl viewer logs {name}`"
        log.warning("viewer %s crashed: %s", name, reason)
        self.records[name].pid = None
        self._set_state(name, "crashed", reason)
        return True

    def _kill(self, name: str, reason: str) -> None:
        """SIGKILL without waiting; the next poll reaps it and reports `reason`."""
        self._kill_reason[name] = f"pid {self.procs[name].pid} {reason}"
        try:
            os.kill(self.procs[name].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _stop_process(self, name: str, reason: str) -> None:
        proc = self.procs.pop(name)
        self.health.unwatch(name)
        proc.stop(STOP_GRACE_S)
        self._kill_reason.pop(name, None)
        self.records[name].pid = None
        self._set_state(name, "stopped", reason)

    def _set_state(self, name: str, state: str, reason: str | None) -> None:
        rec = self.records[name]
        rec.state, rec.reason = state, reason
        rec.save(self.folder)
        self.publish(P.viewer_topic(name), P.EventType.VIEWER_STATE, rec.public())


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
