"""An executor's stream thread: streaming sessions (a host application applies a model to blocks it holds in memory).

It runs beside the job in the executor's main thread, so a loaded model answers blocks while a job runs; requests
are served one at a time, in order. It has two sockets of its own (ZeroMQ sockets are not thread-safe; neither is
the I/O thread's):

  - its link to the daemon, a DEALER with identity `slot~stream` (execproto.stream_identity): StreamOpen,
    StreamApply and StreamClose arrive there from the daemon and their Replies leave from it, with no hand-over to
    the I/O thread. It sends StreamHello first; the I/O thread says Hello only after the daemon's StreamWelcome, so
    the daemon never sends a stream request to a socket it cannot reach yet.
  - the direct endpoint, a ROUTER bound at `stream-<slot>.sock` beside the daemon's executors.sock (the daemon's
    private runtime folder, so the same access rule as its control socket): stream.apply requests of the public
    protocol straight from a client of this machine, answered with the public reply (docs/PROTOCOL.md, "Direct
    stream endpoint"). A block then goes client -> executor -> client: two hops and the daemon's Python less than
    through the daemon. Only local ipc executors offer one (never over tcp, never Ray's per-job executors).

Sessions are opened and closed only through the daemon, which keeps the book of them; the direct endpoint only
applies. Both paths call the same `apply`, so a block gets the same outputs either way.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable

import zmq

from client.protocol import ErrorCode, ProtocolError, array_descriptor, check_args, decode_array, decode_request, \
    frame_of, OPERATIONS
from daemon.common import execproto as E
from daemon.common.router import ReplyTo, split_request
from daemon.common.settings import Settings

log = logging.getLogger("seisd.executor")


class StreamRequestError(Exception):
    """A stream request that cannot be served; `code` is the protocol error code the client gets."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def direct_address(endpoint: str, slot: str) -> str | None:
    """The direct endpoint of `slot`'s executor: beside the daemon's ipc executor socket; None over tcp."""
    if not endpoint.startswith("ipc://"):
        return None
    folder = Path(endpoint[len("ipc://"):]).parent
    return f"ipc://{folder / ('stream-' + re.sub(r'[^A-Za-z0-9_.-]', '_', slot) + '.sock')}"


