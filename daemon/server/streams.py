"""Streaming-apply sessions: a model kept loaded in one executor, applied to the blocks a client sends.

The daemon keeps only the book (which session lives on which executor, opened when); the model and its state live
in the executor's stream thread (daemon/executor/process.py). A session is bound to one executor process: when that
executor dies or is restarted the session is gone, and the client is told so (not_found) at its next request.

NOTE on retries (a client whose reply was lost sends the request again): stream.apply computes the same outputs
again and changes nothing; stream.close of a session this daemon closed answers {"closed": id} again (the last
CLOSED_KEPT ids are remembered); stream.open with a `key` returns the session that key opened while it is open,
and a retry that arrives while the first open still loads the model gets the same answer when it comes.
"""
from __future__ import annotations

import collections
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from client import protocol as P
from daemon.common import execproto as E
from daemon.server import scheduler
from daemon.server.execlink import ExecutorLink
from daemon.server.records import CONTROL_TIMEOUT_S, Pending, StreamSession
from daemon.common.router import ReplyTo
from daemon.server.supervisor import ExecutorHandle

STREAM_TIMEOUT_S = 300.0   # a large block on a CPU takes a while
CLOSED_KEPT = 4096         # closed session ids remembered, so a repeated stream.close is answered alike


class StreamSessions:
    def __init__(self, handles: Mapping[str, ExecutorHandle], link: ExecutorLink):
        self.handles = handles   # the supervisor's, by slot name: read only
        self.link = link
        self.sessions: dict[str, StreamSession] = {}
        self.closed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.keys: dict[str, str] = {}                         # stream.open key -> session id
        self.opened: dict[str, dict[str, Any]] = {}            # session id -> its stream.open result
        self.waiting: dict[str, list[ReplyTo]] = {}            # session id -> retries waiting for its open

    def open(self, model: str, model_path: Path, outputs: list[str], batch_size: int | None, device: str,
             options: dict[str, Any], to: ReplyTo, key: str | None = None) -> None:
        """Open a session on the executor that fits `device` best; the executor's answer is the reply. A `key`
        already used by an open session answers with that session (now, or when its open is answered)."""
        if key is not None and (known := self.keys.get(key)) in self.sessions:
            if known in self.opened:
                to.ok({**self.opened[known], **self._direct(to, known)})
            else:
                self.waiting.setdefault(known, []).append(to)
            return
        h = self._slot_for(device)
        sid = uuid.uuid4().hex[:16]
        self.sessions[sid] = StreamSession(sid, h.slot.name, h.pid, model, time.time())
        if key is not None:
            self.keys[key] = sid

        def answered(ok: bool, result: Any) -> None:
            waiting = self.waiting.pop(sid, [])
            if ok:
                self.opened[sid] = dict(result or {})
                if result is not None:
                    result.update(self._direct(to, sid))   # the reply the executor's answer becomes
                for other in waiting:
                    other.ok({**self.opened[sid], **self._direct(other, sid)})
                return
            self._forget(sid)
            for other in waiting:
                other.fail(P.ProtocolError(P.ErrorCode.UNAVAILABLE, "the stream.open this request repeats failed "
                                           "(its own reply says why); send stream.open again"))

        self.link.ask(h, lambda token: E.StreamOpen(token, sid, str(model_path), model, outputs, batch_size, options,
                                                    h.slot.torch_device),
                      Pending(to, time.monotonic() + STREAM_TIMEOUT_S, answered))

    def apply(self, sid: str, arrays: list[np.ndarray], to: ReplyTo) -> None:
        """Send the block (the request's one array) to the session's executor; the outputs come back as the
        reply's array frames."""
        h = self._live(sid)
        if len(arrays) != 1:
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"stream.apply takes exactly one array frame (the block); "
                                  f"got {len(arrays)}")
        block = arrays[0]
        self.link.ask(h, lambda token: E.StreamApply(token, sid, [P.array_descriptor(block)]),
                      Pending(to, time.monotonic() + STREAM_TIMEOUT_S), [P.frame_of(block)])

    def close(self, sid: str, to: ReplyTo) -> None:
        if sid in self.closed:
            to.ok({"closed": sid})  # a repeated close: the same answer
            return
        h = self._live(sid)
        self._forget(sid)
        self.closed[sid] = None
        while len(self.closed) > CLOSED_KEPT:
            self.closed.popitem(last=False)
        self.link.ask(h, lambda token: E.StreamClose(token, sid), Pending(to, time.monotonic() + CONTROL_TIMEOUT_S))

    def _direct(self, to: ReplyTo, sid: str) -> dict[str, Any]:
        """What session `sid`'s stream.open result adds for the client `to`: the executor's direct endpoint, when
        it has one and the client is on this machine (ipc); else nothing."""
        endpoint = self.handles[self.sessions[sid].slot].stream_direct
        return {"direct": endpoint} if endpoint and not to.remote else {}

    def list(self) -> list[dict[str, Any]]:
        return [{"session": st.id, "slot": st.slot, "model": st.model, "opened": st.opened}
                for st in self.sessions.values()]

    def forget_slot(self, slot: str) -> None:
        """The executor of `slot` died: its sessions are gone."""
        for sid in [sid for sid, st in self.sessions.items() if st.slot == slot]:
            self._forget(sid)

    def _forget(self, sid: str) -> None:
        self.sessions.pop(sid, None)
        self.opened.pop(sid, None)
        for key in [k for k, s in self.keys.items() if s == sid]:
            del self.keys[key]

    def _live(self, sid: str) -> ExecutorHandle:
        """The session's live executor, or not_found naming why the session is gone."""
        st = self.sessions.get(sid)
        if st is None:
            raise P.ProtocolError(P.ErrorCode.NOT_FOUND, f"no stream session {sid!r} (closed, or opened before "
                                  "the daemon restarted); open a new one")
        h = self.handles[st.slot]
        if h.pid != st.executor_pid or h.state in ("dead", "starting", "stopped"):
            self._forget(sid)
            raise P.ProtocolError(P.ErrorCode.NOT_FOUND, f"stream session {sid} was lost: the executor for "
                                  f"{st.slot} restarted; open a new session")
        return h

    def _slot_for(self, device: str) -> ExecutorHandle:
        live = [h for h in self.handles.values() if h.state in ("ready", "busy")
                and scheduler.slot_accepts(h.slot.name, device, "any")]
        if not live:
            raise P.ProtocolError(P.ErrorCode.UNAVAILABLE, f"no running executor for device {device!r} "
                                  f"(slots: {', '.join(self.handles)})")
        load = {h.slot.name: sum(st.slot == h.slot.name for st in self.sessions.values()) for h in live}
        return min(live, key=lambda h: (h.slot.kind == "cpu", load[h.slot.name]))  # a GPU first, then the least used
