"""The daemon's end of the executor socket: typed messages out, typed messages in, and the client requests that
wait for an executor's answer.

Every frame goes through daemon/common/execproto.py: `send` encodes, `receive` decodes (a frame it refuses, such as
one of another protocol version, is logged and dropped, and its sender counts as silent). `receive` handles what
concerns executors themselves (Hello, Heartbeat) and the answers clients wait for (Reply), and returns the job's
reports (JobProgress, JobLog, JobMetrics, Done) for the job lifecycle (daemon/server/lifecycle.py).

NOTE on requests waiting for an executor (`ask`): each has a token, a deadline and the executor (slot) that is to
answer. It ends in exactly one of three ways, each sending the client one reply: the executor's Reply is relayed
(`receive`); the deadline passes (`expire`: unavailable, "the executor did not answer in time"); the executor dies
(`fail_slot`: not_found, naming the death).
"""
from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

import zmq

from client import protocol as P
from daemon.common import execproto as E
from daemon.server.records import Pending
from daemon.server.supervisor import ExecutorHandle, Supervisor

log = logging.getLogger("seisd")


class ExecutorLink:
    def __init__(self, sock: zmq.Socket, supervisor: Supervisor, on_state: Callable[[ExecutorHandle], None],
                 session: str):
        self.sock = sock
        self.session = session   # the daemon's: an executor's direct stream replies carry it
        self.supervisor = supervisor
        self.on_state = on_state
        self.pending: dict[str, Pending] = {}

    def send(self, h: ExecutorHandle, msg: E.Message, arrays: list[Any] | None = None,
             identity: str | None = None) -> None:
        """Send without blocking (to the executor's main socket, or `identity`); a message to an executor that is
        gone is lost (its death is handled apart)."""
        try:
            self.sock.send_multipart([(identity or h.identity).encode(), E.encode(msg), *(arrays or [])],
                                     zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            log.warning("message to executor %s lost: %s", h.slot.name, exc)

    def ask(self, h: ExecutorHandle, request: Callable[[str], E.Message], pending: Pending,
            arrays: list[Any] | None = None) -> None:
        """Send `request(token)` to an executor (a stream request to its stream socket); its Reply (and array
        frames) goes to the client waiting in `pending`. An executor that runs one job and exits (Ray) keeps
        nothing to ask: unavailable."""
        if h.per_job:
            pending.answer(False)
            raise P.ProtocolError(P.ErrorCode.UNAVAILABLE, f"{h.slot.name} runs one job at a time on "
                                  f"{self.supervisor.backend.name} and keeps no executor to ask; streaming sessions "
                                  "need backend: local")
        token = uuid.uuid4().hex
        pending.slot = h.slot.name
        self.pending[token] = pending
        msg = request(token)
        self.send(h, msg, arrays, E.stream_identity(h.slot.name) if isinstance(msg, E.TO_STREAM) else None)

    # -- what arrives ------------------------------------------------------------------------------------------

    def receive(self, frames: list[zmq.Frame]) -> tuple[ExecutorHandle, E.Message] | None:
        """Handle one message from an executor; a report about its job is returned for the job lifecycle."""
        if len(frames) < 2:
            return None
        identity = frames[0].bytes.decode(errors="replace")
        try:
            msg = E.decode(frames[1].buffer, E.TO_DAEMON)
        except E.ExecProtocolError as exc:
            log.error("message from executor %s dropped: %s", identity, exc)
            return None
        slot, stream, _ = identity.partition(E.STREAM_SUFFIX)
        h = self.supervisor.seen(slot, E.sender_pid(msg))
        if h is None:
            return None  # from an executor that is dead or was replaced
        if stream:  # the executor's stream socket: its hello, and replies to stream requests
            if isinstance(msg, E.StreamHello):
                h.stream_direct = msg.direct
                self.send(h, E.StreamWelcome(session=self.session), identity=identity)
            elif isinstance(msg, E.Reply):
                self._relay(msg, frames[2:])
            return None
        if isinstance(msg, E.Hello):
            h.threads = msg.threads
            run = self.supervisor.hello(h)
            self.on_state(h)
            if run is not None:  # a per-job executor gets its job now
                self.send(h, run)
        elif isinstance(msg, E.Reply):
            self._relay(msg, frames[2:])
        elif isinstance(msg, (E.JobProgress, E.JobLog, E.JobMetrics, E.Done)):
            return h, msg
        return None  # a Heartbeat: `seen` noted it

    def _relay(self, msg: E.Reply, frames: list[zmq.Frame]) -> None:
        """An executor answered a request a client is waiting for: pass the answer (and its arrays) on."""
        p = self.pending.pop(msg.token, None)
        if p is None:
            return  # the client's wait already timed out
        p.answer(msg.ok, msg.result)
        if not msg.ok:
            code = msg.code if msg.code in P.ErrorCode.ALL else P.ErrorCode.CONFLICT
            p.to.fail(P.ProtocolError(code, str(msg.error)))
            return
        try:  # views of the frames, not copies: they go out as they came in
            arrays = [P.decode_array(d, f.buffer, i) for i, (d, f) in enumerate(zip(msg.arrays, frames))]
        except P.ProtocolError as exc:
            p.to.fail(P.ProtocolError(P.ErrorCode.INTERNAL, f"the executor's reply is malformed: {exc.message}"))
            return
        p.to.ok(msg.result or {}, arrays)

    # -- requests nobody will answer ---------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Requests past their deadline get `unavailable`."""
        for token, p in list(self.pending.items()):
            if now >= p.deadline:
                del self.pending[token]
                p.answer(False)
                p.to.fail(P.ProtocolError(P.ErrorCode.UNAVAILABLE, "the executor did not answer in time"))

    def fail_slot(self, slot: str, reason: str) -> None:
        """The executor of `slot` died: what it was to answer gets `not_found` now."""
        for token, p in list(self.pending.items()):
            if p.slot == slot:
                del self.pending[token]
                p.answer(False)
                p.to.fail(P.ProtocolError(P.ErrorCode.NOT_FOUND, f"the executor for {slot} died ({reason}) before "
                                          "it answered; a stream session on it is lost"))
