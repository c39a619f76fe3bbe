"""The job lifecycle: submit, dispatch to executors, cancel, and what becomes of a job when it ends or its executor
dies, retries included.

    queued -> running -> succeeded | failed | cancelled          interrupted -> queued (daemon restart, retry)

Every end of a running job goes through `fate(cause, ...)`, the one table of what a FailureCause (execproto) leads
to; the cause is recorded with the state change in the job's history (the store's `cause` column), which is also
what counts the retries already spent. Nothing here matches the wording of a reason.

NOTE on retries. A job whose executor was lost (killed, out of memory, hung; execproto.LOST_EXECUTOR_CAUSES) goes
back to the queue and runs again on a new executor when its kind allows it: a resumable kind (train, predict)
continues from its checkpoint or written chunks, an idempotent one (import, extract) starts over; at most
executor.max_job_retries times (ray.max_retries on Ray). Then it fails, its error naming every death attempt by
attempt. Other kinds (custom: a user's script may not be run twice) fail at the first death.

NOTE on ends the store cannot take (a full disk). A job's end is decided when its executor reports or dies, and
kept in `unrecorded` until the store takes it: `tick` tries again every UNRECORDED_RETRY_S, so `show` gives the
real end (with the job's own error, such as ENOSPC) within a second of the disk having room again. An executor
whose end was lost altogether is found by `reconcile`.

NOTE on what a job leaves half-made. An output a job has begun outside its folder (a prediction, recorded in the
job folder's execproto.UNFINISHED_OUTPUTS) is removed when the job finally fails or is cancelled, so a new job may
take its name; a retry or a daemon restart keeps it, to resume from it.
"""
from __future__ import annotations

import enum
import logging
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from client import protocol as P
from daemon.common import execproto as E
from daemon.common import home as layout
from daemon.common.execproto import LOST_EXECUTOR_CAUSES
from daemon.common.execproto import FailureCause as C
from daemon.common.settings import Settings
from daemon.kinds import get_kind
from daemon.server import scheduler
from daemon.server.backends import ExecutorBackend
from daemon.server.endings import Transition, deaths_error, remove_unfinished
from daemon.server.execlink import ExecutorLink
from daemon.server.records import CONTROL_TIMEOUT_S, Pending
from daemon.common.router import ReplyTo
from daemon.server.store import JobRow, JobStore, StoreError, SubmitKey
from daemon.server.supervisor import ExecutorDeath, ExecutorHandle, Supervisor
from daemon.server.timelimits import TimeLimits

log = logging.getLogger("seisd")

RETRY_REASON = "its executor was lost; requeued to resume from its last checkpoint or start over"
CANCEL_CAUSES = frozenset({C.CANCELLED, C.CANCEL_TIMEOUT, C.CANCELLED_BEFORE_START})
UNRECORDED_RETRY_S = 0.5   # how often state changes the store refused are tried again


class Fate(enum.Enum):
    """What becomes of a running job that ended."""

    SUCCEED = "succeeded"
    FAIL = "failed"
    CANCEL = "cancelled"
    INTERRUPT = "interrupted"   # back to the queue at the next start (the daemon is stopping)
    RETRY = "retry"             # back to the queue now, to resume from its checkpoint (while retries are left)


