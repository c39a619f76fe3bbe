"""Jobs' time limits (the job file's `time_limit_s`): when each running job must stop, and which were stopped for it.

The limit bounds the job's running time over its attempts in this daemon's life: a retry after a lost executor goes
on with what is left of it; a daemon restart gives the job its whole limit again (the daemon does not know how long
a job ran before it was killed with the daemon). Time spent queued never counts. The job lifecycle asks a job past
its deadline to stop as a cancel does (its executor is killed after executor.cancel_grace_s if it does not stop),
and records the end as failed with cause time_limit (daemon/server/lifecycle.py).
"""
from __future__ import annotations

from typing import Any


class TimeLimits:
    def __init__(self) -> None:
        self.limit: dict[int, float] = {}       # job -> its time_limit_s
        self.started: dict[int, float] = {}     # job -> when its running attempt started (monotonic)
        self.spent: dict[int, float] = {}       # job -> running seconds of its earlier attempts
        self.stopped: set[int] = set()          # jobs asked to stop for their limit

    def start(self, job_id: int, spec: dict[str, Any], now: float) -> None:
        """An attempt of the job starts running; a job without `time_limit_s` is not tracked."""
        limit = spec.get("time_limit_s")
        if limit:
            self.limit[job_id], self.started[job_id] = float(limit), now

    def pause(self, job_id: int, now: float) -> None:
        """The attempt ended and the job is requeued to run again: its running time so far is kept."""
        if job_id in self.started:
            self.spent[job_id] = self.spent.get(job_id, 0.0) + now - self.started.pop(job_id)
        self.stopped.discard(job_id)

    def due(self, now: float) -> list[tuple[int, float]]:
        """(job, limit) of running jobs past their limit that were not yet asked to stop."""
        return [(j, lim) for j, lim in self.limit.items() if j in self.started and j not in self.stopped
                and self.spent.get(j, 0.0) + now - self.started[j] >= lim]

    def ran(self, job_id: int, now: float) -> float:
        """Running seconds of the job over its attempts, this one included."""
        return self.spent.get(job_id, 0.0) + (now - self.started[job_id] if job_id in self.started else 0.0)

    def describe(self, job_id: int, now: float) -> str:
        """The error of a job stopped for its limit."""
        return (f"the job ran past its time limit (time_limit_s: {self.limit.get(job_id, 0.0):g} s) and was "
                f"stopped after {self.ran(job_id, now):.1f} s of running")

    def forget(self, job_id: int) -> None:
        """The job ended for good (or the daemon interrupts it)."""
        for d in (self.limit, self.started, self.spent):
            d.pop(job_id, None)
        self.stopped.discard(job_id)
