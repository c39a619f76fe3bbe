"""The seisd wire protocol, version 1: the one module that encodes and decodes every message.

A request is a ZeroMQ multipart message sent by a DEALER (or REQ) socket to the daemon's ROUTER:

    frame 0        header: UTF-8 JSON object (see `Request`)
    frame 1..n     binary array frames, one per entry of header["arrays"], in order

A reply is sent back on the same connection with the same layout (header, then arrays). An event is a two-frame
message on the daemon's PUB socket: [topic (UTF-8), JSON object]. docs/PROTOCOL.md is the human specification of
everything here; keep the two in step.

This module imports nothing of seisd's (but client/endpoints.py, where a home's sockets are, re-exported here), so
the client, the daemon and any tool share one definition.
"""
from __future__ import annotations

import json
import math
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.endpoints import (control_endpoint, default_home, events_endpoint, runtime_base,  # noqa: F401
                              runtime_dir)

PROTOCOL_VERSION = 1

# Limits a daemon enforces by default (the daemon's settings may lower or raise them; `status` reports them).
MAX_HEADER_BYTES = 1 << 20          # 1 MiB of JSON header
MAX_MESSAGE_BYTES = 256 << 20       # 256 MiB for a whole message (header + array frames)
MAX_FRAMES = 64                     # header + up to 63 array frames


class ErrorCode:
    """The enumerated error codes of a reply (`error.code`). A client switches on these, never on messages."""

    BAD_MESSAGE = "bad_message"        # frames missing or not JSON, header not an object, array frames inconsistent
    BAD_VERSION = "bad_version"        # header "v" is not a protocol version this daemon speaks
    UNKNOWN_OP = "unknown_op"          # "op" names no operation
    BAD_ARGS = "bad_args"              # arguments missing, unknown, or of the wrong type; details.problems lists them
    TOO_LARGE = "too_large"            # a frame or the message exceeds a size limit; details name the limit
    NOT_FOUND = "not_found"            # the job, survey, model, viewer ... named does not exist
    CONFLICT = "conflict"              # the operation does not apply in the object's current state
    INVALID_JOB = "invalid_job"        # a job file failed validation; details.problems lists every problem
    UNAVAILABLE = "unavailable"        # the daemon cannot do it now (no such device, shutting down)
    INTERNAL = "internal"              # a bug in seisd; the message says what failed, the daemon keeps running

    ALL = (BAD_MESSAGE, BAD_VERSION, UNKNOWN_OP, BAD_ARGS, TOO_LARGE, NOT_FOUND, CONFLICT, INVALID_JOB,
           UNAVAILABLE, INTERNAL)


JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")


class EventType:
    """Every event type published on the PUB socket. Topic `job.<id>` carries job.*, `viewer.<name>` viewer.*,
    and `daemon` carries daemon.*."""

    JOB_STATE = "job.state"            # data: id, state, previous, reason, error
    JOB_PROGRESS = "job.progress"      # data: fraction (0..1), message, eta_s, and kind-specific fields
    JOB_LOG = "job.log"                # data: level, message
    JOB_METRICS = "job.metrics"        # data: kind-specific figures (loss, accuracy, worker statistics ...)
    VIEWER_STATE = "viewer.state"      # data: name, state, url, pid, reason
    DAEMON_STARTED = "daemon.started"  # data: version, pid, session
    DAEMON_STOPPING = "daemon.stopping"  # data: reason
    EXECUTOR_STATE = "daemon.executor"  # data: slot, kind, description, executor_pid, state (starting, ready,
    #                                     busy, dead, stopped), job, restarts, threads

    ALL = (JOB_STATE, JOB_PROGRESS, JOB_LOG, JOB_METRICS, VIEWER_STATE, DAEMON_STARTED, DAEMON_STOPPING,
           EXECUTOR_STATE)


def job_topic(job_id: int) -> str:
    """The PUB topic of one job's events. Subscribing to "job." receives every job's events."""
    return f"job.{job_id}"


def viewer_topic(name: str) -> str:
    return f"viewer.{name}"


