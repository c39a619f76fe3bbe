"""Supervisor: starts the executors through a backend, watches them, and restarts the ones that die.

It never blocks: `poll()` is called from the daemon's loop and only looks (ExecutorProcess.poll, clocks). What a
death means for a job is the job lifecycle's business (daemon/server/lifecycle.py); the supervisor reports it through
`on_death(handle, death)`, an ExecutorDeath: its enumerated cause (execproto.FailureCause) and the reason in words.
WHERE an executor runs is the backend's business (daemon/server/backends/): the local backend keeps one long-lived
executor per device slot; the Ray backend starts one per job, on a node Ray picks, and it exits after the job.

NOTE on the ways an executor ends:
  - exits or is killed (SIGKILL, segfault in a native library, a lost Ray worker or node): poll() sees it (cause
    executor_died; out_of_memory for a SIGKILL we did not send while the kernel's OOM killer struck, see
    daemon/server/vitals.py); the job it ran is requeued to resume on a new executor, or fails (lifecycle.fate); a
    long-lived executor is started again after `restart_backoff_s`, a per-job one leaves its slot free;
  - a per-job executor that exits cleanly after reporting `done` just frees its slot; one that exits cleanly with its
    job's `done` still missing gets DONE_GRACE_S for that message to arrive, then counts as died;
  - hangs: silent for `heartbeat_timeout_s` and, looked at in /proc, stopped or using no CPU all that time (cause
    hung; a silent executor that uses CPU is busy in a call that holds the GIL, and is left alone: vitals.py); or
    no hello within the backend's start timeout (cause no_hello): it is killed, then handled as above;
  - a cancelled job that does not stop within `cancel_grace_s`: the lifecycle asks for a kill (`kill(slot, death)`,
    cause cancel_timeout; cancelled_before_start for an executor not started yet);
  - the daemon stops: `stop_all()` asks each to exit, then kills what is left. If the daemon is killed instead, the
    executors die with it (PR_SET_PDEATHSIG, see daemon/executor/process.py; on Ray, with the worker that started them).
"""
from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from daemon.common.devices import DeviceSlot, write_job_devices
from daemon.common.execproto import FailureCause, RunJob
from daemon.server import scheduler, vitals
from daemon.server.backends import Ended, ExecutorBackend, ExecutorProcess

log = logging.getLogger("seisd.supervisor")

DONE_GRACE_S = 2.0   # a per-job executor's `done` may arrive just after its process is seen to have ended


@dataclass(frozen=True)
class ExecutorDeath:
    """Why an executor ended: the enumerated cause the job lifecycle decides on, and the reason in words that the
    job's history and log record."""

    cause: FailureCause
    reason: str


@dataclass
class ExecutorHandle:
    slot: DeviceSlot
    proc: ExecutorProcess | None = None
    pid: int | None = None
    state: str = "stopped"            # starting, ready, busy, dead, stopped
    job_id: int | None = None
    started: float = 0.0
    last_seen: float = 0.0
    restart_at: float = 0.0
    killed_for: ExecutorDeath | None = None    # why we killed it (reported once poll sees it gone)
    restarts: int = 0
    launches: int = 0                 # per-job executors: which launch may speak for the slot (its identity)
    per_job: bool = False
    stream_direct: str | None = None   # where its stream thread takes stream.apply straight from local clients
    threads: int | None = None        # the CPU threads the executor computes with, from its hello
    pending_run: RunJob | None = None   # the run message a per-job executor gets after its hello
    held_by: tuple[str, int] | None = None   # (first slot, job): lent to a job running there, busy meanwhile
    ended_at: float | None = None
    cpu_mark: tuple[float, float] | None = None   # (when, CPU seconds) of the last look at a local executor
    busy_since: float | None = None   # silent since then but using CPU: busy, not hung (see vitals.py)

    @property
    def idle(self) -> bool:
        return self.state == "ready" and self.job_id is None and self.held_by is None

    @property
    def identity(self) -> str:
        """The executor's socket identity: the slot name, and for per-job executors the launch number, so a
        message from an executor of an earlier job on the slot is never taken for the current one's."""
        return f"{self.slot.name}#{self.launches}" if self.per_job else self.slot.name

    def new_process(self, proc: ExecutorProcess | None) -> None:
        """The slot's executor process is now `proc` (None: a per-job executor is gone). What was learnt from the
        one before (its pid, stream endpoint, threads, CPU readings) goes with it."""
        self.proc, self.pid = proc, (proc.pid if proc is not None else None)
        self.stream_direct, self.threads = None, None
        self.cpu_mark, self.busy_since = None, None

    def describe(self) -> dict:
        return {"slot": self.slot.name, "kind": self.slot.kind, "description": self.slot.description,
                "executor_pid": self.pid, "state": self.state, "job": self.job_id, "restarts": self.restarts,
                "threads": self.threads}


