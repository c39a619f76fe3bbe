"""A test-only job kind, `test.steps`, registered through the daemon's `plugins` setting.

It exercises the job machinery without torch or data: it counts steps, sleeping between them, checkpoints its step
to a file so an interrupted run resumes, and can be told to fail, to ignore cancel, or to resize a fake pool.

On its first attempt only (a resumed attempt goes on as usual), at step `at_step`, it can also misbehave the ways
an executor dies of: hold Python's GIL in one C call for `hold_gil_s` seconds, busy (computing, as np.unique on a
huge picks file does) or, with `gil_idle`, asleep (a native call blocked with the GIL held: a real hang); or take
`alloc_mb` MiB of memory (touched, so it is really used), for the out-of-memory killer. From `at_step` on, its
first attempt can also go slowly (`slow_step_s`): a window for a test to stop or kill it mid-job that a loaded
machine cannot close, while the resumed attempt goes at `step_s`.
"""
from __future__ import annotations

import ctypes
import json
import os
import time

from pydantic import Field

from daemon.kinds import JobKind, JobSpec, register


class StepsSpec(JobSpec):
    steps: int = Field(10, ge=1, le=100_000)
    step_s: float = Field(0.05, ge=0, le=60)
    fail_at: int | None = Field(None, description="raise an error at this step")
    ignore_cancel: bool = False
    at_step: int = Field(0, ge=0, description="the step at which hold_gil_s or alloc_mb act (first attempt only)")
    hold_gil_s: float = Field(0, ge=0, le=600, description="hold the GIL this long in one C call")
    gil_idle: bool = Field(False, description="hold the GIL asleep (a hang) rather than computing")
    alloc_mb: int = Field(0, ge=0, le=8192, description="take this much memory and keep it")
    slow_step_s: float | None = Field(None, ge=0, le=60, description="the step time from at_step on (first "
                                      "attempt only; a resumed attempt goes at step_s)")
    etas: list[float] | None = Field(None, description="eta_s reported at each step, in turn (the ETAs a training "
                                     "job's jumpy sample rates give)")
    progress_scale: float = Field(1.0, gt=0, le=1, description="report this share of the progress made (a job "
                                  "whose last report is below 1, as a training job's before it saves its model)")
    writes: list[str] = Field(default_factory=list, description="what it says it writes (the kinds' `writes` hook: "
                              "jobs that write one of the same never run at once)")


def hold_gil(seconds: float, idle: bool) -> None:
    """One C call that keeps the GIL for about `seconds`: libc sleep() through ctypes.PyDLL (which never releases
    the GIL) when idle, else sum() over a range, which runs in C without returning to the interpreter loop."""
    if idle:
        ctypes.PyDLL(None).sleep(max(1, round(seconds)))
        return
    # The fastest of five short timings: one taken while another process had the CPU overstated the time per item,
    # and the hold then ended too early to be noticed (a fresh-clone CI run held 2.4 s of 6); holding longer than
    # asked is harmless.
    timings = []
    for _ in range(5):
        t0 = time.perf_counter()
        sum(range(200_000))
        timings.append(time.perf_counter() - t0)
    per_item = max(1e-9, min(timings) / 200_000)
    sum(range(int(seconds / per_item)))


def run(spec: StepsSpec, ctx) -> dict:
    ckpt = ctx.job_dir / "checkpoint.json"
    start = json.loads(ckpt.read_text())["step"] if (ctx.resume and ckpt.exists()) else 0
    workers = {"count": 1}
    ctx.on_control("workers", lambda args: workers.update(count=int(args["count"])) or dict(workers))
    ctx.log.info("counting from %d to %d (pid %d)", start, spec.steps, os.getpid())
    hog: list[bytes] = []
    for step in range(start, spec.steps):
        if not spec.ignore_cancel:
            ctx.check_cancel()
        if spec.fail_at is not None and step == spec.fail_at:
            raise ValueError(f"asked to fail at step {step}")
        if step == spec.at_step and ctx.attempt == 1:
            if spec.hold_gil_s:
                ctx.log.info("holding the GIL for %g s (%s)", spec.hold_gil_s, "asleep" if spec.gil_idle else "busy")
                hold_gil(spec.hold_gil_s, spec.gil_idle)
            for _ in range(spec.alloc_mb // 16):
                hog.append(b"\x01" * (16 << 20))
        slow = spec.slow_step_s is not None and step >= spec.at_step and ctx.attempt == 1
        time.sleep(spec.slow_step_s if slow else spec.step_s)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step + 1}))
        os.replace(tmp, ckpt)
        eta = spec.etas[step % len(spec.etas)] if spec.etas else None
        ctx.progress(spec.progress_scale * (step + 1) / spec.steps, f"step {step + 1}/{spec.steps}", eta_s=eta,
                     step=step + 1)
    return {"steps": spec.steps, "resumed_from": start, "workers": workers["count"]}


register(JobKind(name="test.steps", spec=StepsSpec, runner="tests.daemon.testkinds:run", resumable=True,
                 writes=lambda s: tuple(s.writes), doc="test-only: counts steps"))
