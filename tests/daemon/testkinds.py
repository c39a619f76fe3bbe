"""A test-only job kind, `test.steps`, registered through the daemon's `plugins` setting.

It exercises the job machinery without torch or data: it counts steps, sleeping between them, checkpoints its step
to a file so an interrupted run resumes, and can be told to fail, to ignore cancel, or to resize a fake pool.
"""
from __future__ import annotations

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
    etas: list[float] | None = Field(None, description="eta_s reported at each step, in turn (the ETAs a training "
                                     "job's jumpy sample rates give)")
    progress_scale: float = Field(1.0, gt=0, le=1, description="report this share of the progress made (a job "
                                  "whose last report is below 1, as a training job's before it saves its model)")


def run(spec: StepsSpec, ctx) -> dict:
    ckpt = ctx.job_dir / "checkpoint.json"
    start = json.loads(ckpt.read_text())["step"] if (ctx.resume and ckpt.exists()) else 0
    workers = {"count": 1}
    ctx.on_control("workers", lambda args: workers.update(count=int(args["count"])) or dict(workers))
    ctx.log.info("counting from %d to %d (pid %d)", start, spec.steps, os.getpid())
    for step in range(start, spec.steps):
        if not spec.ignore_cancel:
            ctx.check_cancel()
        if spec.fail_at is not None and step == spec.fail_at:
            raise ValueError(f"asked to fail at step {step}")
        time.sleep(spec.step_s)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step + 1}))
        os.replace(tmp, ckpt)
        eta = spec.etas[step % len(spec.etas)] if spec.etas else None
        ctx.progress(spec.progress_scale * (step + 1) / spec.steps, f"step {step + 1}/{spec.steps}", eta_s=eta, step=step + 1)
    return {"steps": spec.steps, "resumed_from": start, "workers": workers["count"]}


register(JobKind(name="test.steps", spec=StepsSpec, runner="tests.daemon.testkinds:run", resumable=True,
                 doc="test-only: counts steps"))
