"""A streaming session as the Python client sees it (docs/PROTOCOL.md: stream.open, stream.apply, stream.close).

    from client import Client, Stream
    with Client() as c, Stream.open(c, "facies", outputs=["labels", "confidence"]) as s:
        out = s.apply(block)          # {"labels": uint8 array, "confidence": float32 array}

When stream.open offered the executor's direct endpoint (`direct` in its result: a client on the daemon's own
machine), blocks go straight to the executor that holds the model and back; otherwise through the daemon. The
outputs are the same either way. A connection monitor on the direct socket notices when the executor goes away (it
died or was restarted): the request then fails with not_found, as it would through the daemon, instead of waiting
for its timeout.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import zmq

from client import protocol as P
from client.api import STREAM_TIMEOUT_S, Client, DaemonUnavailable, PeerGone, SeisdError, exchange, outcome


class Stream:
    def __init__(self, client: Client, opened: dict[str, Any], timeout: float, direct: bool = True):
        self.client = client
        self.opened = opened                     # the stream.open result (model, classes, input, outputs ...)
        self.id: str = opened["session"]
        self.timeout = timeout
        self.endpoint: str | None = opened.get("direct") if direct else None
        self._sock: zmq.Socket | None = None
        self._watch: zmq.Socket | None = None

    @classmethod
    def open(cls, client: Client, model: str, outputs: list[str] | None = None, device: str | None = None,
             options: dict[str, Any] | None = None, batch_size: int | None = None, key: str | None = None,
             direct: bool = True, timeout: float = STREAM_TIMEOUT_S) -> "Stream":
        """Open a session (stream.open: the model is loaded in an executor). `direct=False` sends every block
        through the daemon even where a direct endpoint is offered."""
        opened = client.call("stream.open", timeout=timeout, model=model, outputs=outputs, device=device,
                             options=options, batch_size=batch_size, key=key)
        return cls(client, opened, timeout, direct)

    def apply(self, block: np.ndarray) -> dict[str, np.ndarray]:
        """The session's outputs for one block, by name."""
        if self.endpoint is None:
            result, arrays = self.client.call_arrays("stream.apply", [block], timeout=self.timeout, session=self.id)
            return dict(zip(result.get("outputs", []), arrays))
        req = P.Request(op="stream.apply", args={"session": self.id}, arrays=[block])
        sock, watch = self._direct()
        try:
            reply = exchange(sock, req, self.timeout, watch)
        except PeerGone:
            self._drop()
            raise SeisdError(P.ErrorCode.NOT_FOUND, f"stream session {self.id} is lost: the executor that held it "
                             f"went away ({self.endpoint}); open a new session") from None
        if reply is None:
            self._drop()
            raise DaemonUnavailable(P.ErrorCode.UNAVAILABLE, f"the executor of stream session {self.id} did not "
                                    f"answer within {self.timeout:g} s ({self.endpoint})")
        result, arrays = outcome(reply)
        return dict(zip(result.get("outputs", []), arrays))

    def _direct(self) -> tuple[zmq.Socket, zmq.Socket]:
        if self._sock is None or self._watch is None:
            sock = self.client._zctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # the endpoint was bound before the session could open, so a refused (re)connection means it is gone
            self._watch = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock, self._watch

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(0)
        if self._watch is not None:
            self._watch.close(0)
        self._sock = self._watch = None

    def close(self) -> None:
        """Close the session in the daemon (safe to repeat) and the direct socket."""
        self._drop()
        self.client.call("stream.close", session=self.id)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
