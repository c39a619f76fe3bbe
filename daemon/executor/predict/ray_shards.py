"""The shards of a sharded predict job as Ray tasks: the ShardRunner of the Ray backend.

    runner = RayShardRunner(*task_resources(device), log=ctx.log)   # in the job's executor, started by Ray
    result = predict_sharded(plan, shards=4, runner=runner, progress=..., should_stop=...)

The executor (a child of the Ray worker that runs the job's task, daemon/common/ray_task.py) finds the cluster
through SEISJOB_RAY_ADDRESS, which that task sets to its own cluster's GCS address, and submits one task per
inline range.
Each task loads the model file, maps the survey and writes its chunks into the ONE output in the job's prediction
folder, which every node sees (the shared home, docs/scale-out.md); chunks are recorded in progress.json under its
file lock, as with local shard processes. The runner reads that record for progress.

NOTE [stop and failure]
  - cancel: the runner creates `<out_dir>/shards.stop`; every shard checks it between batches and stops. Shards
    still running after SHARD_STOP_GRACE_S are cancelled with force (their workers die).
  - a shard that raises, or whose worker or node dies: its ObjectRef fails; the runner stops the others the same
    way and raises ShardError naming the shard, its inlines and Ray's error. Chunks already written stay recorded,
    so a retry (the daemon's, ray.max_retries) continues from them.
  - the executor itself dies (the job's task cancelled with force, its node lost): Ray ends the tasks this driver
    owns with it.
Each shard's task asks for what the job's own task asked for, custom resources (ray.resources_per_job) included; the
job's log names the node that ran each shard.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.executor.raytasks import connect, task_custom_resources, task_node, task_threads
from daemon.executor.predict.apply import ProgressCallback, StopCallback
from daemon.executor.predict.sharding import (SHARD_STOP_GRACE_S, ShardError, ShardLayout, ShardPlan, ShardRange,
                                     shard_failure)

POLL_S = 0.25
STOP_FILE = "shards.stop"


def ray_shard_main(plan: ShardPlan, shard: int, chunks: list[int], stop_path: str) -> dict:
    """Body of one shard's Ray task: predict `chunks` into the plan's outputs; stop when `stop_path` exists."""
    import torch

    from daemon.common import malloc
    from daemon.executor.predict.sharding import run_shard

    malloc.tune()
    torch.set_num_threads(task_threads())
    return run_shard(plan, shard, chunks, should_stop=Path(stop_path).exists) | {"node": task_node()}


@dataclass
class RayShardRunner:
    """Runs each shard as a Ray task asking for `num_cpus` CPUs and `num_gpus` GPUs (ray_ranks.task_resources)."""

    num_cpus: float
    num_gpus: float = 0.0
    log: logging.Logger | None = None   # the job's log: which node ran each shard

    def __call__(self, plan: ShardPlan, ranges: list[ShardRange], layout: ShardLayout,
                 progress: ProgressCallback | None, should_stop: StopCallback | None) -> bool:
        ray = connect()
        stop_file = Path(plan.out_dir) / STOP_FILE
        stop_file.unlink(missing_ok=True)  # a stop left by an earlier, cancelled attempt
        task = ray.remote(ray_shard_main)
        refs = {task.options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, resources=task_custom_resources(),
                             max_retries=0, name=f"seisd-shard-{r.index}").remote(plan, r.index, r.chunks,
                                                                                  str(stop_file)): r
                for r in ranges}
        try:
            return _watch(ray, refs, layout, Path(plan.out_dir), stop_file, progress, should_stop, self.log)
        finally:
            _stop_all(ray, list(refs), stop_file)
            stop_file.unlink(missing_ok=True)


def _watch(ray: Any, refs: dict[Any, ShardRange], layout: ShardLayout, out_dir: Path, stop_file: Path,
           progress: ProgressCallback | None, should_stop: StopCallback | None, log: logging.Logger | None) -> bool:
    """Wait for every shard task; relay progress from progress.json and a cancel through the stop file."""
    from daemon.executor.predict.outputs import ProgressRecord

    record, pending, stopped, t0 = ProgressRecord(out_dir / "progress.json"), list(refs), False, time.monotonic()
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        for ref in ready:
            result, r = _result(ray, ref, refs[ref]), refs[ref]
            if log is not None:
                log.info("shard %d (inlines %d-%d) ran on %s", r.index, *r.inlines, result.get("node", "?"))
        if should_stop is not None and not stopped and should_stop():
            stopped = True
            stop_file.touch()
        if progress is not None:
            ran = layout.inlines_of((record.load() or {}).get("done", [])) - layout.done_inlines
            layout.report(progress, ran, time.monotonic() - t0, f"{len(refs)} shards on Ray")
    return stopped


def _result(ray: Any, ref: Any, r: ShardRange) -> dict:
    """A finished shard's result, or ShardError for one that raised or whose worker was lost."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        text = str(exc).strip()
        cause = getattr(exc, "cause", None)
        why = f"{type(cause).__name__}: {cause}" if cause is not None else \
            f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        raise ShardError(shard_failure(r.index, r.inlines, f"its Ray task failed ({why[:500]})")) from None


def _stop_all(ray: Any, refs: list[Any], stop_file: Path) -> None:
    """Ask the shard tasks still running to stop, then cancel with force those that do not within the grace."""
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
    if not pending:
        return
    stop_file.touch()
    _, pending = ray.wait(pending, num_returns=len(pending), timeout=SHARD_STOP_GRACE_S)
    for ref in pending:
        ray.cancel(ref, force=True)
    if pending:
        ray.wait(pending, num_returns=len(pending), timeout=10)
