"""The job lifecycle: submit, dispatch to executors, cancel, and what becomes of a job when it ends or its executor
dies, retries included.

    queued -> running -> succeeded | failed | cancelled          interrupted -> queued (daemon restart, retry)

Every end of a running job goes through `fate(cause, ...)`, the one table of what a FailureCause (execproto) leads
to; the cause is recorded with the state change in the job's history (the store's `cause` column), which is also
what counts the retries already spent. Nothing here matches the wording of a reason.
"""
from __future__ import annotations

import enum
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from client import protocol as P
from daemon.common import execproto as E
from daemon.common import home as layout
from daemon.common.execproto import FailureCause as C
from daemon.common.settings import Settings
from daemon.kinds import get_kind
from daemon.server import scheduler
from daemon.server.backends import ExecutorBackend
from daemon.server.execlink import ExecutorLink
from daemon.server.records import CONTROL_TIMEOUT_S, Pending, ReplyTo
from daemon.server.store import JobRow, JobStore, SubmitKey
from daemon.server.supervisor import ExecutorDeath, ExecutorHandle, Supervisor

RETRY_REASON = "its executor was lost; requeued to resume from its last checkpoint"
CANCEL_CAUSES = frozenset({C.CANCELLED, C.CANCEL_TIMEOUT, C.CANCELLED_BEFORE_START})
LOST_EXECUTOR_CAUSES = frozenset({C.EXECUTOR_DIED, C.HUNG, C.NO_HELLO})   # the ones a retry may cure


class Fate(enum.Enum):
    """What becomes of a running job that ended."""

    SUCCEED = "succeeded"
    FAIL = "failed"
    CANCEL = "cancelled"
    INTERRUPT = "interrupted"   # back to the queue at the next start (the daemon is stopping)
    RETRY = "retry"             # back to the queue now, to resume from its checkpoint (while retries are left)


def fate(cause: C | None, *, stopping: bool, retryable: bool) -> Fate:
    """The one retry policy. `cause` None: the job succeeded. `retryable`: the job ran on an executor of its own
    (Ray) and its kind resumes from checkpoints; the number of retries is bounded apart (ray.max_retries)."""
    if cause is None:
        return Fate.SUCCEED
    if cause is C.JOB_ERROR:
        return Fate.FAIL            # the job's own error: running it again would fail again
    if stopping or cause is C.DAEMON_STOPPING:
        return Fate.INTERRUPT
    if cause in CANCEL_CAUSES:
        return Fate.CANCEL
    if cause in LOST_EXECUTOR_CAUSES and retryable:
        return Fate.RETRY
    return Fate.FAIL


