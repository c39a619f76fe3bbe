"""The executor protocol, version 3: every message between the daemon and its executors, in one module.

Internal to seisd (clients never see it; client/protocol.py is the public one), and spoken over the daemon's
`executors.sock` ROUTER (or ray.executor_endpoint over tcp with CURVE) by one DEALER per executor, whose identity
is its slot name (`slot#launch` for executors that run one job each), and by a second DEALER per long-lived
executor, its stream thread's (identity `slot~stream`, stream_identity): jobs, controls and reports go over the
first (TO_EXECUTOR, TO_DAEMON), streaming sessions over the second (TO_STREAM, and Reply back). One message is one
ZeroMQ multipart message:

    frame 0       a UTF-8 JSON object: {"v": PROTOCOL_VERSION, "type": <the message's TYPE>, <its fields>}
    frame 1..n    binary array frames, only after StreamApply and Reply, described by their `arrays` field exactly
                  as on the public socket (client/protocol.py), so the daemon relays blocks without copying them

`encode(msg)` gives frame 0 and `decode(frame)` the typed message; nothing else builds or reads a message dict.
`decode` refuses, with ExecProtocolError naming the problem, a frame that is not JSON, a version other than
PROTOCOL_VERSION (an executor from another seisd install, e.g. on a Ray node with other code), an unknown type, and
missing, unknown or mistyped fields. The receiver logs that and drops the frame; the sender is then handled as one
that said nothing (no hello: killed at the start time-out; no reply: the client gets `unavailable`).
docs/executor-protocol.md describes the messages, the version rule and what each FailureCause leads to.

Change a message and PROTOCOL_VERSION goes up by one: both sides of one install always agree, and two installs that
do not are told so instead of misreading each other.

This module is torch-free and imports nothing of seisd's: the daemon, the supervisor, the executor and the job
context all import it.
"""
from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Union

import numpy as np

PROTOCOL_VERSION = 3   # 2: the stream socket (StreamHello, StreamWelcome; stream requests on it); 3: hello's threads


class ExecProtocolError(ValueError):
    """A frame that is not a message of this protocol version; the text says what is wrong with it."""