class StreamServer:
    def __init__(self, slot: str, home: Path, settings: Settings, endpoint: str,
                 connect: Callable[[str], zmq.Socket]):
        self.slot = slot
        self.home = home
        self.settings = settings
        self.endpoint = endpoint
        self.connect = connect      # a DEALER to the daemon's executor socket with the given identity
        self.sessions: dict[str, Any] = {}
        self.daemon_session = ""
        self.ready = threading.Event()   # the daemon welcomed the stream socket
        self.thread = threading.Thread(target=self.run, name="executor-stream", daemon=True)

    def run(self) -> None:
        try:
            self._serve()
        except Exception:  # noqa: BLE001 - without its stream thread the executor never says hello: end it loudly
            log.exception("the stream thread failed; the executor exits")
            os._exit(4)

    def _serve(self) -> None:
        link = self.connect(E.stream_identity(self.slot))
        direct, address = self._bind_direct(link.context)
        link.send(E.encode(E.StreamHello(slot=self.slot, pid=os.getpid(), direct=address)))
        poller = zmq.Poller()
        poller.register(link, zmq.POLLIN)
        if direct is not None:
            poller.register(direct, zmq.POLLIN)
        while True:
            for sock, _ in poller.poll():
                frames = sock.recv_multipart(copy=False)
                if sock is link:
                    self._from_daemon(link, frames)
                else:
                    self._from_client(direct, frames)

    def _bind_direct(self, zctx: zmq.Context) -> tuple[zmq.Socket | None, str | None]:
        address = direct_address(self.endpoint, self.slot)
        if address is None:
            return None, None
        sock = zctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.limits.max_message_bytes)
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:  # streaming still works through the daemon
            log.warning("no direct stream endpoint at %s: %s", address, exc)
            sock.close(0)
            return None, None
        return sock, address

    # -- through the daemon ------------------------------------------------------------------------------------

    def _from_daemon(self, link: zmq.Socket, frames: list[zmq.Frame]) -> None:
        try:
            msg = E.decode(frames[0].buffer, E.TO_STREAM)
        except E.ExecProtocolError as exc:
            log.error("stream message from the daemon dropped: %s", exc)
            return
        if isinstance(msg, E.StreamWelcome):
            self.daemon_session = msg.session
            self.ready.set()
            return
        arrays: list[Any] = []
        try:
            result, descs, arrays = self._request(msg, [f.buffer for f in frames[1:]])
            reply = E.Reply(token=msg.token, ok=True, result=result, arrays=descs)
        except StreamRequestError as exc:
            reply = E.Reply.failure(msg.token, exc.code, str(exc))
        except Exception as exc:  # a failing block must not end the session or the executor
            log.exception("stream request failed")
            reply = E.Reply.failure(msg.token, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        link.send_multipart([E.encode(reply), *arrays], copy=False)

    def _request(self, msg: Any, frames: list[Any]) -> tuple[dict[str, Any], list[Any], list[Any]]:
        """A stream request's result, the descriptors of its array frames, and the frames."""
        from daemon.executor.predict.stream import StreamInputError, StreamSession

        if isinstance(msg, E.StreamOpen):
            try:
                session = StreamSession.open(self.home, msg.open_args(), device=msg.torch_device)
            except StreamInputError as exc:
                raise StreamRequestError(ErrorCode.BAD_ARGS, str(exc)) from None
            self.sessions[msg.session] = session
            return session.describe(), [], []
        if isinstance(msg, E.StreamClose):
            self._session(msg.session)
            self.sessions.pop(msg.session).close()
            return {"closed": msg.session}, [], []
        try:
            blocks = [decode_array(d, f, i) for i, (d, f) in enumerate(zip(msg.arrays, frames))]
        except ProtocolError as exc:
            raise StreamRequestError(exc.code, exc.message) from None
        names, outputs = self.apply(msg.session, blocks)
        return {"outputs": names}, [array_descriptor(a) for a in outputs], [frame_of(a) for a in outputs]

    # -- straight from a client --------------------------------------------------------------------------------

    def _from_client(self, sock: zmq.Socket, frames: list[zmq.Frame]) -> None:
        lim = self.settings.limits
        envelope, body, rid = split_request(frames, lim.max_header_bytes)
        to = ReplyTo(sock, envelope, rid, self.daemon_session)
        try:
            req = decode_request(body, lim.max_header_bytes, lim.max_message_bytes, lim.max_frames)
            to = ReplyTo(sock, envelope, req.id, self.daemon_session)
            if req.op != "stream.apply":
                raise ProtocolError(ErrorCode.UNKNOWN_OP, f"a direct stream endpoint serves stream.apply only, not "
                                    f"{req.op!r}: send other requests to the daemon", {"operations": ["stream.apply"]})
            check_args(OPERATIONS[req.op], req.args)
            names, outputs = self.apply(req.args["session"], req.arrays)
            to.ok({"outputs": names}, outputs)
        except StreamRequestError as exc:
            to.fail(ProtocolError(exc.code, str(exc)))
        except ProtocolError as exc:
            to.fail(exc)
        except Exception as exc:  # a failing block must not end the session or the executor
            log.exception("direct stream request failed")
            to.fail(ProtocolError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))

    # -- both --------------------------------------------------------------------------------------------------

    def apply(self, sid: str, blocks: list[Any]) -> tuple[list[str], list[Any]]:
        """The output names and arrays of session `sid` for one block."""
        from daemon.executor.predict.stream import StreamInputError

        session = self._session(sid)
        try:
            outputs = session.apply(blocks, {})
        except StreamInputError as exc:
            raise StreamRequestError(ErrorCode.BAD_ARGS, str(exc)) from None
        return list(outputs), list(outputs.values())

    def _session(self, sid: str) -> Any:
        session = self.sessions.get(sid)
        if session is None:
            raise StreamRequestError(ErrorCode.NOT_FOUND, f"no stream session {sid} on the executor for {self.slot} "
                                     "(closed, or opened before it restarted); open a new one")
        return session