DAEMON_TOPIC = "daemon"


# ---------------------------------------------------------------------------------------------------------------
# Operations: name -> argument schema. The daemon validates every request against this table before its handler
# runs, so a handler can trust its arguments. Types are JSON types: "int", "number", "string", "bool", "object",
# "array", "any"; a trailing "?" means the argument is optional (absent or null).
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    name: str
    args: dict[str, str]
    doc: str


OPERATIONS: dict[str, Operation] = {}


def _op(name: str, doc: str, /, **args: str) -> None:
    OPERATIONS[name] = Operation(name, dict(args), doc)


_op("ping", "Cheapest round trip. Result: {session, version}.")
_op("status", "The daemon's state. Result: {version, protocol, pid, session, started, home, python, stopping, "
    "devices, jobs, endpoints, authorized_keys, security, limits}.")
_op("submit", "Validate and queue a job. Result: {id, state, repeated}. A bad job file: error invalid_job with "
    "details.problems, nothing queued. key: an idempotency key (1..128 characters): a submit whose key the store "
    "already holds returns that job (repeated: true) and queues nothing; the same key with another job file: "
    "error conflict.", job="object", priority="int?", key="string?")
_op("jobs", "List jobs, newest first; name: a shell pattern. Result: {jobs: [summary]}.", state="array?",
    kind="string?", name="string?", limit="int?")
_op("show", "One job with its state history. Result: the job record.", id="int")
_op("cancel", "Cancel a queued or running job; safe to repeat (a cancelled job answers cancelled again). "
    "Result: {id, state}. A job that succeeded or failed: error conflict.", id="int")
_op("logs", "Read a job's log from a byte offset. Result: {text, offset, size, state}.", id="int", offset="int?",
    max_bytes="int?")
_op("events", "Stored events after a sequence number: one job's (id), or every topic's (no id: daemon, viewer "
    "and job events, to catch up after a restart). Result: {events: [event]}.", id="int?", after="int?",
    limit="int?")
_op("devices", "The device slots and their executors. Result: {devices: [slot]}.")
_op("workers", "Change the number of data worker processes of a running job (1..256). Result: what the job "
    "reports, e.g. {count}. A job that has no worker pool: error bad_args (ValueError: ...); a job not running, "
    "or a kind without workers: error conflict.", id="int", count="int")
_op("stop_after_epoch", "Ask a running training job to stop at the end of its current epoch (it saves its "
    "checkpoint and model and succeeds). Result: what the job reports. A job without epochs: error conflict.",
    id="int")
_op("models.list", "Models in the home. Result: {models: [summary]}.")
_op("models.info", "One model: architecture, classes, input specification, normalisation, training, metrics, "
    "provenance. Result: the model.", name="string")
_op("models.rm", "Remove a model file; refused (conflict) while a queued or running job uses it. Result: {removed}.",
    name="string")
_op("stream.open", "Open a streaming-apply session: a model (by name, in the home's models/) is loaded in an "
    "executor and kept warm for blocks. outputs: any of labels, probabilities, confidence, disagreement (default "
    "labels); device: auto | cpu | cuda | cuda:N; options: tile, overlap, stride, orientation, smooth, precision. "
    "Result: {session, model, classes, input, outputs, device, batch_size, precision, direct?} (direct: the "
    "executor's endpoint for this session's stream.apply, offered to ipc clients). key: the same key while its "
    "session is open returns that session instead of loading the model again.", model="string", outputs="array?",
    batch_size="int?", device="string?", options="object?", key="string?")
_op("stream.apply", "Apply the session's model to one block sent as one binary array frame (any wire dtype, "
    "converted to float32; [n_inlines, n_crosslines, n_samples], or [channels, ...] for multi-volume models). "
    "Result: {outputs: [names]} and one array frame per output in that order. A block of the wrong shape gets "
    "bad_args and the session stays usable; a descriptor with a dtype that is not a wire dtype is bad_message.",
    session="string")
_op("stream.close", "Close a streaming session and free its model; safe to repeat (a session this daemon "
    "closed answers closed again). Result: {closed}.", session="string")