class Outcome(str, enum.Enum):
    """How a job ended inside its executor (Done.outcome)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FailureCause(str, enum.Enum):
    """Why a job did not succeed: carried by Done (the job ended in its executor) and by the supervisor's report of
    an executor's death, recorded with the job's state change, and the only input (with the daemon's own state) of
    the job's fate in daemon/server/lifecycle.py (`fate`). What each one leads to is that table's business:"""

    JOB_ERROR = "job_error"                  # the job's runner raised: failed, never retried
    CANCELLED = "cancelled"                  # the job stopped on its cancel: cancelled
    DAEMON_STOPPING = "daemon_stopping"      # the job stopped because the daemon stops: interrupted, resumed at start
    EXECUTOR_DIED = "executor_died"          # the executor ended (exit, signal, lost Ray worker or node): retried
    #                                          when its kind resumes (train, predict) or is safe to run again
    #                                          (import, extract), at most executor.max_job_retries times (Ray:
    #                                          ray.max_retries), else failed
    OUT_OF_MEMORY = "out_of_memory"          # killed by SIGKILL while the kernel's OOM killer killed (its counter
    #                                          rose, daemon/server/vitals.py): as executor_died
    HUNG = "hung"                            # no heartbeat for executor.heartbeat_timeout_s and no CPU used in that
    #                                          time, or stopped (SIGSTOP), killed: as executor_died
    NO_HELLO = "no_hello"                    # no hello within the backend's start time-out, killed: as executor_died
    CANCEL_TIMEOUT = "cancel_timeout"        # did not stop within executor.cancel_grace_s of its cancel, killed:
    #                                          cancelled
    CANCELLED_BEFORE_START = "cancelled_before_start"  # cancelled before its executor said hello, killed: cancelled
    TIME_LIMIT = "time_limit"                # ran past its time_limit_s: stopped as by a cancel, then failed
    END_NOT_RECORDED = "end_not_recorded"    # running in the store but on no executor (its end could not be
    #                                          written, e.g. a full disk): failed


LOST_EXECUTOR_CAUSES = frozenset({FailureCause.EXECUTOR_DIED, FailureCause.OUT_OF_MEMORY, FailureCause.HUNG,
                                  FailureCause.NO_HELLO})   # the causes a retry may cure (and that count retries)

# The job folder's record of outputs a running job has begun outside its folder and not finished (a partial
# prediction): a JSON object {"paths": [paths relative to the home]}, written by the executor (JobContext.
# begin_output) and read by the daemon, which removes those paths when the job finally fails or is cancelled, so
# a half-written output never blocks its name.
UNFINISHED_OUTPUTS = "unfinished_outputs.json"


# -- the messages ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """Base of every message; TYPE is its "type" on the wire."""

    TYPE: ClassVar[str] = ""


# daemon -> executor


@dataclass(frozen=True)
class RunJob(Message):
    """Run a job now (a long-lived executor gets it when the job is placed, a per-job one right after its hello).
    `job_dir` is the job's folder as the executor sees it (on Ray, under the shared home); `attempt` counts from 1;
    `resume` asks the runner to continue from the job's checkpoints or written chunks; `device` is the torch device
    the runner uses ("cpu", "cuda:0" ...). The executor answers with Done."""

    TYPE: ClassVar[str] = "run"
    job: int
    kind: str
    spec: dict[str, Any]
    job_dir: str
    attempt: int
    resume: bool
    device: str


@dataclass(frozen=True)
class CancelJob(Message):
    """Stop the running job `job` at its next check (ctx.check_cancel); `reason` is what the user is told. The job
    ends with Done(outcome cancelled); if it does not within executor.cancel_grace_s, the daemon kills the
    executor (FailureCause.CANCEL_TIMEOUT). Ignored when `job` is not the one running."""

    TYPE: ClassVar[str] = "cancel"
    job: int
    reason: str


@dataclass(frozen=True)
class Control(Message):
    """A control request for the running job `job` (a handler it registered with ctx.on_control, e.g. "workers"
    with {"count": N}); answered by a Reply with the same `token`."""

    TYPE: ClassVar[str] = "control"
    token: str
    job: int
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class StreamOpen(Message):
    """Load a model (the file at `model_path`, named `model`) onto `torch_device` for a streaming session `session`
    and keep it there; `outputs` are any of labels, probabilities, confidence; `options` the tiling options.
    Answered by a Reply whose result describes the session (what stream.open returns to the client)."""

    TYPE: ClassVar[str] = "stream_open"
    token: str
    session: str
    model_path: str
    model: str
    outputs: list[Any]
    batch_size: int | None
    options: dict[str, Any]
    torch_device: str

    def open_args(self) -> dict[str, Any]:
        """The arguments the executor's StreamSession.open reads."""
        return {"session": self.session, "model_path": self.model_path, "model": self.model,
                "outputs": self.outputs, "batch_size": self.batch_size, "options": self.options}


@dataclass(frozen=True)
class StreamApply(Message):
    """Apply session `session`'s model to the block in the array frames that follow (one per `arrays` descriptor).
    Answered by a Reply with one array frame per output."""

    TYPE: ClassVar[str] = "stream_apply"
    token: str
    session: str
    arrays: list[Any]


@dataclass(frozen=True)
class StreamClose(Message):
    """Close session `session` and free its model; answered by a Reply."""

    TYPE: ClassVar[str] = "stream_close"
    token: str
    session: str


@dataclass(frozen=True)
class StreamWelcome(Message):
    """The daemon's answer to StreamHello: it can route stream requests to the stream socket now. `session`: the
    daemon's session id, which replies on the direct endpoint carry as the daemon's own do."""

    TYPE: ClassVar[str] = "stream_welcome"
    session: str


@dataclass(frozen=True)
class Exit(Message):
    """The daemon stops: cancel the running job (it ends with Done, cause daemon_stopping) and exit. An executor
    still alive after executor.cancel_grace_s is killed."""

    TYPE: ClassVar[str] = "exit"


# executor -> daemon


@dataclass(frozen=True)
class Hello(Message):
    """The executor's first message, once connected: it is ready for jobs (the supervisor marks it so). `threads`:
    the CPU threads it computes with (daemon.common.devices.cpu_threads), which `status` shows for its slot."""

    TYPE: ClassVar[str] = "hello"
    slot: str
    pid: int
    threads: int | None = None


@dataclass(frozen=True)
class StreamHello(Message):
    """The first message on a long-lived executor's stream socket (`stream_identity(slot)`), sent before its Hello:
    the executor says Hello only once the daemon answered with StreamWelcome, so a ready executor is always
    reachable for stream requests. `direct`: the ipc endpoint where its stream thread also takes stream.apply
    requests of the public protocol straight from clients of this machine (None: it offers none)."""

    TYPE: ClassVar[str] = "stream_hello"
    slot: str
    pid: int
    direct: str | None = None


@dataclass(frozen=True)
class Heartbeat(Message):
    """Sent every executor.heartbeat_s by the executor's I/O thread. A job in one long C call that holds Python's GIL
    (np.unique over millions of rows) starves that thread, so silence alone proves nothing: after
    executor.heartbeat_timeout_s of it the daemon looks at the executor in /proc (daemon/server/vitals.py), and
    kills it (FailureCause.HUNG) only when it is stopped or used no CPU in that time; an executor using CPU is
    busy and is left alone."""

    TYPE: ClassVar[str] = "heartbeat"
    pid: int
    job: int | None


@dataclass(frozen=True)
class JobProgress(Message):
    """Progress of the running job: `fraction` in [0, 1], a `message`, an estimate `eta_s`, and kind-specific
    `fields`; recorded and published as a job.progress event (coalesced by the job context to a few a second)."""

    TYPE: ClassVar[str] = "progress"
    job: int
    fraction: float
    message: str | None = None
    eta_s: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def event_data(self) -> dict[str, Any]:
        """The job.progress event's data (docs/PROTOCOL.md)."""
        return {"fraction": self.fraction, "message": self.message, "eta_s": self.eta_s, **self.fields}


@dataclass(frozen=True)
class JobLog(Message):
    """A log line of the running job at INFO or above (rate-limited; the job's log file has every line), published
    as a job.log event."""

    TYPE: ClassVar[str] = "log"
    job: int
    level: str
    message: str

    def event_data(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message}


@dataclass(frozen=True)
class JobMetrics(Message):
    """Figures of the running job (loss, accuracy, worker statistics ...), recorded and published as a
    job.metrics event."""

    TYPE: ClassVar[str] = "metrics"
    job: int
    figures: dict[str, Any]

    def event_data(self) -> dict[str, Any]:
        return dict(self.figures)


_DONE_CAUSES = {Outcome.SUCCEEDED: (None,), Outcome.FAILED: (FailureCause.JOB_ERROR,),
                Outcome.CANCELLED: (FailureCause.CANCELLED, FailureCause.DAEMON_STOPPING)}


@dataclass(frozen=True)
class Done(Message):
    """The job `job` ended in this executor: `outcome`, with its `cause` unless it succeeded (job_error for failed;
    cancelled or daemon_stopping for cancelled), `error` in words, and the runner's `result` when it succeeded."""

    TYPE: ClassVar[str] = "done"
    job: int
    outcome: Outcome
    cause: FailureCause | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.cause not in _DONE_CAUSES[self.outcome]:
            raise ExecProtocolError(f"done: a job that {self.outcome.value} cannot have cause "
                                    f"{self.cause.value if self.cause else None}")


@dataclass(frozen=True)
class Reply(Message):
    """The answer to a request with a `token` (Control, StreamOpen, StreamApply, StreamClose), relayed to the
    client waiting for it: `result` and the descriptors of the array frames that follow when `ok`; otherwise a
    public error `code` (client/protocol.py ErrorCode; the daemon passes one it does not know on as conflict, as
    docs/PROTOCOL.md says) and `error` in words."""

    TYPE: ClassVar[str] = "reply"
    token: str
    ok: bool
    result: dict[str, Any] | None = None
    arrays: list[Any] = field(default_factory=list)
    code: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if not self.ok and not self.code:
            raise ExecProtocolError("reply: a failed reply needs an error code")

    @classmethod
    def failure(cls, token: str, code: str, error: str) -> "Reply":
        return cls(token=token, ok=False, code=code, error=error)


TO_EXECUTOR = (RunJob, CancelJob, Control, Exit)                          # on the executor's main socket
TO_STREAM = (StreamWelcome, StreamOpen, StreamApply, StreamClose)         # on its stream socket
TO_DAEMON = (Hello, StreamHello, Heartbeat, JobProgress, JobLog, JobMetrics, Done, Reply)
MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in TO_EXECUTOR + TO_STREAM + TO_DAEMON}
STREAM_SUFFIX = "~stream"