class JobLifecycle:
    def __init__(self, home: Path, store: JobStore, settings: Settings, supervisor: Supervisor,
                 backend: ExecutorBackend, link: ExecutorLink, publish: Callable[..., None],
                 stopping: Callable[[], str | None], on_state: Callable[[ExecutorHandle], None]):
        self.home = home
        self.store = store
        self.settings = settings
        self.supervisor = supervisor
        self.backend = backend
        self.link = link
        self.publish = publish
        self.stopping = stopping
        self.on_state = on_state
        self.slot_names = [s.name for s in backend.device_names()]   # what job files may ask for
        self.cancel_deadlines: dict[int, float] = {}

    # -- records -----------------------------------------------------------------------------------------------

    def job_dir(self, job_id: int) -> Path:
        return layout.job_folder(self.home, job_id)

    def job_log(self, job_id: int, line: str) -> None:
        """A line from the daemon in the job's log (executors append to the same file)."""
        d = self.job_dir(job_id)
        if d.is_dir():
            with open(d / "log", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} DAEMON {line}\n")

    def set_state(self, job: JobRow, state: str, reason: str | None, *, cause: C | None = None,
                  error: str | None = None, slot: str | None = None, result: dict[str, Any] | None = None) -> None:
        self.store.set_state(job.id, state, reason, cause=cause, error=error, slot=slot, result=result)
        self.publish(P.job_topic(job.id), P.EventType.JOB_STATE,
                     {"id": job.id, "state": state, "previous": job.state, "reason": reason, "error": error},
                     job_id=job.id)

    # -- the queue ---------------------------------------------------------------------------------------------

    def submit(self, raw: dict[str, Any], kind_name: str, spec: dict[str, Any], priority: int, device: str,
               name: str | None, key: SubmitKey | None = None) -> int:
        job_id = self.store.add_job(kind_name, spec, priority, device, name, key)
        d = self.job_dir(job_id)
        d.mkdir(parents=True, exist_ok=True)
        (d / "job.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        self.job_log(job_id, f"submitted: {kind_name}, priority {priority}, device {device}")
        self.publish(P.job_topic(job_id), P.EventType.JOB_STATE,
                     {"id": job_id, "state": "queued", "previous": None, "reason": "submitted", "error": None},
                     job_id=job_id)
        return job_id

    def recover(self) -> None:
        """Jobs the last daemon left running (it was killed or stopped) go back to the queue, resumable ones to
        continue from their checkpoints."""
        for job in self.store.list(states=["running", "interrupted"], limit=1_000_000):
            if job.state == "running":
                self.store.set_state(job.id, "interrupted", "the daemon stopped while the job ran",
                                     cause=C.DAEMON_STOPPING)
            self.store.set_state(job.id, "queued", "requeued when the daemon started")
            self.job_log(job.id, "requeued: the daemon restarted while this job was running")

    def reconcile(self) -> None:
        """Jobs the store says are running but no executor runs (their end could not be written, say on a full
        disk) are failed with that reason, so the queue never waits on a job that is gone."""
        running = {h.job_id for h in self.supervisor.handles.values() if h.job_id is not None}
        for job in self.store.list(states=["running"], limit=100_000):
            if job.id not in running:
                self.set_state(job, "failed", "lost", cause=C.END_NOT_RECORDED, error="the job's end could not be "
                               "recorded (the job store was not writable, e.g. a full disk); run it again")

    def dispatch(self) -> None:
        if self.stopping() or not any(h.idle for h in self.supervisor.handles.values()):
            return
        queued = self.store.queued_in_order()
        # in order (priority, then age); a job no free slot accepts does not hold back those behind it; a job
        # taking several GPU slots gets them all at once (daemon/server/scheduler.py)
        for job, handles in self.supervisor.placements(queued, _kind_devices,
                                                       lambda job: self.slots_wanted(job.kind, job.spec, job.device)):
            self._start(job, handles[0], handles[1:])

    def slots_wanted(self, kind: str, spec: dict[str, Any], device: str) -> int:
        """Slots a job takes here (scheduler.slots_wanted); always 1 on Ray, where a job's further ranks are Ray
        tasks, not slots. The one rule for submit (refusing what can never be placed) and dispatch."""
        if not self.backend.long_lived:
            return 1
        job_kind = get_kind(kind)
        wanted = job_kind.slots_needed(spec) if job_kind else 1  # the kind's hook (daemon/kinds/registry.py)
        return scheduler.slots_wanted(wanted, device, self.slot_names)

    def _start(self, job: JobRow, h: ExecutorHandle, helpers: list[ExecutorHandle]) -> None:
        kind = get_kind(job.kind)
        resume = bool(kind and kind.resumable and job.attempts > 0)
        self.set_state(job, "running", f"started on {h.slot.name}" + (" (resuming)" if resume else ""),
                       slot=h.slot.name)
        h.job_id, h.state = job.id, "busy"
        self.on_state(h)
        if helpers:
            self.supervisor.hold(h, helpers, job.id, self.job_dir(job.id))
        device = self.backend.torch_device(h.slot, job.device, kind.devices if kind else "any")
        exec_dir = layout.job_folder(self.backend.launch_args.home, job.id)  # the job folder as the executor sees it
        self.supervisor.begin_job(h, E.RunJob(job=job.id, kind=job.kind, spec=job.spec, job_dir=str(exec_dir),
                                              attempt=job.attempts + 1, resume=resume, device=device),
                                  self.link.send)

    # -- requests about a job ----------------------------------------------------------------------------------

    def cancel(self, job: JobRow, reason: str = "cancelled by the user") -> str:
        h = self._handle_of_job(job.id)
        if job.state in ("queued", "interrupted") or (job.state == "running" and h is None):
            # (running without an executor: its end could not be recorded; nothing runs it any more)
            self.set_state(job, "cancelled", reason, cause=C.CANCELLED)
            self.job_log(job.id, f"cancelled while {job.state}")
            return "cancelled"
        if job.state == "running" and h.state == "starting":
            # its executor has not said hello yet (Ray is placing it): nothing to ask, stop the launch
            self.supervisor.kill(h.slot.name, ExecutorDeath(C.CANCELLED_BEFORE_START, f"{reason}; its executor "
                                                            "was stopped before it started, as part of its cancel"))
            self.job_log(job.id, "cancel requested before the executor started")
            return "cancelling"
        if job.state == "running":
            self.link.send(h, E.CancelJob(job=job.id, reason=reason))
            self.cancel_deadlines.setdefault(job.id, time.monotonic() + self.settings.executor.cancel_grace_s)
            self.job_log(job.id, "cancel requested")
            return "cancelling"
        raise P.ProtocolError(P.ErrorCode.CONFLICT, f"job {job.id} is {job.state}; only queued or running jobs "
                              "can be cancelled")

    def control(self, job: JobRow, name: str, args: dict[str, Any], to: ReplyTo) -> None:
        """Forward a control request to the job's executor; the reply is sent when the executor answers."""
        h = self._handle_of_job(job.id)
        if job.state != "running" or h is None:
            raise P.ProtocolError(P.ErrorCode.CONFLICT, f"job {job.id} is {job.state}, not running")
        self.link.ask(h, lambda token: E.Control(token=token, job=job.id, name=name, args=args),
                      Pending(to, time.monotonic() + CONTROL_TIMEOUT_S))

    def tick(self, now: float) -> None:
        """Kill the executors of cancelled jobs that did not stop within executor.cancel_grace_s."""
        for job_id, deadline in list(self.cancel_deadlines.items()):
            if now >= deadline:
                h = self._handle_of_job(job_id)
                if h is not None:
                    self.supervisor.kill(h.slot.name, ExecutorDeath(C.CANCEL_TIMEOUT, f"job {job_id} did not stop "
                                         f"within {self.settings.executor.cancel_grace_s:g} s of its cancel"))
                del self.cancel_deadlines[job_id]

    def _handle_of_job(self, job_id: int) -> ExecutorHandle | None:
        return next((h for h in self.supervisor.handles.values() if h.job_id == job_id and h.held_by is None), None)

    # -- what executors report ---------------------------------------------------------------------------------

    def on_report(self, h: ExecutorHandle, msg: E.Message) -> None:
        """A report from the executor running a job: an event to record and publish, or its Done."""
        if isinstance(msg, E.Done):
            self._on_done(h, msg)
        elif isinstance(msg, E.JobProgress):
            self.store.set_progress(msg.job, msg.fraction, msg.message)
            self.publish(P.job_topic(msg.job), P.EventType.JOB_PROGRESS, msg.event_data(), job_id=msg.job)
        elif isinstance(msg, E.JobMetrics):
            self.publish(P.job_topic(msg.job), P.EventType.JOB_METRICS, msg.event_data(), job_id=msg.job)
        elif isinstance(msg, E.JobLog):  # log lines live in the job's log file, not in the store
            self.publish(P.job_topic(msg.job), P.EventType.JOB_LOG, msg.event_data(), job_id=msg.job, store=False)

    def _on_done(self, h: ExecutorHandle, msg: E.Done) -> None:
        job = self.store.get(msg.job)
        self.cancel_deadlines.pop(msg.job, None)
        # a per-job executor exits after its job: its slot is free once the supervisor sees it gone
        h.job_id, h.state = None, ("finishing" if h.per_job else "ready")
        self.on_state(h)
        if job is None or job.state != "running":
            return
        f = fate(msg.cause, stopping=bool(self.stopping()), retryable=False)
        if f is Fate.SUCCEED:
            self.store.set_progress(job.id, 1.0, None)
            self.set_state(job, "succeeded", "finished", result=msg.result or {})
        elif f is Fate.INTERRUPT:
            self.set_state(job, "interrupted", "the daemon is stopping", cause=C.DAEMON_STOPPING)
        elif f is Fate.CANCEL:
            self.set_state(job, "cancelled", msg.error or "cancelled", cause=msg.cause)
        else:
            self.set_state(job, "failed", "the job raised an error", cause=msg.cause,
                           error=msg.error or "unknown error")

    def on_death(self, h: ExecutorHandle, death: ExecutorDeath) -> None:
        """The executor of `h` ended (the supervisor's report): the job it ran meets its fate."""
        if h.job_id is None:
            return
        job = self.store.get(h.job_id)
        self.cancel_deadlines.pop(h.job_id, None)
        if job is None or job.state != "running":
            return
        kind = get_kind(job.kind)
        f = fate(death.cause, stopping=bool(self.stopping()), retryable=h.per_job and bool(kind and kind.resumable))
        if f is Fate.INTERRUPT:
            self.set_state(job, "interrupted", "the daemon is stopping", cause=C.DAEMON_STOPPING)
            return
        text = f"the executor for {h.slot.name} (pid {h.pid}) died while running the job: {death.reason}"
        self.job_log(job.id, text)
        if f is Fate.CANCEL:
            self.set_state(job, "cancelled", death.reason, cause=death.cause)
        elif not (f is Fate.RETRY and self._retry(job, death)):
            self.set_state(job, "failed", "executor died", cause=death.cause, error=text)

    def _retry(self, job: JobRow, death: ExecutorDeath) -> bool:
        """Requeue a job whose executor was lost, to resume from its checkpoint, at most ray.max_retries times
        (counted in its history: the interruptions whose cause was a lost executor); False when they are spent."""
        done = self.store.count_transitions(job.id, "interrupted", [c.value for c in LOST_EXECUTOR_CAUSES])
        limit = self.settings.ray.max_retries
        if done >= limit:
            self.job_log(job.id, f"not retried: it was retried {done} time(s) already (ray.max_retries {limit})")
            return False
        self.set_state(job, "interrupted", f"{RETRY_REASON} ({death.reason})", cause=death.cause)
        self.set_state(self.store.get(job.id), "queued", f"retry {done + 1} of {limit}")
        self.job_log(job.id, f"requeued (retry {done + 1} of {limit}): {death.reason}")
        return True


def _kind_devices(job: JobRow) -> str:
    kind = get_kind(job.kind)
    return kind.devices if kind else "any"
