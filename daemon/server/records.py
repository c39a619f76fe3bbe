"""Small records the daemon's loop, its job lifecycle, its executor link and its request handlers share (ReplyTo,
where a client request's reply goes, lives in daemon/common/router.py: executors answer direct requests too)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from daemon.common.router import ReplyTo


class DaemonError(RuntimeError):
    """The daemon cannot start (another daemon owns the home, a socket cannot be bound ...)."""


CONTROL_TIMEOUT_S = 10.0   # how long a client waits for a running job to answer a control request


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