_op("stream.list", "Open streaming sessions. Result: {sessions: [session]}.")
_op("viewer.start", "Start a viewer server (name: tensorboard | examples), or return the running one. "
    "args: for tensorboard {jobs: [ids]} (default all jobs). Result: the viewer {name, state, url, pid, port, "
    "started, log}.", name="string", args="object?")
_op("viewer.stop", "Stop a viewer; its log stays readable. Result: the viewer.", name="string")
_op("viewer.restart", "Stop and start a viewer again (a new pid; the URL is reported). Result: the viewer.",
    name="string", args="object?")
_op("viewer.status", "One viewer, or all when name is absent. Result: the viewer, or {viewers: [viewer]}.",
    name="string?")
_op("viewer.logs", "A viewer's log from a byte offset (also after it stopped). Result: {text, offset, size, state}.",
    name="string", offset="int?", max_bytes="int?")
_op("survey.list", "Surveys in the home. Result: {surveys: [summary]}.")
_op("survey.info", "One survey: geometry, volumes with statistics, pick sets, source. Result: the survey.",
    name="string")
_op("survey.rm", "Remove a survey and its files; refused (conflict) while a queued or running job uses it. "
    "Result: {removed}.", name="string")
_op("examples", "Manage example sets: action list | info | rename | lock | unlock | rm | default | note; `value` "
    "is the new name (rename) or the note text (note). A locked set refuses rm, rename and overwrite (conflict). "
    "Result: {examples, default} for list, {removed} for rm, else the set.", action="string", name="string?",
    value="string?")
_op("predictions.list", "Predictions in the home. Result: {predictions: [summary]}.")
_op("predictions.info", "One prediction: model, survey, job, files, summary. Result: the prediction.", name="string")
_op("predictions.rm", "Remove a prediction; conflict while a job writes it. Result: {removed}.", name="string")
_op("schema", "JSON Schemas (draft 2020-12) of job files, generated from the job kinds' own specs: with kind, "
    "that kind's; without, every kind's in one schema that dispatches on `kind`. Result: {kinds, schema} or "
    "{kind, schema}. An unknown kind: error not_found (details.kinds).", kind="string?")
_op("shutdown", "Stop the daemon: running jobs are interrupted and resume at the next start. Result: {}.")


# ---------------------------------------------------------------------------------------------------------------
# Binary arrays
# ---------------------------------------------------------------------------------------------------------------

# dtype names on the wire: plain names a C++ developer can map to types; byte order is separate.
WIRE_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float32", "float64")


def array_descriptor(a: np.ndarray) -> dict[str, Any]:
    """The header entry that describes one array frame."""
    if a.dtype.name not in WIRE_DTYPES:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"arrays of dtype {a.dtype.name} cannot be sent; "
                            f"use one of {', '.join(WIRE_DTYPES)}")
    order = a.dtype.byteorder
    little = order == "<" or (order in ("=", "|") and sys.byteorder == "little")
    return {"dtype": a.dtype.name, "shape": list(a.shape), "byteorder": "little" if little else "big"}