def fate(cause: C | None, *, stopping: bool, retryable: bool) -> Fate:
    """The one retry policy. `cause` None: the job succeeded. `retryable`: the job's kind resumes from checkpoints
    or is safe to run again; the number of retries is bounded apart (executor.max_job_retries, ray.max_retries)."""
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
        self.limits = TimeLimits()
        self.unrecorded: dict[int, list[Transition]] = {}   # state changes the store refused, oldest first
        self.store_error: str | None = None                 # the last refusal, for errors and logs
        self.next_flush = 0.0
        self.writes: dict[int, tuple[str, ...]] = {}   # queued and running jobs: what each writes (one writer)

    # -- records -----------------------------------------------------------------------------------------------

    def job_dir(self, job_id: int) -> Path:
        return layout.job_folder(self.home, job_id)

    def job_log(self, job_id: int, line: str) -> None:
        """A line from the daemon in the job's log (executors append to the same file); lost on a full disk."""
        d = self.job_dir(job_id)
        try:
            if d.is_dir():
                with open(d / "log", "a") as f:
                    f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} DAEMON {line}\n")
        except OSError as exc:
            log.warning("job %d: a line of its log could not be written (%s): %s", job_id, exc, line)

    def executor_note(self, h: ExecutorHandle, text: str) -> None:
        """What the supervisor noticed about the executor running a job (a busy silence), for the job's log."""
        log.info("executor for %s (pid %s): %s", h.slot.name, h.pid, text)
        if h.job_id is not None:
            self.job_log(h.job_id, f"the executor for {h.slot.name} (pid {h.pid}): {text}")

    def set_state(self, job: JobRow, state: str, reason: str | None, *, cause: C | None = None,
                  error: str | None = None, slot: str | None = None, result: dict[str, Any] | None = None) -> None:
        self.store.set_state(job.id, state, reason, cause=cause, error=error, slot=slot, result=result)
        try:  # the state is recorded; an event the store cannot keep (a full disk) must not make it look unrecorded
            self.publish(P.job_topic(job.id), P.EventType.JOB_STATE,
                         {"id": job.id, "state": state, "previous": job.state, "reason": reason, "error": error},
                         job_id=job.id)
        except StoreError as exc:
            log.error("job %d: its %s event could not be stored: %s", job.id, state, exc)

    def record(self, job_id: int, *steps: Transition) -> bool:
        """Record the job's state changes in order; those the store refuses wait in `unrecorded` and go in at the
        next `flush_unrecorded`. True when all are recorded now."""
        queue = self.unrecorded.setdefault(job_id, [])
        queue.extend(steps)
        while queue:
            step, job = queue[0], self.store.get(job_id)
            if job is None:
                break
            try:
                self.set_state(job, step.state, step.reason, cause=step.cause, error=step.error, result=step.result)
            except StoreError as exc:
                if steps:  # said once, when the change is first refused
                    self.job_log(job_id, f"{step.state} ({step.error or step.reason}), but the job store refused "
                                 f"the change: {exc}; it is recorded once the store can be written")
                self.store_error = str(exc)
                return False
            queue.pop(0)
        del self.unrecorded[job_id]
        return True

    def flush_unrecorded(self, now: float) -> None:
        """Try again what the store refused (see the NOTE above)."""
        if self.unrecorded and now >= self.next_flush:
            self.next_flush = now + UNRECORDED_RETRY_S
            for job_id in list(self.unrecorded):
                if not self.record(job_id):
                    return  # the store still refuses: the others would fail the same way
            self.store_error = None

    def end(self, job: JobRow, step: Transition) -> None:
        """The job ended for good: record it (when the store can), forget its limits, and, unless it succeeded,
        remove the outputs it left half-made."""
        self.limits.forget(job.id)
        self.cancel_deadlines.pop(job.id, None)
        if step.state != "succeeded":
            for line in remove_unfinished(self.home, self.job_dir(job.id)):
                self.job_log(job.id, line)
        self.record(job.id, step)

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
        """Jobs the store says are running but no executor runs and whose end is not waiting in `unrecorded`
        (their end was lost) are failed with that reason, so the queue never waits on a job that is gone."""
        running = {h.job_id for h in self.supervisor.handles.values() if h.job_id is not None}
        for job in self.store.list(states=["running"], limit=100_000):
            if job.id not in running and job.id not in self.unrecorded:
                why = self.store_error or "the job store was not writable, e.g. a full disk"
                self.end(job, Transition("failed", "lost", C.END_NOT_RECORDED, error="the job's end could not be "
                                         f"recorded ({why}); run it again"))

    def dispatch(self) -> None:
        if self.stopping() or not any(h.idle for h in self.supervisor.handles.values()):
            return
        queued = self.store.queued_in_order()
        if queued:  # NOTE [one writer] (daemon/server/scheduler.py)
            running = self.store.list(states=["running"], limit=100_000)
            # what each job writes is read from its spec once, not at every tick (the specs never change)
            self.writes = {j.id: self.writes[j.id] if j.id in self.writes else _writes(j) for j in (*queued, *running)}
            queued = scheduler.one_writer(queued, running, lambda j: self.writes[j.id])
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
        # an idempotent kind is told too: it may find its work done by an attempt that died before saying so
        resume = bool(kind and (kind.resumable or kind.idempotent) and job.attempts > 0)
        again = " (resuming)" if resume and kind.resumable else " (running again)" if resume else ""
        self.set_state(job, "running", f"started on {h.slot.name}{again}", slot=h.slot.name)
        self.limits.start(job.id, job.spec, time.monotonic())
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
        if job.id in self.unrecorded:  # it has ended, and the store has not taken its end yet: try now
            if not self.record(job.id):
                raise P.ProtocolError(P.ErrorCode.CONFLICT, f"job {job.id} has ended; its end is recorded once "
                                      f"the job store can be written ({self.store_error})")
            job = self.store.get(job.id) or job
        h = self._handle_of_job(job.id)
        if job.state in ("queued", "interrupted") or (job.state == "running" and h is None):
            # (running without an executor: its end could not be recorded; nothing runs it any more)
            self.end(job, Transition("cancelled", reason, C.CANCELLED))
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
        """Record what the store refused before; stop jobs past their time limit; kill the executors of cancelled
        jobs that did not stop within executor.cancel_grace_s."""
        self.flush_unrecorded(now)
        for job_id, limit in self.limits.due(now):
            job, h = self.store.get(job_id), self._handle_of_job(job_id)
            if job is not None and job.state == "running" and h is not None:
                self.limits.stopped.add(job_id)
                self.job_log(job_id, f"its time limit of {limit:g} s is reached: stopping it")
                self.cancel(job, f"its time limit (time_limit_s: {limit:g} s) was reached")
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
        if job is None or job.state != "running" or job.id in self.unrecorded:
            return
        cause = self._cause(job.id, msg.cause)
        f = fate(cause, stopping=bool(self.stopping()), retryable=False)
        if f is Fate.SUCCEED:
            try:
                self.store.set_progress(job.id, 1.0, None)
            except StoreError:
                pass  # the end below says it finished, recorded now or once the store takes it
            self.end(job, Transition("succeeded", "finished", result=msg.result or {}))
        elif f is Fate.INTERRUPT:
            self.limits.forget(job.id)
            self.record(job.id, Transition("interrupted", "the daemon is stopping", C.DAEMON_STOPPING))
        elif f is Fate.CANCEL:
            self.end(job, Transition("cancelled", msg.error or "cancelled", cause))
        elif cause is C.TIME_LIMIT:
            self.end(job, Transition("failed", "time limit", cause, error=self.limits.describe(job.id,
                                                                                                time.monotonic())))
        else:
            self.end(job, Transition("failed", "the job raised an error", cause, error=msg.error or "unknown error"))

    def _cause(self, job_id: int, cause: C | None) -> C | None:
        """A job stopped for its time limit ended as cancelled jobs do; its cause is the limit."""
        return C.TIME_LIMIT if cause in CANCEL_CAUSES and job_id in self.limits.stopped else cause

    def on_death(self, h: ExecutorHandle, death: ExecutorDeath) -> None:
        """The executor of `h` ended (the supervisor's report): the job it ran meets its fate."""
        if h.job_id is None:
            return
        job = self.store.get(h.job_id)
        self.cancel_deadlines.pop(h.job_id, None)
        if job is None or job.state != "running" or job.id in self.unrecorded:
            return
        kind = get_kind(job.kind)
        cause = self._cause(job.id, death.cause)
        f = fate(cause, stopping=bool(self.stopping()), retryable=bool(kind and (kind.resumable or kind.idempotent)))
        if f is Fate.INTERRUPT:
            self.limits.forget(job.id)
            self.record(job.id, Transition("interrupted", "the daemon is stopping", C.DAEMON_STOPPING))
            return
        text = f"the executor for {h.slot.name} (pid {h.pid}) died: {death.reason}"
        self.job_log(job.id, f"the executor for {h.slot.name} (pid {h.pid}) died while running the job: "
                     f"{death.reason}")
        if f is Fate.CANCEL:
            self.end(job, Transition("cancelled", death.reason, cause))
        elif cause is C.TIME_LIMIT:
            error = self.limits.describe(job.id, time.monotonic())
            self.end(job, Transition("failed", "time limit", cause, error=f"{error} ({death.reason})"))
        else:
            why_not = self._retry(job, h, Transition("interrupted", text, cause)) if f is Fate.RETRY else \
                f"{job.kind} jobs are neither resumable nor safe to run twice"
            if why_not is not None:
                self.job_log(job.id, f"not retried: {why_not}")
                self.end(job, Transition("failed", "executor died", cause,
                                         error=self._deaths(job, text, cause, why_not)))

    def _retry(self, job: JobRow, h: ExecutorHandle, lost: Transition) -> str | None:
        """Requeue a job whose executor was lost, to resume on a new one, at most executor.max_job_retries times
        (ray.max_retries for an executor of its own on Ray), counted in its history: the interruptions whose cause
        was a lost executor. None when requeued; why not otherwise."""
        done = self.store.count_transitions(job.id, "interrupted", [c.value for c in LOST_EXECUTOR_CAUSES])
        setting, limit = (("ray.max_retries", self.settings.ray.max_retries) if h.per_job else
                          ("executor.max_job_retries", self.settings.executor.max_job_retries))
        if done >= limit:
            return f"{setting} is {limit}" + (f", and the job was retried {done} time(s)" if done else "")
        self.limits.pause(job.id, time.monotonic())
        self.record(job.id, lost, Transition("queued", f"retry {done + 1} of {limit}: {RETRY_REASON}"))
        self.job_log(job.id, f"requeued (retry {done + 1} of {limit}): {lost.reason}")
        return None

    def _deaths(self, job: JobRow, text: str, cause: C | None, why_not: str) -> str:
        """A failed job's error after its executor died: every death, attempt by attempt, and why it stops."""
        return deaths_error(self.store.history(job.id), text, cause, why_not)


def _kind_devices(job: JobRow) -> str:
    kind = get_kind(job.kind)
    return kind.devices if kind else "any"


def _writes(job: JobRow) -> tuple[str, ...]:
    kind = get_kind(job.kind)
    return kind.writes_to(job.spec) if kind else ()