def stream_identity(slot: str) -> str:
    """The identity of a long-lived executor's stream socket: its stream thread's own DEALER, so a block and its
    outputs go between that thread and the daemon with no hand-over to the I/O thread (two thread wake-ups less
    per block)."""
    return slot + STREAM_SUFFIX


# -- encoding ----------------------------------------------------------------------------------------------------


def encode(msg: Message) -> bytes:
    """Frame 0 of `msg`: its JSON object with the version and type. Numpy scalars and arrays in free-form fields
    (a metric computed with numpy) become plain numbers and lists; a value JSON cannot hold raises TypeError here,
    in the sender's thread."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": msg.TYPE}
    for f in fields(msg):
        value = getattr(msg, f.name)
        body[f.name] = value.value if isinstance(value, enum.Enum) else value
    return json.dumps(body, separators=(",", ":"), default=_json_default).encode()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} cannot be sent in an executor message")


def decode(frame: bytes | memoryview, expect: tuple[type[Message], ...] | None = None) -> Message:
    """The message in frame 0; ExecProtocolError names what is wrong (`expect`: the types this side accepts)."""
    try:
        body = json.loads(bytes(frame))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ExecProtocolError(f"not a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise ExecProtocolError(f"not a JSON object but {type(body).__name__}")
    v = body.pop("v", None)
    if v != PROTOCOL_VERSION:
        raise ExecProtocolError(f"executor protocol version {v!r}, this side speaks {PROTOCOL_VERSION}: the daemon "
                                "and its executors run different seisd installs; run one version everywhere")
    t = body.pop("type", None)
    cls = MESSAGES.get(t) if isinstance(t, str) else None
    if cls is None or (expect is not None and cls not in expect):
        known = ", ".join(m.TYPE for m in (expect or tuple(MESSAGES.values())))
        raise ExecProtocolError(f"unknown message type {t!r} (expected one of {known})")
    hints = _hints(cls)
    unknown, missing = set(body) - set(hints), [f.name for f in fields(cls) if f.name not in body and _required(f)]
    if unknown or missing:
        raise ExecProtocolError(f"{t}: " + "; ".join(
            ([f"unknown fields {sorted(unknown)}"] if unknown else []) + ([f"missing fields {missing}"] if missing
                                                                          else [])))
    values = {name: _check(t, name, hints[name], value) for name, value in body.items()}
    return cls(**values)


def _required(f: Any) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _hints(cls: type[Message]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        all_hints = typing.get_type_hints(cls)
        hints = _HINTS[cls] = {f.name: all_hints[f.name] for f in fields(cls)}
    return hints


_HINTS: dict[type, dict[str, Any]] = {}


def _check(msg_type: str, name: str, hint: Any, value: Any) -> Any:
    """`value` as field `name` holds it (an enum member for enum fields), or ExecProtocolError."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for opt in options:
        base = typing.get_origin(opt) or opt
        if isinstance(base, type) and issubclass(base, enum.Enum):
            try:
                return base(value)
            except ValueError:
                continue
        if base is Any or (base is float and isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        if base is int and isinstance(value, bool):
            continue
        if isinstance(base, type) and base is not type(None) and isinstance(value, base):
            return value
    raise ExecProtocolError(f"{msg_type}.{name}: expected {_name(hint)}, got {json.dumps(value)[:80]}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def sender_pid(msg: Message) -> int | None:
    """The executor's pid where the message carries it (Hello, StreamHello, Heartbeat): the supervisor checks it."""
    return msg.pid if isinstance(msg, (Hello, StreamHello, Heartbeat)) else None
