"""Property-based fuzzing of the daemon's control socket (hypothesis), shared by the tests and
tools/bench_reliability.py.

A fuzz case is a short batch of requests sent back to back on one raw DEALER socket, drawn from: well-formed headers
for every operation (but `shutdown`) with random, mistyped, missing or extra arguments; random operation names;
headers whose fields have random JSON types; random bytes; truncated JSON; array frames whose descriptors lie about
dtype, shape (negative, huge) or byte order; too many frames; headers just over the size limit. Every request must
get exactly one well-formed reply, none of them `internal`, and the daemon must stay up.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from client import protocol as P

FUZZ_OPS = sorted(op for op in P.OPERATIONS if op != "shutdown")  # shutdown would end the run, by design
VIEWER_NAMES = ("tensorboard", "examples")                       # starting real viewers is not this test's job
REPLY_TIMEOUT_MS = 10_000

_ints = st.one_of(st.integers(-3, 3), st.integers(-(2 ** 70), 2 ** 70),
                  st.sampled_from([2 ** 63 - 1, 2 ** 63, -(2 ** 63), -(2 ** 63) - 1, 10 ** 30]))
_scalars = st.one_of(st.none(), st.booleans(), _ints, st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=24), st.sampled_from(["..", "../../etc", "/etc/passwd", "a/b", "", " ",
                                                           "tensorboard", "default", "x" * 300]))
json_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                           max_size=4),
                           max_leaves=12)

_TYPED = {"int": _ints, "number": st.one_of(_ints, st.floats()), "string": st.text(max_size=40),
          "bool": st.booleans(), "object": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
          "array": st.lists(json_values, max_size=4), "any": json_values}


def _dumps(obj: Any) -> bytes:
    """JSON as a careless client would write it: NaN and Infinity allowed (Python's json reads them)."""
    return json.dumps(obj, allow_nan=True).encode()


@st.composite
def op_args(draw: st.DrawFn, op: str) -> dict[str, Any]:
    """Arguments for `op`: each schema argument present with its type, with a random type, or absent; sometimes
    an unknown extra one."""
    args: dict[str, Any] = {}
    for name, typ in P.OPERATIONS[op].args.items():
        choice = draw(st.integers(0, 3))
        if choice == 3:
            continue
        args[name] = draw(_TYPED[typ.rstrip("?")] if choice < 2 else json_values)
    if draw(st.integers(0, 7)) == 0:
        args[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    if op in ("viewer.start", "viewer.restart") and args.get("name") in VIEWER_NAMES:
        args["name"] = "no-such-viewer"
    return args


def _header(op: Any, args: Any, rid: str, arrays: Any = ()) -> dict[str, Any]:
    return {"v": P.PROTOCOL_VERSION, "id": rid, "op": op, "args": args, "arrays": list(arrays)}


@st.composite
def known_op(draw: st.DrawFn) -> list[bytes]:
    op = draw(st.sampled_from(FUZZ_OPS))
    return [_dumps(_header(op, draw(op_args(op)), "k"))]


@st.composite
def unknown_op(draw: st.DrawFn) -> list[bytes]:
    op = draw(st.text(max_size=30).filter(lambda s: s not in P.OPERATIONS))
    return [_dumps(_header(op, draw(json_values), "u"))]


@st.composite
def mistyped_header(draw: st.DrawFn) -> list[bytes]:
    """A header object whose envelope fields have random types or are missing."""
    h: dict[str, Any] = {}
    for key, good in (("v", 1), ("id", "m"), ("op", "ping"), ("args", {}), ("arrays", [])):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            h[key] = good
        elif choice == 1:
            h[key] = draw(json_values)
    return [_dumps(h if draw(st.booleans()) else draw(json_values))]


@st.composite
def raw_bytes(draw: st.DrawFn) -> list[bytes]:
    return draw(st.lists(st.binary(max_size=200), min_size=1, max_size=4))


@st.composite
def truncated_json(draw: st.DrawFn) -> list[bytes]:
    op = draw(st.sampled_from(FUZZ_OPS))
    full = _dumps(_header(op, draw(op_args(op)), "t"))
    return [full[: draw(st.integers(0, max(0, len(full) - 1)))]]


_dtypes = st.one_of(st.sampled_from(P.WIRE_DTYPES), st.sampled_from(["float16", "complex64", "object", "<f4", ""]),
                    json_values)
_shapes = st.one_of(st.lists(st.integers(0, 6), max_size=4), st.lists(_ints, max_size=9), json_values)


@st.composite
def lying_arrays(draw: st.DrawFn) -> list[bytes]:
    """Array frames whose descriptors disagree with the bytes (or are nonsense), sometimes one frame too many or
    too few."""
    descs, frames = [], []
    for _ in range(draw(st.integers(0, 3))):
        desc = {"dtype": draw(_dtypes), "shape": draw(_shapes), "byteorder": draw(st.sampled_from(
            ["little", "big", "middle", None]))}
        descs.append(desc)
        honest = (desc["dtype"] in P.WIRE_DTYPES and isinstance(desc["shape"], list)
                  and all(isinstance(n, int) and 0 <= n < 64 for n in desc["shape"]) and len(desc["shape"]) <= 8)
        size = math.prod(desc["shape"]) * np.dtype(desc["dtype"]).itemsize if honest else 0
        size = draw(st.sampled_from([size, size + 1, max(0, size - 1), 0])) if honest else draw(st.integers(0, 64))
        frames.append(b"\x7f" * size)
    frames = frames[: len(frames) + draw(st.integers(-1, 1))] if draw(st.booleans()) else frames
    op = draw(st.sampled_from(["ping", "stream.apply", "status"]))
    return [_dumps(_header(op, {"session": "none"} if op == "stream.apply" else {}, "a", descs))] + frames


@st.composite
def oversized(draw: st.DrawFn) -> list[bytes]:
    """Rare: a header just over 1 MiB, or more frames than allowed."""
    if draw(st.booleans()):
        pad = "x" * (P.MAX_HEADER_BYTES + draw(st.integers(1, 64)))
        return [_dumps(_header("ping", {"pad": pad}, "big"))]
    return [_dumps(_header("ping", {}, "many"))] + [b""] * (P.MAX_FRAMES + draw(st.integers(0, 8)))


@st.composite
def message(draw: st.DrawFn) -> list[bytes]:
    kind = draw(st.integers(0, 99))
    if kind == 0:
        return draw(oversized())
    strategy = [known_op, known_op, known_op, unknown_op, mistyped_header, raw_bytes, truncated_json,
                lying_arrays][kind % 8]
    return draw(strategy())


@dataclass
class FuzzStats:
    """What a fuzz run did: messages sent, the error codes of the replies, and every anomaly found."""

    messages: int = 0
    replies: int = 0
    codes: Counter = field(default_factory=Counter)
    internal: list[str] = field(default_factory=list)     # `internal` replies: bugs in a handler
    malformed: list[str] = field(default_factory=list)    # replies that break the protocol, or none at all
    crashed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "replies": self.replies, "codes": dict(self.codes),
                "internal": len(self.internal), "malformed": len(self.malformed), "crashed": self.crashed}


def check_reply(frames: list[bytes], stats: FuzzStats) -> None:
    """Count one reply and record how it breaks the protocol, if it does."""
    if frames and frames[0] == b"":   # a request that began with an empty frame was read as a REQ envelope
        frames = frames[1:]
    stats.replies += 1
    try:
        h = json.loads(frames[0])
    except (IndexError, ValueError) as exc:
        stats.malformed.append(f"unreadable reply {frames[:1]!r}: {exc}")
        return
    if h.get("v") != P.PROTOCOL_VERSION or not isinstance(h.get("ok"), bool) or not h.get("session"):
        stats.malformed.append(f"reply without v/ok/session: {h}")
        return
    if h["ok"]:
        stats.codes["ok"] += 1
        return
    err = h.get("error") or {}
    code = err.get("code")
    stats.codes[code] += 1
    if code not in P.ErrorCode.ALL or not isinstance(err.get("message"), str) or not err["message"]:
        stats.malformed.append(f"error without a known code and a message: {err}")
    elif code == P.ErrorCode.INTERNAL:
        stats.internal.append(err["message"])


def exchange(sock: zmq.Socket, batch: list[list[bytes]], stats: FuzzStats) -> None:
    """Send a batch of requests back to back, then read one reply per request."""
    for frames in batch:
        sock.send_multipart(frames)
        stats.messages += 1
    for frames in batch:
        if not sock.poll(REPLY_TIMEOUT_MS):
            stats.malformed.append(f"no reply within {REPLY_TIMEOUT_MS} ms to {[f[:80] for f in frames[:2]]}")
            return
        check_reply(sock.recv_multipart(), stats)


def run_socket_fuzz(endpoint: str, examples: int, stats: FuzzStats, alive: Any, derandomize: bool = True) -> None:
    """Run `examples` fuzz cases (1-8 requests each) against the control socket at endpoint. `alive()` raises when
    the daemon died; it is called every 200 cases and at the end. Raises AssertionError at the first case with no
    reply, a malformed reply, or an `internal` error, naming the case."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    count = [0]

    @settings(max_examples=examples, database=None, derandomize=derandomize, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(message(), min_size=1, max_size=8))
    def case(batch: list[list[bytes]]) -> None:
        before = (len(stats.malformed), len(stats.internal))
        exchange(sock, batch, stats)
        count[0] += 1
        if count[0] % 200 == 0:
            alive()
        assert (len(stats.malformed), len(stats.internal)) == before, \
            f"malformed: {stats.malformed[before[0]:]}; internal: {stats.internal[before[1]:]}"

    try:
        case()
        alive()
    except Exception:
        try:
            alive()
        except AssertionError:
            stats.crashed = True
        raise
    finally:
        sock.close(0)


def home_endpoint(home: Path) -> str:
    return P.control_endpoint(home)
