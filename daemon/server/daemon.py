"""The daemon: sockets, the one event loop, and the job lifecycle.

Everything here runs on the main thread and never blocks on work: a request is parsed, answered from the store or
forwarded to an executor, and the loop moves on. Long work happens in executors (daemon/executor/process.py).

Sockets (all bound by this process):
  control  ROUTER  ipc://<runtime>/control.sock  (+ tcp with CURVE when configured)  requests and replies
  events   PUB     ipc://<runtime>/events.sock   (+ tcp with CURVE when configured)  events by topic
  exec     ROUTER  ipc://<runtime>/executors.sock                                   executors (internal)
                   (+ ray.executor_endpoint over tcp with CURVE, for executors on other Ray nodes)

Executors run where the backend puts them (daemon/server/backends/): one per local device slot, or one per job on Ray.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import yaml
import zmq

from client import protocol as P
from daemon import __version__
from daemon.server import api, scheduler
from daemon.server.backends import BackendError, make_backend
from daemon.common import home as layout
from daemon.common.keys import executor_keys
from daemon.server.backends.local import LaunchArgs
from daemon.server.backends.ray_backend import shared_home
from daemon.kinds import CheckContext, get_kind, load_plugins
from daemon.server.records import DaemonError  # noqa: F401  (main.py imports it from here)
from daemon.server.security import CurveServer
from daemon.server.records import CONTROL_TIMEOUT_S, Pending, StreamSession
from daemon.common.settings import Settings
from daemon.server.store import JobRow, JobStore, StoreError
from daemon.server.supervisor import ExecutorHandle, Supervisor
from daemon.server.viewers import ViewerManager
from workers.shm import sweep_orphans

log = logging.getLogger("seisd")

TICK_S = 0.05          # how often timers (supervision, dispatch, cancel deadlines) run at most
RECONCILE_S = 5.0      # how often the store's running jobs are checked against the executors
RETRY_REASON = "its executor was lost; requeued to resume from its last checkpoint"


class Daemon:
    def __init__(self, home: Path, settings: Settings, config_file: Path | None = None):
        self.home = home
        self.settings = settings
        self.config_file = config_file
        self.session = uuid.uuid4().hex
        self.started = time.time()
        self.stopping: str | None = None
        self.cancel_deadlines: dict[int, float] = {}
        self.pending: dict[str, Pending] = {}
        self.streams: dict[str, StreamSession] = {}
        self.background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="seisd-check")
        self.off_loop_waiting: list[tuple[Future, Callable[[Any], dict[str, Any]], Pending]] = []
        layout.make_folders(home)
        self._lock_home()
        self.rundir = P.runtime_dir(home)
        make_private_dir(self.rundir)
        load_plugins(settings.plugins)
        self.store = JobStore(layout.database(home))
        self.zctx = zmq.Context()
        self.control = self._bind(zmq.ROUTER, P.control_endpoint(home))
        self.events = self._bind(zmq.PUB, P.events_endpoint(home))
        self.endpoints = {"control": P.control_endpoint(home), "events": P.events_endpoint(home)}
        self.exec_curve: CurveServer | None = None
        self.exec_sock, exec_endpoint = self._bind_executor_socket()
        self.control_sockets = [self.control]
        self.curve: CurveServer | None = None
        if settings.tcp.endpoint:
            self._bind_tcp()
        exec_home = shared_home(settings, home) if settings.backend == "ray" else home
        try:
            self.backend = make_backend(settings, LaunchArgs(exec_endpoint, exec_home, config_file,
                                                             layout.logs_folder(exec_home)))
        except BackendError as exc:
            raise DaemonError(str(exc)) from None
        self.slots = self.backend.device_names()  # what job files may ask for (checked at submit)
        self.supervisor = Supervisor(
            self.backend.slots(), self.backend, settings.executor.heartbeat_timeout_s,
            settings.executor.restart_backoff_s, on_death=self._executor_died, on_state=self._executor_state)
        roots = tuple(Path(r).expanduser().resolve() for r in settings.paths.inputs)
        self.check_context = CheckContext(home=home, input_roots=roots + ((home.resolve(),) if roots else ()))
        self.viewers = ViewerManager(home, settings.viewers, self.publish)
        self.api = api.Api(self)

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
        self.curve.apply(s)
        try:
            s.bind(t.endpoint)
        except zmq.ZMQError as exc:
            raise DaemonError(f"cannot bind tcp.endpoint {t.endpoint}: {exc}") from None
        self.control_sockets.append(s)
        self.endpoints["tcp_control"] = s.getsockopt(zmq.LAST_ENDPOINT).decode()
        if t.events_endpoint:
            self.tcp_events = self.zctx.socket(zmq.PUB)
            self.tcp_events.setsockopt(zmq.LINGER, 0)
            self.curve.apply(self.tcp_events)
            self.tcp_events.bind(t.events_endpoint)
            self.endpoints["tcp_events"] = self.tcp_events.getsockopt(zmq.LAST_ENDPOINT).decode()

    def _home_path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.home / q

    def recover(self) -> None:
        """Jobs the last daemon left running (it was killed or stopped) go back to the queue, resumable ones to
        continue from their checkpoints."""
        for job in self.store.list(states=["running", "interrupted"], limit=1_000_000):
            if job.state == "running":
                self.store.set_state(job.id, "interrupted", "the daemon stopped while the job ran")
            self.store.set_state(job.id, "queued", "requeued when the daemon started")
            self.job_log(job.id, "requeued: the daemon restarted while this job was running")

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> None:
        self.recover()
        self.sweep_shared_memory()
        self.supervisor.start_all()
        self.viewers.adopt_or_clean()
        self.publish(P.DAEMON_TOPIC, P.EventType.DAEMON_STARTED,
                     {"version": __version__, "pid": os.getpid(), "session": self.session})
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
                    self.reconcile()
        self._shutdown()

    def reconcile(self) -> None:
        """Jobs the store says are running but no executor runs (their end could not be written, say on a full
        disk) are failed with that reason, so the queue never waits on a job that is gone."""
        running = {h.job_id for h in self.supervisor.handles.values() if h.job_id is not None}
        for job in self.store.list(states=["running"], limit=100_000):
            if job.id not in running:
                self.set_job_state(job, "failed", "lost", error="the job's end could not be recorded (the job "
                                   "store was not writable, e.g. a full disk); run it again")

    def _drain(self, sock: zmq.Socket, handle: Any, budget: int = 256) -> None:
        """Handle what is waiting, a bounded number at a time so one busy socket cannot starve the others."""
        for _ in range(budget):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            handle(frames)

    def _tick(self, now: float) -> None:
        self.supervisor.poll()
        if self.off_loop_waiting:
            self._finish_off_loop()
        for job_id, deadline in list(self.cancel_deadlines.items()):
            if now >= deadline:
                h = self._handle_of_job(job_id)
                if h is not None:
                    self.supervisor.kill(h.slot.name, f"job {job_id} did not stop within "
                                         f"{self.settings.executor.cancel_grace_s:g} s of its cancel")
                del self.cancel_deadlines[job_id]
        for token, p in list(self.pending.items()):
            if now >= p.deadline:
                del self.pending[token]
                if p.on_reply is not None:
                    p.on_reply(False, None)
                self._send_reply(p.socket, p.envelope, P.Reply.failure(p.request_id, self.session, P.ProtocolError(
                    P.ErrorCode.UNAVAILABLE, "the executor did not answer in time")))
        if self.curve:
            self.curve.reload_if_changed()
        self.viewers.poll()
        self.dispatch()

    # -- requests ----------------------------------------------------------------------------------------------

    def _on_request(self, sock: zmq.Socket, frames: list[zmq.Frame]) -> None:
        raw = [f.buffer for f in frames]
        # ROUTER prepends the peer identity; a REQ peer adds an empty delimiter, which we echo back.
        n_env = 2 if len(raw) >= 2 and len(raw[1]) == 0 else 1
        envelope, body = [bytes(b) for b in raw[:n_env]], raw[n_env:]
        rid = P.peek_request_id(body[0]) if body and len(body[0]) <= self.settings.limits.max_header_bytes else None
        try:
            lim = self.settings.limits
            req = P.decode_request(body, lim.max_header_bytes, lim.max_message_bytes, lim.max_frames)
            rid = req.id
            result = self.api.handle(req, envelope, sock)
            if result is api.DEFERRED:
                return
            reply = P.Reply(re=req.id, ok=True, session=self.session, result=result[0], arrays=result[1])
        except P.ProtocolError as exc:
            reply = P.Reply.failure(rid, self.session, exc)
        except Exception as exc:  # a bug in a handler must not take the daemon down
            log.exception("request failed")
            reply = P.Reply.failure(rid, self.session, P.ProtocolError(
                P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
        self._send_reply(sock, envelope, reply)

    def off_loop(self, work: Callable[[], Any], finish: Callable[[Any], dict[str, Any]], envelope: list[bytes],
                 req_id: str, sock: zmq.Socket) -> None:
        """Run slow, side-effect-free work (a submit-time check) in a thread; `finish(result)` then runs on the
        loop and its return value (or ProtocolError) is the reply."""
        self.off_loop_waiting.append((self.background.submit(work), finish, Pending(envelope, req_id, sock, 0.0)))

    def _finish_off_loop(self) -> None:
        waiting, self.off_loop_waiting = self.off_loop_waiting, []
        for future, finish, p in waiting:
            if not future.done():
                self.off_loop_waiting.append((future, finish, p))
                continue
            try:
                reply = P.Reply(re=p.request_id, ok=True, session=self.session, result=finish(future.result()))
            except P.ProtocolError as exc:
                reply = P.Reply.failure(p.request_id, self.session, exc)
            except Exception as exc:  # noqa: BLE001 - a failing check is reported, the daemon goes on
                log.exception("a background check failed")
                reply = P.Reply.failure(p.request_id, self.session, P.ProtocolError(
                    P.ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
            self._send_reply(p.socket, p.envelope, reply)

    def _send_reply(self, sock: zmq.Socket, envelope: list[bytes], reply: P.Reply) -> None:
        try:
            sock.send_multipart(envelope + reply.encode(), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("a client does not read its replies; one was dropped")
        except zmq.ZMQError as exc:
            log.warning("reply not sent: %s", exc)

    # -- events ------------------------------------------------------------------------------------------------

    def publish(self, topic: str, type_: str, data: dict[str, Any], job_id: int | None = None,
                store: bool = True) -> None:
        """Publish an event; a job's events are also recorded (unless store=False: log lines, which live in the
        job's log file), so `events` and `show` can give them later."""
        when = time.time()
        seq = self.store.add_event(job_id, type_, data, when) if store and job_id is not None else 0
        frames = P.Event(topic, type_, data, self.session, seq, when).encode()
        for s in (self.events, getattr(self, "tcp_events", None)):
            if s is not None:
                try:
                    s.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    pass

    def job_log(self, job_id: int, line: str) -> None:
        """A line from the daemon in the job's log (executors append to the same file)."""
        d = self.job_dir(job_id)
        if d.is_dir():
            with open(d / "log", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} DAEMON {line}\n")

    def job_dir(self, job_id: int) -> Path:
        return layout.job_folder(self.home, job_id)

    # -- the job lifecycle -------------------------------------------------------------------------------------

    def set_job_state(self, job: JobRow, state: str, reason: str | None, error: str | None = None,
                      slot: str | None = None, result: dict[str, Any] | None = None) -> None:
        self.store.set_state(job.id, state, reason, error=error, slot=slot, result=result)
        self.publish(P.job_topic(job.id), P.EventType.JOB_STATE,
                     {"id": job.id, "state": state, "previous": job.state, "reason": reason, "error": error},
                     job_id=job.id)

    def submit(self, raw: dict[str, Any], kind_name: str, spec: dict[str, Any], priority: int, device: str,
               name: str | None) -> int:
        job_id = self.store.add_job(kind_name, spec, priority, device, name)
        d = self.job_dir(job_id)
        d.mkdir(parents=True, exist_ok=True)
        (d / "job.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        self.job_log(job_id, f"submitted: {kind_name}, priority {priority}, device {device}")
        self.publish(P.job_topic(job_id), P.EventType.JOB_STATE,
                     {"id": job_id, "state": "queued", "previous": None, "reason": "submitted", "error": None},
                     job_id=job_id)
        return job_id

    def dispatch(self) -> None:
        if self.stopping or not any(h.idle for h in self.supervisor.handles.values()):
            return
        queued = self.store.queued_in_order()
        # in order (priority, then age); a job no free slot accepts does not hold back those behind it; a job
        # taking several GPU slots gets them all at once (daemon/server/scheduler.py)
        for job, handles in self.supervisor.placements(queued, self._kind_devices,
                                                       lambda job: self.slots_wanted(job.kind, job.spec, job.device)):
            self._start_job(job, handles[0], handles[1:])

    def _kind_devices(self, job: JobRow) -> str:
        kind = get_kind(job.kind)
        return kind.devices if kind else "any"

    def slots_wanted(self, kind: str, spec: dict[str, Any], device: str) -> int:
        """Slots a job takes here (scheduler.slots_wanted); always 1 on Ray, where a job's further ranks are Ray
        tasks, not slots. The one rule for submit (refusing what can never be placed) and dispatch."""
        if not self.backend.long_lived:
            return 1
        job_kind = get_kind(kind)
        wanted = job_kind.slots_needed(spec) if job_kind else 1  # the kind's hook (daemon/kinds/registry.py)
        return scheduler.slots_wanted(wanted, device, [s.name for s in self.slots])

    def _start_job(self, job: JobRow, h: ExecutorHandle, helpers: list[ExecutorHandle] | None = None) -> None:
        kind = get_kind(job.kind)
        resume = bool(kind and kind.resumable and job.attempts > 0)
        self.set_job_state(job, "running", f"started on {h.slot.name}" + (" (resuming)" if resume else ""),
                           slot=h.slot.name)
        h.job_id, h.state = job.id, "busy"
        self._executor_state(h)
        if helpers:
            self.supervisor.hold(h, helpers, job.id, self.job_dir(job.id))
        device = self.backend.torch_device(h.slot, job.device, kind.devices if kind else "any")
        exec_dir = layout.job_folder(self.backend.launch_args.home, job.id)  # the job folder as the executor sees it
        self.supervisor.begin_job(h, {"op": "run", "job": job.id, "kind": job.kind, "spec": job.spec,
                                      "job_dir": str(exec_dir), "attempt": job.attempts + 1,
                                      "resume": resume, "device": device}, self._to_executor)

    def cancel(self, job: JobRow, reason: str = "cancelled by the user") -> str:
        h = self._handle_of_job(job.id)
        if job.state in ("queued", "interrupted") or (job.state == "running" and h is None):
            # (running without an executor: its end could not be recorded; nothing runs it any more)
            self.set_job_state(job, "cancelled", reason)
            self.job_log(job.id, f"cancelled while {job.state}")
            return "cancelled"
        if job.state == "running" and h.state == "starting":
            # its executor has not said hello yet (Ray is placing it): nothing to ask, stop the launch
            self.supervisor.kill(h.slot.name, f"{reason}; its executor was stopped before it started, as part "
                                 "of its cancel")
            self.job_log(job.id, "cancel requested before the executor started")
            return "cancelling"
        if job.state == "running":
            self._to_executor(h, {"op": "cancel", "job": job.id, "reason": reason})
            self.cancel_deadlines.setdefault(job.id, time.monotonic() + self.settings.executor.cancel_grace_s)
            self.job_log(job.id, "cancel requested")
            return "cancelling"
        raise P.ProtocolError(P.ErrorCode.CONFLICT, f"job {job.id} is {job.state}; only queued or running jobs "
                              "can be cancelled")

    def send_control(self, job: JobRow, name: str, args: dict[str, Any], envelope: list[bytes], req_id: str,
                     sock: zmq.Socket) -> None:
        """Forward a control message to the job's executor; the reply is sent when the executor answers."""
        h = self._handle_of_job(job.id)
        if job.state != "running" or h is None:
            raise P.ProtocolError(P.ErrorCode.CONFLICT, f"job {job.id} is {job.state}, not running")
        self.ask_executor(h, {"op": "control", "job": job.id, "name": name, "args": args},
                          Pending(envelope, req_id, sock, time.monotonic() + CONTROL_TIMEOUT_S))

    def ask_executor(self, h: ExecutorHandle, msg: dict[str, Any], pending: Pending,
                     arrays: list[Any] | None = None) -> None:
        """Send a request to an executor; its reply (and array frames) goes to the waiting client."""
        if h.per_job:
            if pending.on_reply is not None:
                pending.on_reply(False, None)
            raise P.ProtocolError(P.ErrorCode.UNAVAILABLE, f"{h.slot.name} runs one job at a time on "
                                  f"{self.backend.name} and keeps no executor to ask; streaming sessions need "
                                  "backend: local")
        token = uuid.uuid4().hex
        pending.slot = h.slot.name
        self.pending[token] = pending
        self._to_executor(h, {**msg, "token": token}, arrays)

    def stream_handle(self, sid: str) -> tuple[StreamSession, ExecutorHandle]:
        """The session and its live executor, or not_found naming why it is gone."""
        st = self.streams.get(sid)
        if st is None:
            raise P.ProtocolError(P.ErrorCode.NOT_FOUND, f"no stream session {sid!r} (closed, or opened before "
                                  "the daemon restarted); open a new one")
        h = self.supervisor.handles[st.slot]
        if h.pid != st.executor_pid or h.state in ("dead", "starting", "stopped"):
            del self.streams[sid]
            raise P.ProtocolError(P.ErrorCode.NOT_FOUND, f"stream session {sid} was lost: the executor for "
                                  f"{st.slot} restarted; open a new session")
        return st, h

    def _handle_of_job(self, job_id: int) -> ExecutorHandle | None:
        return next((h for h in self.supervisor.handles.values() if h.job_id == job_id and h.held_by is None), None)

    def _to_executor(self, h: ExecutorHandle, msg: dict[str, Any], arrays: list[Any] | None = None) -> None:
        try:
            self.exec_sock.send_multipart([h.identity.encode(), P.dumps(msg), *(arrays or [])], zmq.NOBLOCK,
                                          copy=False)
        except zmq.ZMQError as exc:
            log.warning("message to executor %s lost: %s", h.slot.name, exc)

    # -- executor messages -------------------------------------------------------------------------------------

    def _on_executor(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return
        slot = frames[0].bytes.decode(errors="replace")
        try:
            msg = json.loads(frames[1].bytes)
        except ValueError:
            log.warning("unreadable message from executor %s", slot)
            return
        h = self.supervisor.seen(slot, msg.get("pid"))
        if h is None:
            return
        t = msg.get("type")
        if t == "hello":
            run = self.supervisor.hello(h)
            self._executor_state(h)
            if run is not None:  # a per-job executor gets its job now
                self._to_executor(h, run)
        elif t == "event":
            self._on_job_event(int(msg["job"]), msg.get("event", ""), msg.get("data") or {})
        elif t == "done":
            self._on_job_done(h, int(msg["job"]), msg)
        elif t == "reply":
            self._relay_reply(msg, frames[2:])

    def _relay_reply(self, msg: dict[str, Any], frames: list[zmq.Frame]) -> None:
        """An executor answered a request a client is waiting for: pass the answer (and its arrays) on."""
        p = self.pending.pop(msg.get("token") or "", None)
        if p is None:
            return  # the client's wait already timed out
        ok = bool(msg.get("ok"))
        if p.on_reply is not None:
            p.on_reply(ok, msg.get("result"))
        if ok:
            result = dict(msg.get("result") or {})
            descs = result.pop("arrays", [])
            header = {"v": P.PROTOCOL_VERSION, "re": p.request_id, "ok": True, "session": self.session,
                      "result": result, "arrays": descs}
            try:
                p.socket.send_multipart(p.envelope + [P.dumps(header)] + [f.buffer for f in frames], zmq.NOBLOCK,
                                        copy=False)
            except zmq.ZMQError as exc:
                log.warning("reply not sent: %s", exc)
            return
        code = msg.get("code") if msg.get("code") in P.ErrorCode.ALL else P.ErrorCode.CONFLICT
        self._send_reply(p.socket, p.envelope, P.Reply.failure(p.request_id, self.session,
                                                               P.ProtocolError(code, str(msg.get("error")))))

    def _on_job_event(self, job_id: int, type_: str, data: dict[str, Any]) -> None:
        if type_ not in (P.EventType.JOB_PROGRESS, P.EventType.JOB_LOG, P.EventType.JOB_METRICS):
            return
        if type_ == P.EventType.JOB_PROGRESS:
            self.store.set_progress(job_id, float(data.get("fraction") or 0.0), data.get("message"))
        self.publish(P.job_topic(job_id), type_, data, job_id=job_id, store=type_ != P.EventType.JOB_LOG)

    def _on_job_done(self, h: ExecutorHandle, job_id: int, msg: dict[str, Any]) -> None:
        job = self.store.get(job_id)
        self.cancel_deadlines.pop(job_id, None)
        # a per-job executor exits after its job: its slot is free once the supervisor sees it gone
        h.job_id, h.state = None, ("finishing" if h.per_job else "ready")
        self._executor_state(h)
        if job is None or job.state != "running":
            return
        outcome, error = msg.get("outcome"), msg.get("error")
        if outcome == "succeeded":
            self.store.set_progress(job_id, 1.0, None)
            self.set_job_state(job, "succeeded", "finished", result=msg.get("result") or {})
        elif outcome == "cancelled" and self.stopping:
            self.set_job_state(job, "interrupted", "the daemon is stopping")
        elif outcome == "cancelled":
            self.set_job_state(job, "cancelled", error or "cancelled")
        else:
            self.set_job_state(job, "failed", "the job raised an error", error=error or "unknown error")

    def _executor_died(self, h: ExecutorHandle, reason: str) -> None:
        self.sweep_shared_memory()  # the dead executor's rings: nobody else will unlink them
        for token, p in list(self.pending.items()):  # nobody will answer these now
            if p.slot == h.slot.name:
                del self.pending[token]
                if p.on_reply is not None:
                    p.on_reply(False, None)
                self._send_reply(p.socket, p.envelope, P.Reply.failure(p.request_id, self.session, P.ProtocolError(
                    P.ErrorCode.NOT_FOUND, f"the executor for {h.slot.name} died ({reason}) before it answered; "
                    "a stream session on it is lost")))
        for sid in [sid for sid, st in self.streams.items() if st.slot == h.slot.name]:
            del self.streams[sid]
        if h.job_id is None:
            return
        job = self.store.get(h.job_id)
        self.cancel_deadlines.pop(h.job_id, None)
        if job is None or job.state != "running":
            return
        if self.stopping:
            self.set_job_state(job, "interrupted", "the daemon is stopping")
            return
        cancelled = "of its cancel" in reason
        text = f"the executor for {h.slot.name} (pid {h.pid}) died while running the job: {reason}"
        self.job_log(job.id, text)
        if cancelled:
            self.set_job_state(job, "cancelled", reason)
        elif not self._retry_lost(h, job, reason):
            self.set_job_state(job, "failed", "executor died", error=text)

    def _retry_lost(self, h: ExecutorHandle, job: JobRow, reason: str) -> bool:
        """A resumable job whose per-job executor (a Ray worker or node) was lost goes back to the queue to resume
        from its checkpoint, at most ray.max_retries times; False when it is not to be retried."""
        kind = get_kind(job.kind)
        if not (h.per_job and kind and kind.resumable):
            return False
        done = sum((e["reason"] or "").startswith(RETRY_REASON) for e in self.store.history(job.id))
        limit = self.settings.ray.max_retries
        if done >= limit:
            self.job_log(job.id, f"not retried: it was retried {done} time(s) already (ray.max_retries {limit})")
            return False
        self.set_job_state(job, "interrupted", f"{RETRY_REASON} ({reason})")
        self.set_job_state(self.store.get(job.id), "queued", f"retry {done + 1} of {limit}")
        self.job_log(job.id, f"requeued (retry {done + 1} of {limit}): {reason}")
        return True

    def _executor_state(self, h: ExecutorHandle) -> None:
        self.publish(P.DAEMON_TOPIC, P.EventType.EXECUTOR_STATE, h.describe(), store=False)

    # -- shared memory and shutdown ----------------------------------------------------------------------------

    def sweep_shared_memory(self) -> None:
        """Remove shared-memory segments whose daemon or creating executor died (the rule in workers/shm.py)."""
        removed = sweep_orphans()
        if removed:
            log.info("removed %d shared-memory segments left by dead processes: %s", len(removed),
                     ", ".join(removed))

    def request_stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = reason

    def _shutdown(self) -> None:
        log.info("stopping: %s", self.stopping)
        self.publish(P.DAEMON_TOPIC, P.EventType.DAEMON_STOPPING, {"reason": self.stopping})
        self.viewers.stop_all()
        self.supervisor.stop_all(self.settings.executor.cancel_grace_s,
                                 lambda h: self._to_executor(h, {"op": "exit"}))
        self.backend.shutdown()
        # what the executors did not report before exiting is interrupted, to resume at the next start
        while True:
            try:
                frames = self.exec_sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._on_executor(frames)
        for job in self.store.list(states=["running"], limit=1_000_000):
            self.set_job_state(job, "interrupted", "the daemon stopped")
        for curve in (self.curve, self.exec_curve):
            if curve:
                curve.stop()
        if hasattr(self, "exec_zctx"):
            self.exec_zctx.destroy(linger=0)
        self.background.shutdown(wait=False, cancel_futures=True)
        self.zctx.destroy(linger=0)
        self.store.close()
        for name in ("control.sock", "events.sock", "executors.sock"):
            try:
                (self.rundir / name).unlink()
            except FileNotFoundError:
                pass
        try:
            self.rundir.rmdir()  # only when empty: something else of ours may still live there
        except OSError:
            pass
        log.info("stopped")


@contextlib.contextmanager
def store_failures_logged() -> Iterator[None]:
    try:
        yield
    except StoreError as exc:
        log.error("the job store could not be written (is the disk full?): %s", exc)


def make_private_dir(path: Path) -> None:
    """Create the runtime folder with mode 0700, or refuse one that others could enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise DaemonError(f"{path} belongs to uid {st.st_uid}, not to you: refusing to put sockets there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def install_signal_handlers(d: Daemon) -> None:
    signal.signal(signal.SIGTERM, lambda *_: d.request_stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: d.request_stop("SIGINT"))
