"""Request handlers: one method per operation of client/protocol.py's OPERATIONS table.

Arguments are checked against that table before a handler runs, so handlers only check meaning (does the job
exist, may it be cancelled now). A handler returns `(result, arrays)`, or DEFERRED when an executor answers later.
Handlers run on the daemon's loop: they must be quick (reads from SQLite, a bounded read of a log file).

What a handler may touch is exactly what Api is constructed with, each seen through one of the small interfaces
below (the daemon's parts satisfy them; daemon/server/daemon.py wires them): nothing else of the daemon.
"""
from __future__ import annotations

import difflib
import fnmatch
import itertools
import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from client import protocol as P
from daemon import __version__
from daemon.kinds.predict import OUTPUT_NAMES as STREAM_OUTPUTS
from daemon.common.logfiles import read_chunk
from daemon.common.settings import LimitSettings
from daemon.kinds import CheckContext, InvalidJob, get_kind, kind_names, validate_job
from daemon.kinds.job_schemas import job_schema, kind_schema
from daemon.server import catalog, predictions, scheduler
from daemon.common.router import ReplyTo
from daemon.server.store import JobRow, StoreError, SubmitKey

DEFERRED = object()
Result = tuple[dict[str, Any], list[np.ndarray]]


class DaemonInfo(Protocol):
    """Facts about the running daemon (`ping`, `status`) and the one thing a client may ask of it: to stop."""

    session: str
    started: float
    home: Path
    stopping: str | None
    endpoints: dict[str, str]
    authorized_keys: Path

    def request_stop(self, reason: str) -> None: ...

    def security(self) -> dict[str, Any]: ...

    def heartbeat(self) -> dict[str, int] | None: ...


class JobReads(Protocol):
    """Reading the job store (store.JobStore)."""

    def get(self, job_id: int) -> JobRow | None: ...
    def list(self, states: list[str] | None = None, kind: str | None = None, limit: int = 100) -> list[JobRow]: ...
    def counts(self) -> dict[str, int]: ...
    def history(self, job_id: int) -> list[dict[str, Any]]: ...
    def last_event(self, job_id: int, type_: str) -> dict[str, Any] | None: ...
    def events(self, job_id: int | None, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]: ...
    def job_of_key(self, key: str) -> tuple[int, str] | None: ...


class JobControl(Protocol):
    """Changing jobs (lifecycle.JobLifecycle): queue one, cancel one, send a running one a control request."""

    def job_dir(self, job_id: int) -> Path: ...
    def slots_wanted(self, kind: str, spec: dict[str, Any], device: str) -> int: ...
    def submit(self, raw: dict[str, Any], kind_name: str, spec: dict[str, Any], priority: int, device: str,
               name: str | None, key: SubmitKey | None = None) -> int: ...
    def cancel(self, job: JobRow) -> str: ...
    def control(self, job: JobRow, name: str, args: dict[str, Any], to: ReplyTo) -> None: ...


class ExecutorView(Protocol):
    """The device slots and their executors, as shown to clients (supervisor.Supervisor)."""

    def devices(self) -> list[dict[str, Any]]: ...


class StreamControl(Protocol):
    """Streaming-apply sessions (streams.StreamSessions); open, apply and close answer through `to` later."""

    def open(self, model: str, model_path: Path, outputs: list[str], batch_size: int | None, device: str,
             options: dict[str, Any], to: ReplyTo, key: str | None = None) -> None: ...
    def apply(self, sid: str, arrays: list[np.ndarray], to: ReplyTo) -> None: ...
    def close(self, sid: str, to: ReplyTo) -> None: ...
    def list(self) -> list[dict[str, Any]]: ...


class ViewerControl(Protocol):
    """The viewer servers (viewers.ViewerManager)."""

    def start(self, name: str, args: dict[str, Any]) -> dict[str, Any]: ...
    def stop(self, name: str) -> dict[str, Any]: ...
    def restart(self, name: str, args: dict[str, Any] | None) -> dict[str, Any]: ...
    def status(self, name: str) -> dict[str, Any]: ...
    def status_all(self) -> list[dict[str, Any]]: ...
    def logs(self, name: str, offset: int, max_bytes: int) -> dict[str, Any]: ...


OffLoop = Callable[[Callable[[], Any], Callable[[Any], dict[str, Any]], ReplyTo], None]  # Daemon.off_loop


