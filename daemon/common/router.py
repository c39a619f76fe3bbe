"""One client request on a ROUTER socket of the public protocol (docs/PROTOCOL.md): its envelope, and where its
reply goes.

Shared by the daemon's control sockets (daemon/server/daemon.py) and an executor's direct stream endpoint
(daemon/executor/streaming.py), so both read a request's envelope and send its reply by the same rules.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import zmq

from client import protocol as P

log = logging.getLogger("seisd")


def split_request(frames: list[zmq.Frame], max_header_bytes: int) -> tuple[list[bytes], list[Any], str | None]:
    """(envelope, body, request id) of a message a ROUTER received. ROUTER prepends the peer identity; a REQ peer
    adds an empty delimiter, which the reply echoes back. The id is read from a header that may be broken (None
    when there is no valid one), so an error reply can still name the request it answers."""
    raw = [f.buffer for f in frames]
    n_env = 2 if len(raw) >= 2 and len(raw[1]) == 0 else 1
    envelope, body = [bytes(b) for b in raw[:n_env]], raw[n_env:]
    rid = P.peek_request_id(body[0]) if body and len(body[0]) <= max_header_bytes else None
    return envelope, body, rid


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
        """Send without blocking: a client that does not read its replies loses this one, the sender goes on."""
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
