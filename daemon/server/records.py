"""Small records the daemon's loop and its request handlers share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zmq

class DaemonError(RuntimeError):
    """The daemon cannot start (another daemon owns the home, a socket cannot be bound ...)."""


CONTROL_TIMEOUT_S = 10.0   # how long a client waits for a running job to answer a control request


@dataclass
class Pending:
    """A request whose answer comes later from an executor (job controls such as `workers`, stream requests)."""

    envelope: list[bytes]
    request_id: str
    socket: zmq.Socket
    deadline: float
    on_reply: Any = None      # called with (ok, result) before the reply goes out (e.g. forget a failed stream)
    slot: str | None = None   # the executor that is to answer: its death answers the request at once


@dataclass
class StreamSession:
    """A streaming-apply session: a model kept loaded in one executor for a client's blocks."""

    id: str
    slot: str
    executor_pid: int | None
    model: str
    opened: float