class Api:
    def __init__(self, *, daemon: DaemonInfo, jobs: JobReads, lifecycle: JobControl, executors: ExecutorView,
                 streams: StreamControl, viewers: ViewerControl, off_loop: OffLoop, limits: LimitSettings,
                 check_context: CheckContext, device_names: list[str]):
        self.daemon = daemon
        self.jobs = jobs
        self.lifecycle = lifecycle
        self.executors = executors
        self.streams = streams
        self.viewers = viewers
        self.off_loop = off_loop
        self.limits = limits
        self.check_context = check_context
        self.device_names = device_names   # what a job file may ask for (checked at submit)
        self.home = daemon.home

    def handle(self, req: P.Request, to: ReplyTo) -> Result | object:
        op = P.OPERATIONS.get(req.op)
        if op is None:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_OP, f"unknown operation {req.op!r}",
                                  {"operations": sorted(P.OPERATIONS)})
        P.check_args(op, req.args)
        if self.daemon.stopping and req.op not in ("ping", "status"):
            raise P.ProtocolError(P.ErrorCode.UNAVAILABLE, f"the daemon is stopping ({self.daemon.stopping})")
        self._to, self._req = to, req
        try:
            out = getattr(self, "op_" + req.op.replace(".", "_"))(**req.args)
        except StoreError as exc:
            raise P.ProtocolError(P.ErrorCode.INTERNAL, str(exc)) from None
        if out is DEFERRED:
            return out
        return out if isinstance(out, tuple) else (out, [])

    # -- helpers -----------------------------------------------------------------------------------------------

    def _job(self, job_id: int) -> JobRow:
        job = self.jobs.get(job_id)
        if job is None:
            raise P.ProtocolError(P.ErrorCode.NOT_FOUND, f"no job {job_id}")
        return job

    def _unfinished_jobs(self, uses: Any) -> list[int]:
        """Ids of queued, running or interrupted jobs whose job file `uses(spec)` (removal is refused then)."""
        return [j.id for j in self.jobs.list(states=["queued", "running", "interrupted"], limit=100_000)
                if uses(j.spec)]

    # -- operations --------------------------------------------------------------------------------------------

    def op_ping(self) -> dict[str, Any]:
        return {"session": self.daemon.session, "version": __version__}

    def op_status(self) -> dict[str, Any]:
        d, lim = self.daemon, self.limits
        return {"version": __version__, "protocol": P.PROTOCOL_VERSION, "pid": os.getpid(),
                "session": d.session, "started": d.started, "home": str(d.home),
                "python": sys.version.split()[0], "stopping": d.stopping,
                "devices": self.executors.devices(), "jobs": self.jobs.counts(), "endpoints": d.endpoints,
                "authorized_keys": str(d.authorized_keys), "security": d.security(), "heartbeat": d.heartbeat(),
                "limits": {"max_header_bytes": lim.max_header_bytes, "max_message_bytes": lim.max_message_bytes,
                           "max_frames": lim.max_frames}}

    def op_submit(self, job: dict[str, Any], priority: int | None = None,
                  key: str | None = None) -> dict[str, Any] | object:
        submit_key = _submit_key(key, job, priority)
        if submit_key is not None and (seen := self._submitted(submit_key)) is not None:
            return seen  # a retry: that job, never a second one
        raw = dict(job)
        if priority is not None:
            raw["priority"] = priority
        ctx = replace(self.check_context, remote=self._to.remote)  # a tcp client may name less (kinds/job_files.py)
        try:
            kind, spec = validate_job(raw, ctx)
        except InvalidJob as exc:
            raise _invalid(exc.problems) from None
        slots = self.device_names
        count = self.lifecycle.slots_wanted(kind.name, spec.model_dump(mode="json"), spec.device)
        if count > 1 and not scheduler.device_available(spec.device, kind.devices, slots, count):
            problem = (f"train.distributed.world_size {count} needs {count} GPU slots; this machine has "
                       f"{sum(s != 'cpu' for s in slots)} (slots: {', '.join(slots)})")
            raise P.ProtocolError(P.ErrorCode.INVALID_JOB, problem, {"problems": [problem]})
        if not scheduler.device_available(spec.device, kind.devices, slots):
            raise P.ProtocolError(P.ErrorCode.INVALID_JOB, f"device: {spec.device!r} is not available here "
                                  f"(slots: {', '.join(slots)})", {"problems": [f"device: {spec.device!r} is not "
                                                                                f"one of {', '.join(slots)}"]})

        def accept() -> dict[str, Any]:
            # a retry may have arrived while this submit's slow check ran: the loop runs one at a time, so the
            # key is looked at again right before the job (and its key, in the same transaction) is written
            if submit_key is not None and (seen := self._submitted(submit_key)) is not None:
                return seen
            job_id = self.lifecycle.submit(raw, kind.name, spec.model_dump(mode="json"), spec.priority,
                                           spec.device, spec.name or spec.default_name(), submit_key)
            return {"id": job_id, "state": "queued", "repeated": False}

        if kind.slow_check is None:
            return accept()

        def finish(problems: list[str]) -> dict[str, Any]:
            if problems:
                raise _invalid(problems)
            return accept()

        self.off_loop(lambda: kind.slow_check(spec, ctx), finish, self._to)
        return DEFERRED

    def op_jobs(self, state: list[Any] | None = None, kind: str | None = None, name: str | None = None,
                limit: int | None = None) -> dict[str, Any]:
        checks = [("state", s, P.JOB_STATES) for s in state or []]
        if kind is not None:
            checks.append(("kind", kind, kind_names()))
        for what, value, known in checks:
            if value not in known:
                raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"{what}: unknown {what} {value!r}"
                                      f"{did_you_mean(str(value), known)}; known: {', '.join(known)}")
        limit = max(1, min(limit or 100, 10_000))
        if name is None:
            return {"jobs": [r.summary() for r in self.jobs.list(states=state, kind=kind, limit=limit)]}
        rows = (r for r in self.jobs.list(states=state, kind=kind, limit=1_000_000)
                if r.name is not None and fnmatch.fnmatchcase(r.name, name))
        return {"jobs": [r.summary() for r in itertools.islice(rows, limit)]}

    def op_show(self, id: int) -> dict[str, Any]:
        job = self._job(id)
        return {**job.summary(), "spec": job.spec, "result": job.result, "history": self.jobs.history(id),
                "metrics": self.jobs.last_event(id, P.EventType.JOB_METRICS),
                "dir": str(self.lifecycle.job_dir(id))}

    def _submitted(self, key: SubmitKey) -> dict[str, Any] | None:
        """The job an earlier submit with this key made ({id, state, repeated: true}), or None; the same key with
        another job file is a conflict."""
        seen = self.jobs.job_of_key(key.key)
        if seen is None:
            return None
        job_id, fingerprint = seen
        if fingerprint != key.fingerprint:
            raise P.ProtocolError(P.ErrorCode.CONFLICT, f"key {key.key!r} was already used to submit job {job_id}, "
                                  "with another job file; use a new key for a new job", {"id": job_id})
        return {"id": job_id, "state": self._job(job_id).state, "repeated": True}

    def op_cancel(self, id: int) -> dict[str, Any]:
        job = self._job(id)
        if job.state == "cancelled":
            return {"id": id, "state": "cancelled"}  # a repeated cancel (its first reply was lost): the same answer
        return {"id": id, "state": self.lifecycle.cancel(job)}

    def op_logs(self, id: int, offset: int | None = None, max_bytes: int | None = None) -> dict[str, Any]:
        job = self._job(id)
        limit = self.limits.max_log_read_bytes
        chunk = read_chunk(self.lifecycle.job_dir(id) / "log", max(0, offset or 0),
                           max(0, min(max_bytes or limit, limit)))
        return {**chunk, "state": job.state}

    def op_events(self, id: int | None = None, after: int | None = None, limit: int | None = None) -> dict[str, Any]:
        if id is not None:
            self._job(id)
        return {"events": self.jobs.events(id, after or 0, max(1, min(limit or 1000, 10_000)))}

    def op_devices(self) -> dict[str, Any]:
        return {"devices": self.executors.devices()}

    def op_workers(self, id: int, count: int) -> object:
        if count < 1 or count > 256:
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"count: expected 1..256, got {count}")
        self.lifecycle.control(self._job(id), "workers", {"count": count}, self._to)
        return DEFERRED

    def op_stop_after_epoch(self, id: int) -> object:
        self.lifecycle.control(self._job(id), "stop_after_epoch", {}, self._to)
        return DEFERRED

    def op_models_list(self) -> dict[str, Any]:
        return {"models": catalog.list_models(self.home)}

    def op_models_info(self, name: str) -> dict[str, Any]:
        return catalog.model_info(self.home, name)

    def op_models_rm(self, name: str) -> dict[str, Any]:
        return catalog.remove_model(self.home, name, self._unfinished_jobs(lambda spec: _uses_model(spec, name)))

    def op_stream_open(self, model: str, outputs: list[Any] | None = None, batch_size: int | None = None,
                       device: str | None = None, options: dict[str, Any] | None = None,
                       key: str | None = None) -> object:
        _check_key(key)
        path = catalog.model_info_path(self.home, model)
        bad = [o for o in outputs or [] if o not in STREAM_OUTPUTS]
        if bad or (outputs is not None and not outputs):
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"outputs: expected a non-empty list of "
                                  f"{', '.join(STREAM_OUTPUTS)}; got {outputs}")
        if batch_size is not None and not 1 <= batch_size <= 65536:
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"batch_size: expected 1..65536, got {batch_size}")
        self.streams.open(model, path, outputs or ["labels"], batch_size, device or "auto", options or {}, self._to,
                          key)
        return DEFERRED

    def op_stream_apply(self, session: str) -> object:
        self.streams.apply(session, self._req.arrays, self._to)
        return DEFERRED

    def op_stream_close(self, session: str) -> object:
        self.streams.close(session, self._to)
        return DEFERRED

    def op_stream_list(self) -> dict[str, Any]:
        return {"sessions": self.streams.list()}

    def op_viewer_start(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.viewers.start(name, args or {})

    def op_viewer_stop(self, name: str) -> dict[str, Any]:
        return self.viewers.stop(name)

    def op_viewer_restart(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.viewers.restart(name, args)

    def op_viewer_status(self, name: str | None = None) -> dict[str, Any]:
        return self.viewers.status(name) if name else {"viewers": self.viewers.status_all()}

    def op_viewer_logs(self, name: str, offset: int | None = None, max_bytes: int | None = None) -> dict[str, Any]:
        limit = self.limits.max_log_read_bytes
        return self.viewers.logs(name, max(0, offset or 0), max(0, min(max_bytes or limit, limit)))

    def op_survey_list(self) -> dict[str, Any]:
        return {"surveys": catalog.list_surveys(self.home)}

    def op_survey_info(self, name: str) -> dict[str, Any]:
        return catalog.survey_info(self.home, name)

    def op_survey_rm(self, name: str) -> dict[str, Any]:
        return catalog.remove_survey(self.home, name, self._unfinished_jobs(lambda spec: _uses_survey(spec, name)))

    def op_examples(self, action: str, name: str | None = None, value: str | None = None) -> dict[str, Any]:
        return catalog.examples_op(self.home, action, name, value)

    def op_predictions_list(self) -> dict[str, Any]:
        return predictions.list_predictions(self.home, self.jobs)

    def op_predictions_info(self, name: str) -> dict[str, Any]:
        return predictions.prediction_info(self.home, self.jobs, name)

    def op_predictions_rm(self, name: str) -> dict[str, Any]:
        return predictions.remove_prediction(self.home, self.jobs, name)

    def op_schema(self, kind: str | None = None) -> dict[str, Any]:
        if kind is None:
            return {"kinds": kind_names(), "schema": job_schema()}
        found = get_kind(kind)
        if found is None:
            raise P.ProtocolError(P.ErrorCode.NOT_FOUND, f"no job kind {kind!r}; the kinds are "
                                  f"{', '.join(kind_names())}", {"kinds": kind_names()})
        return {"kind": kind, "schema": kind_schema(found)}

    def op_shutdown(self) -> dict[str, Any]:
        self.daemon.request_stop("requested by a client")
        return {}


def did_you_mean(value: str, known: Any) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= 128:
        raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"key: expected 1..128 characters, got {len(key)}",
                              {"problems": [f"key: expected 1..128 characters, got {len(key)}"]})


def _submit_key(key: str | None, job: dict[str, Any], priority: int | None) -> SubmitKey | None:
    """The idempotency key of a submit, with the fingerprint of what it submits (job file and priority)."""
    _check_key(key)
    if key is None:
        return None
    text = json.dumps({"job": job, "priority": priority}, sort_keys=True, separators=(",", ":"))
    return SubmitKey(key, hashlib.sha256(text.encode()).hexdigest())


def _invalid(problems: list[str]) -> P.ProtocolError:
    return P.ProtocolError(P.ErrorCode.INVALID_JOB, f"the job file has {len(problems)} problem"
                           f"{'s' if len(problems) > 1 else ''}: " + "; ".join(problems), {"problems": problems})


def _uses_survey(spec: Any, name: str) -> bool:
    """Whether a job file names the survey under a `survey` key at any depth (import's `survey`, train's
    `data.survey`, extract's `sources[].survey`, predict's `survey`)."""
    if isinstance(spec, dict):
        return spec.get("survey") == name or any(_uses_survey(v, name) for v in spec.values())
    if isinstance(spec, list):
        return any(_uses_survey(v, name) for v in spec)
    return False


def _uses_model(spec: dict[str, Any], name: str) -> bool:
    """Whether a job file reads or writes the model: predict's `model: NAME` (or `{name: NAME}`), train's
    `output: NAME` and `train.init_from` (a model name, or the path of its file models/NAME.h5)."""
    def names(v: Any) -> list[Any]:
        return [v.get("name"), v.get("model")] if isinstance(v, dict) else [v]
    train = spec.get("train") if isinstance(spec.get("train"), dict) else {}
    init = [str(v) for v in (spec.get("init_from"), train.get("init_from")) if v]
    if any(v == name or Path(v).name == f"{name}.h5" for v in init):
        return True
    reads = names(spec.get("model")) if spec.get("kind") != "train" else []  # a train job's model is its architecture
    return name in reads + names(spec.get("output"))