def decode_array(desc: Any, buf: memoryview | bytes, index: int) -> np.ndarray:
    """Turn one array frame into a read-only numpy array (no copy), checking it against its descriptor."""
    if not isinstance(desc, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"arrays[{index}] must be an object with dtype, shape, byteorder")
    dtype, shape, byteorder = desc.get("dtype"), desc.get("shape"), desc.get("byteorder", "little")
    if dtype not in WIRE_DTYPES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"arrays[{index}].dtype {dtype!r} is not one of "
                            f"{', '.join(WIRE_DTYPES)}")
    if byteorder not in ("little", "big"):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"arrays[{index}].byteorder must be 'little' or 'big'")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"arrays[{index}].shape must be a list of at most 8 "
                            f"non-negative integers, got {shape!r}")
    dt = np.dtype(dtype).newbyteorder("<" if byteorder == "little" else ">")
    expected = math.prod(shape) * dt.itemsize  # Python integers: a lying shape cannot overflow to a small size
    if len(buf) != expected:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"array frame {index} has {len(buf)} bytes but its header says "
                            f"{dtype} {shape} ({expected} bytes)")
    return np.frombuffer(buf, dtype=dt).reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """An error that becomes an error reply: an enumerated code, a message naming the problem, and details."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


@dataclass
class Request:
    """header: {"v": 1, "id": str, "op": str, "args": object, "arrays": [descriptor]}"""

    op: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    arrays: list[np.ndarray] = field(default_factory=list)

    def encode(self) -> list[bytes | memoryview]:
        header = {"v": PROTOCOL_VERSION, "id": self.id, "op": self.op, "args": self.args,
                  "arrays": [array_descriptor(a) for a in self.arrays]}
        return [dumps(header)] + [frame_of(a) for a in self.arrays]


@dataclass
class Reply:
    """header: {"v": 1, "re": str, "ok": bool, "session": str, "result": object | "error": {code, message, details},
    "arrays": [descriptor]}"""

    re: str | None
    ok: bool
    session: str
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    arrays: list[np.ndarray] = field(default_factory=list)

    def encode(self) -> list[bytes | memoryview]:
        header: dict[str, Any] = {"v": PROTOCOL_VERSION, "re": self.re, "ok": self.ok, "session": self.session}
        if self.ok:
            header["result"] = self.result if self.result is not None else {}
        else:
            header["error"] = self.error
        header["arrays"] = [array_descriptor(a) for a in self.arrays]
        return [dumps(header)] + [frame_of(a) for a in self.arrays]

    @classmethod
    def failure(cls, re: str | None, session: str, err: ProtocolError) -> "Reply":
        return cls(re=re, ok=False, session=session, error=err.to_json())


def frame_of(a: np.ndarray) -> memoryview | bytes:
    """The bytes of an array frame (C order, the array's own byte order), without a copy where possible."""
    a = np.ascontiguousarray(a)
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else b""


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_json_default).encode()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _load_header(frame: bytes | memoryview, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(frame).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} header is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} header is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} header must be a JSON object, got "
                            f"{type(obj).__name__}")
    return obj


def valid_request_id(rid: Any) -> bool:
    """A request id: a string of 1..128 characters."""
    return isinstance(rid, str) and 1 <= len(rid) <= 128


def is_int(value: Any) -> bool:
    """A JSON integer: true and false are not integers, nor is 1.0."""
    return isinstance(value, int) and not isinstance(value, bool)


def peek_request_id(frame: bytes | memoryview) -> str | None:
    """The request id of a header that may be broken, so an error reply can still name the request it answers;
    None (a reply's `re` null) when there is no valid one."""
    try:
        obj = json.loads(bytes(frame).decode("utf-8"))
        rid = obj.get("id") if isinstance(obj, dict) else None
        return rid if valid_request_id(rid) else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


def decode_request(frames: list[bytes | memoryview], max_header: int = MAX_HEADER_BYTES,
                   max_message: int = MAX_MESSAGE_BYTES, max_frames: int = MAX_FRAMES) -> Request:
    """Parse and check a request's frames (without the ROUTER identity and REQ delimiter). Raises ProtocolError."""
    if not frames:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty message: expected a JSON header frame")
    if len(frames) > max_frames:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{len(frames)} frames; at most {max_frames} are accepted",
                            {"limit": "max_frames", "max": max_frames})
    if len(frames[0]) > max_header:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header of {len(frames[0])} bytes; at most {max_header}",
                            {"limit": "max_header_bytes", "max": max_header})
    total = sum(len(f) for f in frames)
    if total > max_message:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"message of {total} bytes; at most {max_message}",
                            {"limit": "max_message_bytes", "max": max_message})
    h = _load_header(frames[0], "request")
    v = h.get("v")
    if not is_int(v) or v != PROTOCOL_VERSION:  # true and 1.0 are not the int 1
        shown = json.dumps(v)[:40] if v is not None else "(none)"
        raise ProtocolError(ErrorCode.BAD_VERSION, f"protocol version {shown} is not supported; this daemon speaks "
                            f"version {PROTOCOL_VERSION} (the JSON integer 1)", {"supported": [PROTOCOL_VERSION]})
    rid, op, args, descs = h.get("id"), h.get("op"), h.get("args"), h.get("arrays")
    if not valid_request_id(rid):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header.id must be a non-empty string of at most 128 characters")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header.op must be a string naming an operation")
    if args is None:  # absent or null: no arguments
        args = {}
    if descs is None:  # absent or null: no arrays
        descs = []
    if not isinstance(args, dict):
        raise ProtocolError(ErrorCode.BAD_ARGS, f"header.args must be an object, got {type(args).__name__}")
    if not isinstance(descs, list):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header.arrays must be a list of array descriptors")
    if len(descs) != len(frames) - 1:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"header describes {len(descs)} arrays but the message carries "
                            f"{len(frames) - 1} array frames")
    arrays = [decode_array(d, frames[i + 1], i) for i, d in enumerate(descs)]
    return Request(op=op, args=args, id=rid, arrays=arrays)