class Supervisor:
    def __init__(self, slots: list[DeviceSlot], backend: ExecutorBackend, heartbeat_timeout_s: float,
                 restart_backoff_s: float, on_death: Callable[[ExecutorHandle, ExecutorDeath], None],
                 on_state: Callable[[ExecutorHandle], None],
                 on_note: Callable[[ExecutorHandle, str], None] = lambda h, text: None):
        self.backend = backend
        self.handles = {s.name: ExecutorHandle(s, per_job=not backend.long_lived) for s in slots}
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.restart_backoff_s = restart_backoff_s
        self.on_death = on_death
        self.on_state = on_state
        self.on_note = on_note   # a line for the log of the job the executor runs (a busy silence ...)
        self.oom = vitals.OomCounter()

    def start_all(self) -> None:
        for h in self.handles.values():
            if h.per_job:
                h.state = "ready"  # nothing runs until a job comes
                self.on_state(h)
            else:
                self._start(h)

    def _start(self, h: ExecutorHandle, job: RunJob | None = None) -> None:
        h.launches += 1
        h.new_process(self.backend.launch(h.slot, h.identity, job))
        h.state, h.killed_for, h.ended_at = "starting", None, None
        if not h.per_job and h.held_by is None:
            h.job_id = None
        h.started = h.last_seen = time.monotonic()
        log.info("executor for %s launched (%s)%s", h.slot.name, self.backend.name,
                 f", pid {h.pid}" if h.pid else "")
        self.on_state(h)

    def placements(self, queued: list[Any], kind_devices: Callable[[Any], str],
                   wants: Callable[[Any], int] = lambda job: 1) -> list[tuple[Any, list[ExecutorHandle]]]:
        """The queued jobs (in order) to start now, each with its slots' handles: the first runs the job, the
        others (a data-parallel job's further GPUs, `wants`) are held for it (scheduler.assign, all or none)."""
        free = [h.slot.name for h in self.handles.values() if h.idle]
        if not free or not queued:
            return []
        by_id = {job.id: job for job in queued}
        slot_of = {h.slot.name: h.slot for h in self.handles.values()}
        pairs = scheduler.assign(queued, free, {job.id: kind_devices(job) for job in queued},
                                 {job.id: max(1, int(wants(job))) for job in queued},
                                 accepts=lambda s, w, k: self.backend.accepts(slot_of[s], w, k))
        return [(by_id[jid], [self.handles[s] for s in slots]) for jid, slots in scheduler.groups(pairs).items()]

    def hold(self, h: ExecutorHandle, helpers: list[ExecutorHandle], job_id: int,
             job_dir: Path | None = None) -> list[int]:
        """Lend `helpers` to the job starting on `h`: they show busy with that job until it leaves `h`.
        Returns the CUDA indices of all the job's devices, `h`'s first; with `job_dir`, records them there
        (devices.json) for the job's ranks: rank r runs on the r-th (daemon/executor/training/distributed.py)."""
        for o in helpers:
            o.job_id, o.state, o.held_by = job_id, "busy", (h.slot.name, job_id)
            self.on_state(o)
        indices = [s.index for s in (h.slot, *(o.slot for o in helpers)) if s.index is not None]
        if job_dir is not None and helpers:
            write_job_devices(job_dir, indices)
        return indices

    def _release_held(self) -> None:
        """Slots lent to a job that has left its first slot are free again."""
        for o in self.handles.values():
            if o.held_by is not None and self.handles[o.held_by[0]].job_id != o.held_by[1]:
                o.job_id, o.held_by = None, None
                if o.state == "busy":  # its idle executor (or, per job, none) takes jobs again
                    o.state = "ready"
                self.on_state(o)

    def begin_job(self, h: ExecutorHandle, run: RunJob, send: Callable[[ExecutorHandle, RunJob], None]) -> None:
        """Hand a run message to the slot: at once to a long-lived executor, after its hello to a per-job one."""
        if h.per_job:
            h.pending_run = run
            self._start(h, run)
        else:
            send(h, run)

    def hello(self, h: ExecutorHandle) -> RunJob | None:
        """An executor said hello: returns the run message it is to get now (per-job executors), if any."""
        run, h.pending_run = h.pending_run, None
        h.state = "busy" if run is not None or h.held_by is not None else "ready"
        return run

    def seen(self, identity: str, pid: int | None) -> ExecutorHandle | None:
        """A message arrived from an executor; returns its handle, or None when it is from a dead incarnation."""
        name, _, launch = identity.partition("#")
        h = self.handles.get(name)
        if h is None or h.state in ("dead", "stopped") or h.proc is None or launch != (
                str(h.launches) if h.per_job else ""):
            return None
        if h.pid is None and pid is not None:
            h.pid = h.proc.pid = pid  # a Ray executor's pid is learnt from its first message
        if pid is not None and pid != h.pid:
            return None
        now = time.monotonic()
        if h.busy_since is not None:
            self.on_note(h, f"heard from again after {now - h.busy_since:.0f} s of busy silence")
            h.busy_since = None
        h.last_seen = now
        if not h.per_job and (h.cpu_mark is None or now - h.cpu_mark[0] >= 1.0):
            seen = vitals.look(h.pid)
            h.cpu_mark = (now, seen.cpu_s) if seen else None
        return h

    def kill(self, slot: str, why: ExecutorDeath) -> None:
        h = self.handles[slot]
        if h.proc is not None and h.proc.poll() is None:
            h.killed_for = why
            h.proc.kill()

    def poll(self) -> None:
        now = time.monotonic()
        self.oom.sample(now)
        self._release_held()
        for h in self.handles.values():
            if h.state == "dead":
                if now >= h.restart_at:
                    h.restarts += 1
                    self._start(h)
                continue
            if h.proc is None or h.state == "stopped":
                continue
            ended = h.proc.poll()
            if ended is None:
                if h.state == "starting" and now - h.last_seen > self.backend.start_timeout_s:
                    self.kill(h.slot.name, ExecutorDeath(FailureCause.NO_HELLO,
                                                         f"no hello for {now - h.last_seen:.0f} s"))
                elif h.state != "starting" and now - h.last_seen > self.heartbeat_timeout_s:
                    self._silent(h, now)
                continue
            if h.per_job and ended.code == 0 and h.killed_for is None:
                if h.job_id is None or h.state == "ready":
                    self._free(h)
                    continue
                h.ended_at = h.ended_at or now
                if now - h.ended_at < DONE_GRACE_S:
                    continue
            self._died(h, ended, now)

    def _silent(self, h: ExecutorHandle, now: float) -> None:
        """No word from the executor for heartbeat_timeout_s: kill it if it is hung, leave it if it is busy (the
        rule and why: daemon/server/vitals.py)."""
        silence = now - h.last_seen
        if h.busy_since is not None and h.cpu_mark is not None and now - h.cpu_mark[0] < 1.0:
            return  # found busy less than a second ago
        seen = None if h.per_job else vitals.look(h.pid)   # a per-job (Ray) executor may be on another node
        if seen is None:
            self.kill(h.slot.name, ExecutorDeath(FailureCause.HUNG, f"hung: no heartbeat for {silence:.0f} s"))
            return
        if seen.stopped:
            self.kill(h.slot.name, ExecutorDeath(FailureCause.HUNG, f"hung: no heartbeat for {silence:.0f} s, the "
                                                 f"process is stopped ({seen.describe()})"))
            return
        if h.cpu_mark is None:
            h.cpu_mark = (now, seen.cpu_s)   # nothing to compare with yet: decide after another timeout
            return
        since, cpu = h.cpu_mark
        used, window = seen.cpu_s - cpu, now - since
        if window > 0 and used >= vitals.BUSY_CPU_SHARE * window:
            h.cpu_mark = (now, seen.cpu_s)
            if h.busy_since is None:
                h.busy_since = h.last_seen
                self.on_note(h, f"no heartbeat for {silence:.0f} s, but the executor used {used:.1f} s of CPU in "
                             f"the last {window:.0f} s: busy, not hung (a long call that holds Python's GIL keeps its "
                             "heartbeat thread waiting)")
        elif window >= self.heartbeat_timeout_s:
            self.kill(h.slot.name, ExecutorDeath(FailureCause.HUNG, f"hung: no heartbeat for {silence:.0f} s and "
                                                 f"no CPU used in the last {window:.0f} s ({seen.describe()})"))

    def _death_of(self, ended: Ended) -> ExecutorDeath:
        """How an executor we did not kill died; a SIGKILL while the kernel's OOM killer struck is out of memory."""
        if ended.code == -signal.SIGKILL:
            rose = self.oom.rose()
            if rose is not None:
                return ExecutorDeath(FailureCause.OUT_OF_MEMORY, f"{ended.reason}: out of memory (the kernel's "
                                     f"out-of-memory killer struck just then: /proc/vmstat oom_kill {rose[0]} -> "
                                     f"{rose[1]})")
        return ExecutorDeath(FailureCause.EXECUTOR_DIED, ended.reason)

    def _died(self, h: ExecutorHandle, ended: Ended, now: float) -> None:
        death = h.killed_for or self._death_of(ended)
        log.warning("executor for %s (pid %s) ended: %s", h.slot.name, h.pid, death.reason)
        h.state, h.restart_at = "dead", now + self.restart_backoff_s
        if h.held_by is not None:  # a lent slot's own idle executor: restarted, the job it is lent to runs on
            self.on_state(h)
            return
        self.on_death(h, death)
        if h.per_job:
            h.restarts += 1
            self._free(h)
            return
        h.job_id = None
        self.on_state(h)

    def _free(self, h: ExecutorHandle) -> None:
        """A per-job executor is gone: its slot takes the next job."""
        h.new_process(None)   # the next job's executor says its own pid and threads
        h.job_id, h.pending_run, h.state = None, None, "ready"
        self.on_state(h)

    def stop_all(self, grace_s: float, send_exit: Callable[[ExecutorHandle], None]) -> None:
        live = [h for h in self.handles.values() if h.proc is not None and h.proc.poll() is None]
        for h in live:
            send_exit(h)
        deadline = time.monotonic() + grace_s
        for h in live:
            if not h.proc.wait(deadline - time.monotonic()):
                h.proc.kill()
                h.proc.wait(5.0)
            h.state = "stopped"
        for h in self.handles.values():
            h.state = "stopped"

    def devices(self) -> list[dict]:
        """Every slot and its executor, as `status` and `devices` show them."""
        return [h.describe() for h in self.handles.values()]
