"""Request handlers: one method per operation of client/protocol.py's OPERATIONS table.

Arguments are checked against that table before a handler runs, so handlers only check meaning (does the job
exist, may it be cancelled now). A handler returns `(result, arrays)`, or DEFERRED when an executor answers later.
Handlers run on the daemon's loop: they must be quick (reads from SQLite, a bounded read of a log file).
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from client import protocol as P
from daemon import __version__
from daemon.server import catalog, scheduler
from daemon.kinds import InvalidJob, validate_job
from daemon.kinds.predict import OUTPUT_NAMES as STREAM_OUTPUTS
from daemon.common.logfiles import read_chunk
from daemon.server.store import JobRow, StoreError

from daemon.server.records import CONTROL_TIMEOUT_S, Pending, StreamSession

if TYPE_CHECKING:
    from daemon.server.daemon import Daemon

DEFERRED = object()
STREAM_TIMEOUT_S = 300.0   # a large block on a CPU takes a while
Result = tuple[dict[str, Any], list[np.ndarray]]


class Api:
    def __init__(self, daemon: "Daemon"):
        self.d = daemon

    def handle(self, req: P.Request, envelope: list[bytes], sock: zmq.Socket) -> Result | object:
        op = P.OPERATIONS.get(req.op)
        if op is None:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_OP, f"unknown operation {req.op!r}",
                                  {"operations": sorted(P.OPERATIONS)})
        P.check_args(op, req.args)
        if self.d.stopping and req.op not in ("ping", "status"):
            raise P.ProtocolError(P.ErrorCode.UNAVAILABLE, f"the daemon is stopping ({self.d.stopping})")
        self._envelope, self._sock, self._req = envelope, sock, req
        try:
            out = getattr(self, "op_" + req.op.replace(".", "_"))(**req.args)
        except StoreError as exc:
            raise P.ProtocolError(P.ErrorCode.INTERNAL, str(exc)) from None
        if out is DEFERRED:
            return out
        return out if isinstance(out, tuple) else (out, [])

    # -- helpers -----------------------------------------------------------------------------------------------

    def _job(self, job_id: int) -> JobRow:
        job = self.d.store.get(job_id)
        if job is None:
            raise P.ProtocolError(P.ErrorCode.NOT_FOUND, f"no job {job_id}")
        return job

    def _unfinished_jobs(self, uses: Any) -> list[int]:
        """Ids of queued, running or interrupted jobs whose job file `uses(spec)` (removal is refused then)."""
        return [j.id for j in self.d.store.list(states=["queued", "running", "interrupted"], limit=100_000)
                if uses(j.spec)]

    # -- operations --------------------------------------------------------------------------------------------

    def op_ping(self) -> dict[str, Any]:
        return {"session": self.d.session, "version": __version__}

    def op_status(self) -> dict[str, Any]:
        lim = self.d.settings.limits
        return {"version": __version__, "protocol": P.PROTOCOL_VERSION, "pid": os.getpid(),
                "session": self.d.session, "started": self.d.started, "home": str(self.d.home),
                "python": sys.version.split()[0], "stopping": self.d.stopping,
                "devices": [h.describe() for h in self.d.supervisor.handles.values()],
                "jobs": self.d.store.counts(), "endpoints": self.d.endpoints,
                "limits": {"max_header_bytes": lim.max_header_bytes, "max_message_bytes": lim.max_message_bytes,
                           "max_frames": lim.max_frames}}

    def op_submit(self, job: dict[str, Any], priority: int | None = None) -> dict[str, Any]:
        raw = dict(job)
        if priority is not None:
            raw["priority"] = priority
        try:
            kind, spec = validate_job(raw, self.d.check_context)
        except InvalidJob as exc:
            raise _invalid(exc.problems) from None
        slots = [s.name for s in self.d.slots]
        count = self.d.slots_wanted(kind.name, spec.model_dump(mode="json"), spec.device)
        if count > 1 and not scheduler.device_available(spec.device, kind.devices, slots, count):
            problem = (f"train.distributed.world_size {count} needs {count} GPU slots; this machine has "
                       f"{sum(s != 'cpu' for s in slots)} (slots: {', '.join(slots)})")
            raise P.ProtocolError(P.ErrorCode.INVALID_JOB, problem, {"problems": [problem]})
        if not scheduler.device_available(spec.device, kind.devices, slots):
            raise P.ProtocolError(P.ErrorCode.INVALID_JOB, f"device: {spec.device!r} is not available here "
                                  f"(slots: {', '.join(slots)})", {"problems": [f"device: {spec.device!r} is not "
                                                                                f"one of {', '.join(slots)}"]})
        def accept() -> dict[str, Any]:
            job_id = self.d.submit(raw, kind.name, spec.model_dump(mode="json"), spec.priority, spec.device,
                                   spec.name)
            return {"id": job_id, "state": "queued"}

        if kind.slow_check is None:
            return accept()

        def finish(problems: list[str]) -> dict[str, Any]:
            if problems:
                raise _invalid(problems)
            return accept()

        self.d.off_loop(lambda: kind.slow_check(spec, self.d.check_context), finish, self._envelope, self._req.id,
                        self._sock)
        return DEFERRED

    def op_jobs(self, state: list[Any] | None = None, kind: str | None = None,
                limit: int | None = None) -> dict[str, Any]:
        bad = [s for s in state or [] if s not in P.JOB_STATES]
        if bad:
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"state: unknown states {bad}; known: "
                                  f"{', '.join(P.JOB_STATES)}")
        rows = self.d.store.list(states=state, kind=kind, limit=max(1, min(limit or 100, 10_000)))
        return {"jobs": [r.summary() for r in rows]}

    def op_show(self, id: int) -> dict[str, Any]:
        job = self._job(id)
        return {**job.summary(), "spec": job.spec, "result": job.result, "history": self.d.store.history(id),
                "metrics": self.d.store.last_event(id, P.EventType.JOB_METRICS), "dir": str(self.d.job_dir(id))}

    def op_cancel(self, id: int) -> dict[str, Any]:
        state = self.d.cancel(self._job(id))
        return {"id": id, "state": state}

    def op_logs(self, id: int, offset: int | None = None, max_bytes: int | None = None) -> dict[str, Any]:
        job = self._job(id)
        limit = self.d.settings.limits.max_log_read_bytes
        chunk = read_chunk(self.d.job_dir(id) / "log", max(0, offset or 0), max(0, min(max_bytes or limit, limit)))
        return {**chunk, "state": job.state}

    def op_events(self, id: int, after: int | None = None, limit: int | None = None) -> dict[str, Any]:
        self._job(id)
        return {"events": self.d.store.events(id, after or 0, max(1, min(limit or 1000, 10_000)))}

    def op_devices(self) -> dict[str, Any]:
        return {"devices": [h.describe() for h in self.d.supervisor.handles.values()]}

    def op_workers(self, id: int, count: int) -> object:
        if count < 1 or count > 256:
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"count: expected 1..256, got {count}")
        self.d.send_control(self._job(id), "workers", {"count": count}, self._envelope, self._req.id, self._sock)
        return DEFERRED

    def op_stop_after_epoch(self, id: int) -> object:
        self.d.send_control(self._job(id), "stop_after_epoch", {}, self._envelope, self._req.id, self._sock)
        return DEFERRED

    def op_models_list(self) -> dict[str, Any]:
        return {"models": catalog.list_models(self.d.home)}

    def op_models_info(self, name: str) -> dict[str, Any]:
        return catalog.model_info(self.d.home, name)

    def op_models_rm(self, name: str) -> dict[str, Any]:
        return catalog.remove_model(self.d.home, name, self._unfinished_jobs(lambda spec: _uses_model(spec, name)))

    def op_stream_open(self, model: str, outputs: list[Any] | None = None, batch_size: int | None = None,
                       device: str | None = None, options: dict[str, Any] | None = None) -> object:
        path = catalog.model_info_path(self.d.home, model)
        bad = [o for o in outputs or [] if o not in STREAM_OUTPUTS]
        if bad or (outputs is not None and not outputs):
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"outputs: expected a non-empty list of "
                                  f"{', '.join(STREAM_OUTPUTS)}; got {outputs}")
        if batch_size is not None and not 1 <= batch_size <= 65536:
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"batch_size: expected 1..65536, got {batch_size}")
        h = self._stream_slot(device or "auto")
        sid = uuid.uuid4().hex[:16]
        self.d.streams[sid] = StreamSession(sid, h.slot.name, h.pid, model, time.time())

        def forget_on_failure(ok: bool, result: Any) -> None:
            if not ok:
                self.d.streams.pop(sid, None)

        args = {"session": sid, "model_path": str(path), "model": model, "outputs": outputs or ["labels"],
                "batch_size": batch_size, "options": options or {}, "torch_device": h.slot.torch_device}
        self.d.ask_executor(h, {"op": "stream_open", "session": sid, "args": args},
                            Pending(self._envelope, self._req.id, self._sock, time.monotonic() + STREAM_TIMEOUT_S,
                                    forget_on_failure))
        return DEFERRED

    def _stream_slot(self, device: str) -> Any:
        live = [h for h in self.d.supervisor.handles.values() if h.state in ("ready", "busy")
                and scheduler.slot_accepts(h.slot.name, device, "any")]
        if not live:
            raise P.ProtocolError(P.ErrorCode.UNAVAILABLE, f"no running executor for device {device!r} "
                                  f"(slots: {', '.join(self.d.supervisor.handles)})")
        load = {h.slot.name: sum(st.slot == h.slot.name for st in self.d.streams.values()) for h in live}
        return min(live, key=lambda h: (h.slot.kind == "cpu", load[h.slot.name]))  # a GPU first, then the least used

    def op_stream_apply(self, session: str) -> object:
        st, h = self.d.stream_handle(session)
        if len(self._req.arrays) != 1:
            raise P.ProtocolError(P.ErrorCode.BAD_ARGS, f"stream.apply takes exactly one array frame (the block); "
                                  f"got {len(self._req.arrays)}")
        a = self._req.arrays[0]
        self.d.ask_executor(h, {"op": "stream_apply", "session": session, "args": {},
                                "arrays": [P.array_descriptor(a)]},
                            Pending(self._envelope, self._req.id, self._sock, time.monotonic() + STREAM_TIMEOUT_S),
                            [P.frame_of(a)])
        return DEFERRED

    def op_stream_close(self, session: str) -> object:
        st, h = self.d.stream_handle(session)
        del self.d.streams[session]
        self.d.ask_executor(h, {"op": "stream_close", "session": session},
                            Pending(self._envelope, self._req.id, self._sock, time.monotonic() + CONTROL_TIMEOUT_S))
        return DEFERRED

    def op_stream_list(self) -> dict[str, Any]:
        return {"sessions": [{"session": st.id, "slot": st.slot, "model": st.model, "opened": st.opened}
                             for st in self.d.streams.values()]}

    def op_viewer_start(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.d.viewers.start(name, args or {})

    def op_viewer_stop(self, name: str) -> dict[str, Any]:
        return self.d.viewers.stop(name)

    def op_viewer_restart(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.d.viewers.restart(name, args)

    def op_viewer_status(self, name: str | None = None) -> dict[str, Any]:
        return self.d.viewers.status(name) if name else {"viewers": self.d.viewers.status_all()}

    def op_viewer_logs(self, name: str, offset: int | None = None, max_bytes: int | None = None) -> dict[str, Any]:
        limit = self.d.settings.limits.max_log_read_bytes
        return self.d.viewers.logs(name, max(0, offset or 0), max(0, min(max_bytes or limit, limit)))

    def op_survey_list(self) -> dict[str, Any]:
        return {"surveys": catalog.list_surveys(self.d.home)}

    def op_survey_info(self, name: str) -> dict[str, Any]:
        return catalog.survey_info(self.d.home, name)

    def op_survey_rm(self, name: str) -> dict[str, Any]:
        return catalog.remove_survey(self.d.home, name, self._unfinished_jobs(lambda spec: _uses_survey(spec, name)))

    def op_examples(self, action: str, name: str | None = None, value: str | None = None) -> dict[str, Any]:
        return catalog.examples_op(self.d.home, action, name, value)

    def op_shutdown(self) -> dict[str, Any]:
        self.d.request_stop("requested by a client")
        return {}


def _invalid(problems: list[str]) -> P.ProtocolError:
    return P.ProtocolError(P.ErrorCode.INVALID_JOB, f"the job file has {len(problems)} problem"
                           f"{'s' if len(problems) > 1 else ''}: " + "; ".join(problems), {"problems": problems})


def _uses_survey(spec: dict[str, Any], name: str) -> bool:
    """Whether a job file names the survey (as `survey:` or in `sources:`)."""
    if spec.get("survey") == name:
        return True
    return any(isinstance(s, dict) and s.get("survey") == name for s in spec.get("sources") or [])


def _uses_model(spec: dict[str, Any], name: str) -> bool:
    """Whether a job file reads or writes the model (`model: NAME`, `output.model`, `init_from`)."""
    def names(v: Any) -> list[Any]:
        return [v.get("name"), v.get("model")] if isinstance(v, dict) else [v]
    return name in (names(spec.get("model")) + names(spec.get("output")) + [spec.get("init_from")])