def decode_reply(frames: list[bytes | memoryview]) -> Reply:
    """Parse a reply's frames. Raises ProtocolError when the daemon sent something this client cannot read."""
    if not frames:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty reply")
    h = _load_header(frames[0], "reply")
    if h.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"the daemon speaks protocol {h.get('v')!r}, this client "
                            f"{PROTOCOL_VERSION}")
    descs = h.get("arrays") or []
    arrays = [decode_array(d, frames[i + 1], i) for i, d in enumerate(descs)]
    return Reply(re=h.get("re"), ok=bool(h.get("ok")), session=str(h.get("session", "")),
                 result=h.get("result"), error=h.get("error"), arrays=arrays)


INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "number": (int, float), "string": (str,), "bool": (bool,),
                                       "object": (dict,), "array": (list,), "any": (object,)}


def check_args(op: Operation, args: dict[str, Any]) -> None:
    """Check arguments against the operation's schema; every problem is listed in one BAD_ARGS error."""
    problems: list[str] = []
    for key in args:
        if key not in op.args:
            problems.append(f"{key}: unknown argument (expected {', '.join(op.args) or 'none'})")
    for key, typ in op.args.items():
        optional = typ.endswith("?")
        base = typ.rstrip("?")
        value = args.get(key)
        if value is None:
            if not optional:
                problems.append(f"{key}: required ({base})")
            continue
        ok = isinstance(value, _TYPES[base])
        if base in ("int", "number") and isinstance(value, bool):
            ok = False  # true/false are not numbers (Python's bool is an int)
        if not ok:
            problems.append(f"{key}: expected {base}, got {type(value).__name__}")
        elif base == "int" and not INT64_MIN <= value <= INT64_MAX:
            problems.append(f"{key}: {value} is outside the signed 64-bit range")
    if problems:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"{op.name}: " + "; ".join(problems), {"problems": problems})


@dataclass
class Event:
    """[topic, {"v": 1, "session": str, "seq": int, "time": float (Unix seconds), "type": str, "topic": str,
    "data": object}]"""

    topic: str
    type: str
    data: dict[str, Any]
    session: str = ""
    seq: int = 0
    time: float = 0.0

    def encode(self) -> list[bytes]:
        return [self.topic.encode(), dumps({"v": PROTOCOL_VERSION, "session": self.session, "seq": self.seq,
                                            "time": self.time, "type": self.type, "topic": self.topic,
                                            "data": self.data})]

    @classmethod
    def decode(cls, frames: list[bytes]) -> "Event":
        if len(frames) != 2:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"event with {len(frames)} frames; expected 2")
        h = _load_header(frames[1], "event")
        return cls(topic=h.get("topic", frames[0].decode(errors="replace")), type=h.get("type", ""),
                   data=h.get("data") or {}, session=h.get("session", ""), seq=int(h.get("seq", 0)),
                   time=float(h.get("time", 0.0)))
