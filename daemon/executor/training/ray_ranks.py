"""Data-parallel ranks as Ray tasks: ranks 1..N-1 of a train job whose executor runs on the Ray backend.

Rank 0 stays the job's executor (it owns the job's events, controls, cancel, checkpoints and model file, as in
daemon/executor/training/distributed.py); the other ranks are Ray tasks, each asking for what the job's own task
asked for (SEISJOB_RAY_CPUS / SEISJOB_RAY_GPUS, set by the Ray backend when it launches the job; task_resources), on
whichever node Ray picks. They run our own rank function and meet rank 0 through the file rendezvous in the job
folder, on the shared home; then Gloo (CPU) or NCCL (GPU) connects them directly. Why not Ray Train (TorchTrainer):
it runs every rank, rank 0 too, in its own worker actors and sets up the process group itself, so the job's context
would have to be relayed from a worker to the executor; it also needs ray[train] (pandas, pyarrow). Our ranks need
neither.

NOTE [failure]
  `RayRank` answers like a multiprocessing.Process (exitcode, is_alive, join, kill), so RankGroup watches Ray
  ranks exactly as spawned ones: a rank whose task raised or whose worker or node died has exit code 1 and its
  error; rank 0's next collective fails; the job fails naming the rank. Rank tasks are owned by the executor: when
  it dies (its task cancelled with force, its node lost) Ray ends them too. Each rank task runs in a fresh worker
  (max_calls=1): a process group, threads and shared memory never outlive the rank.
"""
from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any, Callable

from daemon.executor.training.group import leave_group
from daemon.executor.raytasks import connect, task_custom_resources, task_node, task_resources, task_threads


def ray_rank_main(job: Any, rank: int, train_share: Callable[..., None], log: logging.Logger) -> None:
    """Body of one rank's Ray task: train the rank's share in lockstep with rank 0 (`train_share`, handed in by
    distributed.py, which starts the ranks: so this module does not import it); log to rank<r>.log."""
    from daemon.common import malloc

    malloc.tune()

    handler = logging.FileHandler(Path(job.job_dir) / f"rank{rank}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    device = "cuda:0" if str(job.device).startswith("cuda") else "cpu"  # Ray shows the task its GPUs from cuda:0
    threads = task_threads()
    log.info("rank %d on %s, pid %d, %s, %d threads", rank, task_node(), os.getpid(), device, threads)
    finished = False
    try:
        train_share(job, rank, device=device, threads=threads)
        finished = True
    except BaseException:
        log.error("rank %d failed:\n%s", rank, traceback.format_exc())
        raise
    finally:
        leave_group(finished)
        log.removeHandler(handler)
        handler.close()


class RayRank:
    """A rank's Ray task, seen as a process: exitcode None while it runs, 0 when it finished, 1 when it failed."""

    def __init__(self, ray: Any, ref: Any) -> None:
        self.ray, self.ref = ray, ref
        self.error: str | None = None
        self._exitcode: int | None = None

    @property
    def exitcode(self) -> int | None:
        if self._exitcode is None:
            ready, _ = self.ray.wait([self.ref], num_returns=1, timeout=0)
            if ready:
                try:
                    self.ray.get(self.ref)
                    self._exitcode = 0
                except self.ray.exceptions.RayError as exc:
                    self.error, self._exitcode = f"{type(exc).__name__}: {str(exc)[:1000]}", 1
        return self._exitcode

    def is_alive(self) -> bool:
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        self.ray.wait([self.ref], num_returns=1, timeout=None if timeout is None else max(0.0, timeout))

    def kill(self) -> None:
        if self.exitcode is None:
            self.ray.cancel(self.ref, force=True)


def start_ray_ranks(job: Any, train_share: Callable[..., None], log: logging.Logger) -> list[RayRank]:
    """Submit ranks 1..world-1 of `job` as Ray tasks; they wait for rank 0 at the rendezvous."""
    ray = connect()
    cpus, gpus = task_resources(job.device)
    task = ray.remote(max_calls=1)(ray_rank_main)
    return [RayRank(ray, task.options(num_cpus=cpus, num_gpus=gpus, resources=task_custom_resources(),
                                      max_retries=0, name=f"seisd-rank-{rank}").remote(job, rank, train_share, log))
            for rank in range(1, job.world)]
