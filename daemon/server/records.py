"""Small records the daemon's loop, its job lifecycle, its executor link and its request handlers share."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import zmq

from client import protocol as P

log = logging.getLogger("seisd")


class DaemonError(RuntimeError):
    """The daemon cannot start (another daemon owns the home, a socket cannot be bound ...)."""


CONTROL_TIMEOUT_S = 10.0   # how long a client waits for a running job to answer a control request


@dataclass(frozen=True)
class ReplyTo:
    """Where the reply to one client request goes: the socket and ROUTER envelope it came by, the request's id and
    the daemon's session. A handler that answers later (an executor answers) keeps this and replies through it.
    `remote`: the request came over tcp (what such a client may submit: daemon/kinds/job_files.py)."""

    socket: zmq.Socket
    envelope: list[bytes]
    request_id: str | None
    session: str
    remote: bool = False

    def send(self, reply: P.Reply) -> None:
        """Send without blocking: a client that does not read its replies loses this one, the daemon goes on."""
        try:
            self.socket.send_multipart(self.envelope + reply.encode(), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("a client does not read its replies; one was dropped")
        except zmq.ZMQError as exc:
            log.warning("reply not sent: %s", exc)

    def ok(self, result: dict[str, Any] | None, arrays: list[Any] | None = None) -> None:
        self.send(P.Reply(re=self.request_id, ok=True, session=self.session, result=result, arrays=arrays or []))

    def fail(self, error: P.ProtocolError) -> None:
        self.send(P.Reply.failure(self.request_id, self.session, error))


@dataclass
class Pending:
    """A request whose answer comes later from an executor (job controls such as `workers`, stream requests)."""

    to: ReplyTo
    deadline: float
    on_reply: Callable[[bool, Any], None] | None = None   # called with (ok, result) before the reply goes out
    #                                                        (e.g. forget a stream session that failed to open)
    slot: str | None = None   # the executor that is to answer: its death answers the request at once

    def answer(self, ok: bool, result: Any = None) -> None:
        """Tell `on_reply` (if any) how the request ended; the caller then sends the reply."""
        if self.on_reply is not None:
            self.on_reply(ok, result)


@dataclass
class StreamSession:
    """A streaming-apply session: a model kept loaded in one executor for a client's blocks."""

    id: str
    slot: str
    executor_pid: int | None
    model: str
    opened: float
