"""The daemon: sockets, the one event loop, client requests and events.

Everything here runs on the main thread and never blocks on work: a request is parsed, answered from the store or
forwarded to an executor, and the loop moves on. Long work happens in executors (daemon/executor/process.py).

Sockets (all bound by this process):
  control  ROUTER  ipc://<runtime>/control.sock  (+ tcp with CURVE when configured)  requests and replies
  events   PUB     ipc://<runtime>/events.sock   (+ tcp with CURVE when configured)  events by topic
  exec     ROUTER  ipc://<runtime>/executors.sock                                   executors (internal)
                   (+ ray.executor_endpoint over tcp with CURVE, for executors on other Ray nodes)

The parts the loop drives, each in its module:
  api.Api                 request handlers (one per operation), given only the narrow views they use
  lifecycle.JobLifecycle  submit, dispatch, cancel, and each job's fate when it ends or its executor dies
  execlink.ExecutorLink   the exec socket: typed messages (daemon/common/execproto.py), requests awaiting executors
  streams.StreamSessions  streaming-apply sessions and the executors that hold their models
  supervisor.Supervisor   executors started, watched and restarted through a backend (daemon/server/backends/)
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import zmq

from client import protocol as P
from daemon import __version__
from daemon.common import execproto as E
from daemon.common import home as layout
from daemon.common.jobcgroup import kill_leftovers
from daemon.common.keys import executor_keys
from daemon.common.orphans import OrphanSweeper, is_live_child, mark_owner
from daemon.common.settings import Settings
from daemon.kinds import CheckContext, load_plugins
from daemon.server import api
from daemon.server.backends import BackendError, make_backend
from daemon.server.backends.local import LaunchArgs
from daemon.server.backends.ray_backend import shared_home
from daemon.server.execlink import ExecutorLink
from daemon.server.lifecycle import JobLifecycle
from daemon.server.opendtect.endpoint import OpendtectEndpoint
from daemon.server.private import make_private_dir
from daemon.server.records import DaemonError
from daemon.common.router import ReplyTo, split_request
from daemon.server.security import CurveServer
from daemon.server.store import JobStore, StoreError
from daemon.server.streams import StreamSessions
from daemon.server.supervisor import ExecutorDeath, ExecutorHandle, Supervisor
from daemon.server.viewers import ViewerManager
from workers.shm import sweep_orphans

log = logging.getLogger("seisd")

TICK_S = 0.05          # how often timers (supervision, dispatch, cancel deadlines) run at most
RECONCILE_S = 5.0      # how often the store's running jobs are checked against the executors
# NOTE on daemon.started: a SUB socket reconnects by itself (every 100 ms by default) when a daemon comes back,
# and its subscriptions go with it. Publishing daemon.started at once would reach none of the subscribers of the
# previous daemon; it goes out this long after the sockets are bound, when they are back. A subscriber that was
# slower still reads it (and every other event it missed) with `events` without an id, after the last seq it saw.
STARTED_DELAY_S = 1.0
# ZeroMQ heartbeats on the tcp sockets (docs/PROTOCOL.md "Timeouts, heartbeats"): a peer that answers no PING for
# TIMEOUT is disconnected, and TTL tells the peer to do the same to us.
TCP_HEARTBEAT_IVL_MS, TCP_HEARTBEAT_TIMEOUT_MS, TCP_HEARTBEAT_TTL_MS = 5_000, 15_000, 30_000


class Daemon:
    def __init__(self, home: Path, settings: Settings, config_file: Path | None = None):
        self.home = home
        self.settings = settings
        self.config_file = config_file
        self.session = uuid.uuid4().hex
        self.started = time.time()
        self.stopping: str | None = None
        self.announce_at: float | None = None  # when daemon.started goes out (STARTED_DELAY_S after run starts)
        self.background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="seisd-check")
        self.off_loop_waiting: list[tuple[Future, Callable[[Any], dict[str, Any]], ReplyTo]] = []
        layout.make_folders(home)
        self._lock_home()
        # every process started from here on carries the home's marker; what an earlier seisd of this home left
        # (it was killed with its executors' children still running) is ended now, before anything of ours runs
        self.owner = mark_owner(home)
        self.orphans = OrphanSweeper(home, extra=lambda why: kill_leftovers(self.owner, why, is_live_child))
        self.orphans.now("at start")
        self.rundir = P.runtime_dir(home)
        make_private_dir(self.rundir)
        load_plugins(settings.plugins)
        self.store = JobStore(layout.database(home))
        self.zctx = zmq.Context()
        self.control = self._bind(zmq.ROUTER, P.control_endpoint(home))
        self.events = self._bind(zmq.PUB, P.events_endpoint(home))
        self.endpoints = {"control": P.control_endpoint(home), "events": P.events_endpoint(home)}
        self.authorized_keys = self._home_path(settings.tcp.authorized_keys).absolute()
        self.exec_curve: CurveServer | None = None
        self.exec_sock, exec_endpoint = self._bind_executor_socket()
        self.control_sockets = [self.control]
        self.curve: CurveServer | None = None
        self.tcp_control: zmq.Socket | None = None
        if settings.tcp.endpoint:
            self._bind_tcp()
        exec_home = shared_home(settings, home) if settings.backend == "ray" else home
        try:
            self.backend = make_backend(settings, LaunchArgs(exec_endpoint, exec_home, config_file,
                                                             layout.logs_folder(exec_home)))
        except BackendError as exc:
            raise DaemonError(str(exc)) from None
        self.supervisor = Supervisor(
            self.backend.slots(), self.backend, settings.executor.heartbeat_timeout_s,
            settings.executor.restart_backoff_s, on_death=self._executor_died, on_state=self._executor_state)
        self.link = ExecutorLink(self.exec_sock, self.supervisor, self._executor_state, self.session)
        self.lifecycle = JobLifecycle(home, self.store, settings, self.supervisor, self.backend, self.link,
                                      self.publish, lambda: self.stopping, self._executor_state)
        self.supervisor.on_note = self.lifecycle.executor_note
        self.streams = StreamSessions(self.supervisor.handles, self.link)
        self.viewers = ViewerManager(home, settings.viewers, self.publish)
        roots = tuple(Path(r).expanduser().resolve() for r in settings.paths.inputs)
        self.api = api.Api(
            daemon=self, jobs=self.store, lifecycle=self.lifecycle, executors=self.supervisor, streams=self.streams,
            viewers=self.viewers, off_loop=self.off_loop, limits=settings.limits,
            check_context=CheckContext(home=home, input_roots=roots + ((home.resolve(),) if roots else ()),
                                       allow_remote_code=settings.tcp.allow_code,
                                       default_workers=settings.workers.default_count),
            device_names=self.lifecycle.slot_names)
        self.opendtect: OpendtectEndpoint | None = None   # OpendTect's apply-server framing (docs/opendtect.md)
        if settings.opendtect.enabled:
            self.opendtect = OpendtectEndpoint(settings.opendtect, settings.limits, self.rundir,
                                               P.control_endpoint(home), __version__)
            self.endpoints["opendtect"] = self.opendtect.address

    # -- start-up ----------------------------------------------------------------------------------------------

    def _lock_home(self) -> None:
        self._lockfile = open(layout.lock_file(self.home), "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.seek(0)
            raise DaemonError(f"another seisd already runs for {self.home} (pid "
                              f"{self._lockfile.read().strip() or '?'}); stop it with `seisctl daemon stop`") from None
        self._lockfile.truncate(0)
        self._lockfile.write(str(os.getpid()))
        self._lockfile.flush()

    def _bind(self, kind: int, endpoint: str) -> zmq.Socket:
        s = self.zctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if kind == zmq.ROUTER:
            s.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if kind == zmq.PUB:
            s.setsockopt(zmq.SNDHWM, 100_000)
        # a frame far above the soft limits drops the connection instead of filling memory
        s.setsockopt(zmq.MAXMSGSIZE, 2 * self.settings.limits.max_message_bytes)
        try:
            s.bind(endpoint)
        except zmq.ZMQError as exc:
            raise DaemonError(f"cannot bind {endpoint}: {exc}") from None
        return s

    def _bind_executor_socket(self) -> tuple[zmq.Socket, str]:
        """The executors' socket and the endpoint they connect to: ipc in the runtime folder, or over tcp with
        CURVE (ray.executor_endpoint) for executors on other nodes. The tcp one has a ZeroMQ context of its own:
        one context serves one authenticator, and the control socket's may be in use."""
        endpoint = self.settings.ray.executor_endpoint if self.settings.backend == "ray" else None
        if not endpoint:
            ipc = f"ipc://{self.rundir / 'executors.sock'}"
            return self._bind(zmq.ROUTER, ipc), ipc
        keys = executor_keys(self.home).ensure()
        self.exec_zctx = zmq.Context()
        self.exec_curve = CurveServer(self.exec_zctx, keys.server_secret, keys.authorized)
        s = self.exec_zctx.socket(zmq.ROUTER)
        for opt, value in ((zmq.LINGER, 0), (zmq.ROUTER_HANDOVER, 1),
                           (zmq.MAXMSGSIZE, 2 * self.settings.limits.max_message_bytes)):
            s.setsockopt(opt, value)
        self.exec_curve.apply(s)
        try:
            s.bind(endpoint)
        except zmq.ZMQError as exc:
            raise DaemonError(f"cannot bind ray.executor_endpoint {endpoint}: {exc}") from None
        bound = s.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.endpoints["executors"] = bound
        return s, bound

    def _bind_tcp(self) -> None:
        t = self.settings.tcp
        self.curve = CurveServer(self.zctx, self._home_path(t.server_secret_key), self._home_path(t.authorized_keys))
        s = self.zctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, 2 * self.settings.limits.max_message_bytes)
        _heartbeats(s)
        self.curve.apply(s)
        try:
            s.bind(t.endpoint)
        except zmq.ZMQError as exc:
            raise DaemonError(f"cannot bind tcp.endpoint {t.endpoint}: {exc}") from None
        self.control_sockets.append(s)
        self.tcp_control = s
        self.endpoints["tcp_control"] = s.getsockopt(zmq.LAST_ENDPOINT).decode()
        if t.events_endpoint:
            self.tcp_events = self.zctx.socket(zmq.PUB)
            self.tcp_events.setsockopt(zmq.LINGER, 0)
            self.tcp_events.setsockopt(zmq.SNDHWM, 100_000)
            _heartbeats(self.tcp_events)
            self.curve.apply(self.tcp_events)
            self.tcp_events.bind(t.events_endpoint)
            self.endpoints["tcp_events"] = self.tcp_events.getsockopt(zmq.LAST_ENDPOINT).decode()

    def _home_path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.home / q

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> None:
        self.lifecycle.recover()
        self.sweep_shared_memory()
        self.supervisor.start_all()
        self.viewers.adopt_or_clean()
        if self.opendtect:
            self.opendtect.start()
        self.announce_at = time.monotonic() + STARTED_DELAY_S
        log.info("seisd %s started: pid %d, home %s, session %s, backend %s, slots %s", __version__, os.getpid(),
                 self.home, self.session, self.backend.name, ", ".join(self.supervisor.handles))
        poller = zmq.Poller()
        for s in self.control_sockets:
            poller.register(s, zmq.POLLIN)
        poller.register(self.exec_sock, zmq.POLLIN)
        next_tick = next_reconcile = 0.0
        while not self.stopping:
            ready = dict(poller.poll(int(TICK_S * 1000)))
            now = time.monotonic()
            # NOTE: a failed store write (a full disk) must not end the daemon: it is logged, the loop goes on, and
            # the periodic reconciliation repairs jobs whose state could not be recorded.
            with store_failures_logged():
                if ready.get(self.exec_sock):
                    self._drain(self.exec_sock, self._on_executor)
                for s in self.control_sockets:
                    if ready.get(s):
                        self._drain(s, lambda frames, s=s: self._on_request(s, frames))
                if now >= next_tick:
                    next_tick = now + TICK_S
                    self._tick(now)
                if now >= next_reconcile:
                    next_reconcile = now + RECONCILE_S
                    self.lifecycle.reconcile()
        self._shutdown()

    def _drain(self, sock: zmq.Socket, handle: Any, budget: int = 256) -> None:
        """Handle what is waiting, a bounded number at a time so one busy socket cannot starve the others."""
        for _ in range(budget):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            handle(frames)

    def _tick(self, now: float) -> None:
        if self.announce_at is not None and now >= self.announce_at:
            self._announce()
        self.supervisor.poll()
        if self.off_loop_waiting:
            self._finish_off_loop()
        self.lifecycle.tick(now)
        self.link.expire(now)
        if self.curve:
            self.curve.reload_if_changed()
        self.viewers.poll()
        self.lifecycle.dispatch()

    # -- requests ----------------------------------------------------------------------------------------------

    def _announce(self) -> None:
        """daemon.started, once (STARTED_DELAY_S after the loop started, or before daemon.stopping)."""
        self.announce_at = None
        self.publish(P.DAEMON_TOPIC, P.EventType.DAEMON_STARTED,
                     {"version": __version__, "pid": os.getpid(), "session": self.session})

    def heartbeat(self) -> dict[str, int] | None:
        """What `status` says of the tcp sockets' ZeroMQ heartbeats (read back from the control socket)."""
        if self.tcp_control is None:
            return None
        return {"interval_ms": self.tcp_control.getsockopt(zmq.HEARTBEAT_IVL),
                "timeout_ms": self.tcp_control.getsockopt(zmq.HEARTBEAT_TIMEOUT),
                "ttl_ms": self.tcp_control.getsockopt(zmq.HEARTBEAT_TTL)}

    def security(self) -> dict[str, Any]:
        """What `status` says of tcp access: whether it is on, how many keys are authorised, key-file findings."""
        if self.curve is None:
            return {"tcp": False, "authorized": 0, "warnings": []}
        return {"tcp": True, "authorized": len(self.curve.ring.keys), "warnings": self.curve.warnings}

    def _on_request(self, sock: zmq.Socket, frames: list[zmq.Frame]) -> None:
        if sock is self.tcp_control and self.curve and not self.curve.allows(frames[-1]):
            # a connection whose key was revoked after its handshake: dropped unanswered, like a stranger's
            log.info("dropped a tcp request from a key no longer authorised")
            return
        envelope, body, rid = split_request(frames, self.settings.limits.max_header_bytes)
        try:
            lim = self.settings.limits
            req = P.decode_request(body, lim.max_header_bytes, lim.max_message_bytes, lim.max_frames)
            rid = req.id
            to = ReplyTo(sock, envelope, rid, self.session, remote=sock is self.tcp_control)
            result = self.api.handle(req, to)
            if result is api.DEFERRED:
                return
            to.ok(*result)
        except P.ProtocolError as exc:
            ReplyTo(sock, envelope, rid, self.session).fail(exc)
        except Exception as exc:  # a bug in a handler must not take the daemon down
            log.exception("request failed")
            ReplyTo(sock, envelope, rid, self.session).fail(P.ProtocolError(
                P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))

    def off_loop(self, work: Callable[[], Any], finish: Callable[[Any], dict[str, Any]], to: ReplyTo) -> None:
        """Run slow, side-effect-free work (a submit-time check) in a thread; `finish(result)` then runs on the
        loop and its return value (or ProtocolError) is the reply."""
        self.off_loop_waiting.append((self.background.submit(work), finish, to))

    def _finish_off_loop(self) -> None:
        waiting, self.off_loop_waiting = self.off_loop_waiting, []
        for future, finish, to in waiting:
            if not future.done():
                self.off_loop_waiting.append((future, finish, to))
                continue
            try:
                to.ok(finish(future.result()))
            except P.ProtocolError as exc:
                to.fail(exc)
            except Exception as exc:  # noqa: BLE001 - a failing check is reported, the daemon goes on
                log.exception("a background check failed")
                to.fail(P.ProtocolError(P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))

    def request_stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = reason

    # -- events ------------------------------------------------------------------------------------------------

    def publish(self, topic: str, type_: str, data: dict[str, Any], job_id: int | None = None,
                store: bool = True) -> None:
        """Publish an event; it is also recorded with its seq, under its job if it has one (unless store=False:
        job log lines, which live in the job's log file, and executor states, which `devices` tells), so
        `events` and `show` can give it later."""
        when = time.time()
        seq = self.store.add_event(job_id, type_, data, when, topic) if store else 0
        frames = P.Event(topic, type_, data, self.session, seq, when).encode()
        for s in (self.events, getattr(self, "tcp_events", None)):
            if s is not None:
                try:
                    s.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    pass

    # -- executors ---------------------------------------------------------------------------------------------

    def _on_executor(self, frames: list[zmq.Frame]) -> None:
        report = self.link.receive(frames)
        if report is not None:
            self.lifecycle.on_report(*report)

    def _executor_died(self, h: ExecutorHandle, death: ExecutorDeath) -> None:
        self.sweep_shared_memory()  # the dead executor's rings: nobody else will unlink them
        if self.backend.long_lived:  # what its jobs started (Ray's executors are not this machine's children)
            self.orphans.soon(f"executor for {h.slot.name} died")
        self.link.fail_slot(h.slot.name, death.reason)  # nobody will answer these now
        self.streams.forget_slot(h.slot.name)
        self.lifecycle.on_death(h, death)

    def _executor_state(self, h: ExecutorHandle) -> None:
        self.publish(P.DAEMON_TOPIC, P.EventType.EXECUTOR_STATE, h.describe(), store=False)

    def sweep_shared_memory(self) -> None:
        """Remove shared-memory segments whose daemon or creating executor died (the rule in workers/shm.py)."""
        removed = sweep_orphans()
        if removed:
            log.info("removed %d shared-memory segments left by dead processes: %s", len(removed),
                     ", ".join(removed))

    # -- shutdown ----------------------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        log.info("stopping: %s", self.stopping)
        if self.announce_at is not None:
            self._announce()
        self.publish(P.DAEMON_TOPIC, P.EventType.DAEMON_STOPPING, {"reason": self.stopping})
        if self.opendtect:
            self.opendtect.stop()
        self.viewers.stop_all()
        self.supervisor.stop_all(self.settings.executor.cancel_grace_s, lambda h: self.link.send(h, E.Exit()))
        self.backend.shutdown()
        # what the executors did not report before exiting is interrupted, to resume at the next start
        while True:
            try:
                frames = self.exec_sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._on_executor(frames)
        for job in self.store.list(states=["running"], limit=1_000_000):
            self.lifecycle.set_state(job, "interrupted", "the daemon stopped", cause=E.FailureCause.DAEMON_STOPPING)
        for curve in (self.curve, self.exec_curve):
            if curve:
                curve.stop()
        if hasattr(self, "exec_zctx"):
            self.exec_zctx.destroy(linger=0)
        self.background.shutdown(wait=False, cancel_futures=True)
        self.zctx.destroy(linger=0)
        self.store.close()
        # the executors' direct stream endpoints (daemon/executor/streaming.py) are left by one that was killed
        for path in [*(self.rundir / n for n in ("control.sock", "events.sock", "executors.sock")),
                     *self.rundir.glob("stream-*.sock")]:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        try:
            self.rundir.rmdir()  # only when empty: something else of ours may still live there
        except OSError:
            pass
        log.info("stopped")


def _heartbeats(s: zmq.Socket) -> None:
    """ZeroMQ heartbeats (PING every IVL; no answer within TIMEOUT closes the connection; TTL asks the peer to
    close its end after that long without traffic), and TCP keepalive below them."""
    s.setsockopt(zmq.HEARTBEAT_IVL, TCP_HEARTBEAT_IVL_MS)
    s.setsockopt(zmq.HEARTBEAT_TIMEOUT, TCP_HEARTBEAT_TIMEOUT_MS)
    s.setsockopt(zmq.HEARTBEAT_TTL, TCP_HEARTBEAT_TTL_MS)
    s.setsockopt(zmq.TCP_KEEPALIVE, 1)


@contextlib.contextmanager
def store_failures_logged() -> Iterator[None]:
    try:
        yield
    except StoreError as exc:
        log.error("the job store could not be written (is the disk full?): %s", exc)


def install_signal_handlers(d: Daemon) -> None:
    signal.signal(signal.SIGTERM, lambda *_: d.request_stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: d.request_stop("SIGINT"))
