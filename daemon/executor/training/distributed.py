"""Data-parallel training: one train job over N ranks with torch.distributed (Gloo on CPUs, NCCL on GPUs).

Rank 0 is the executor's own process: it owns the job context (events, controls, cancel), the checkpoints,
summary.h5, TensorBoard and the model file. Ranks 1..N-1 are spawned by rank 0 on the same machine
(`RankGroup`) and report only through it; for an executor on the Ray backend they are Ray tasks instead, on any
node (daemon/executor/training/ray_ranks.py), meeting rank 0 through the same file rendezvous on the shared home.

How the batch is shared: the global batch B of step k is the deterministic batch k of the stream (seed, epoch, k);
rank r makes only rows [r*B/N, (r+1)*B/N) of it (BatchRecipe.rows, with its own worker pool). Each rank computes
the sum of its labelled samples' losses divided by the GLOBAL labelled count, and the gradients are summed over the
ranks, so the step equals the single-process step on the whole batch (up to float summation order). The label
count is exchanged before the forward pass, in the same collective that relays rank 0's controls.

NOTE [controls]
  Cancel, stop-after-epoch and the worker count arrive at rank 0 only (executor I/O thread). Every step each
  rank contributes [labelled, cancel, stop, workers] to one all-reduce (sum; only rank 0 sets the last three), so
  all ranks see the same flags after the same step and leave their loops together. A rank that acted on a flag
  its peers had not seen would wait forever in the next collective.

NOTE [batch norm and dropout]
  Batch statistics are per rank (B/N rows) unless the model's BatchNorm layers are SyncBatchNorm, which torch
  supports on CUDA only: on CUDA the runner converts them; on CPU they stay per rank, so a model with batch norm
  trains close to, not exactly like, one process (docs/training.md gives the tolerance). Running statistics are
  averaged over the ranks at every epoch end, before validation, so every rank validates the same model and
  reaches the same early-stopping decision. Dropout masks come from each rank's own generator.

NOTE [failure]
  A rank that dies closes its Gloo connections: the others' next collective raises, the job fails, and rank 0
  ends the remaining ranks and names the dead one with the end of its log (jobs/<id>/rank<r>.log). Spawned ranks
  arm PR_SET_PDEATHSIG, so they die with the executor. Collectives have a timeout (COLLECTIVE_TIMEOUT_S) as the
  last line against a hang.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from daemon.common.devices import threads_each
from daemon.executor.training.group import leave_group
from daemon.kinds.train_spec import TrainSpec

COLLECTIVE_TIMEOUT_S = 600.0  # longer than any validation + preview + checkpoint that rank 0 does alone
JOIN_TIMEOUT_S = 30.0
START_TIMEOUT_S = 120.0

log = logging.getLogger("seisd.training")


class DistributedError(RuntimeError):
    """A data-parallel run that cannot start or lost a rank; the message names the cause and the fix."""


def rank_rows(batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [a, b) of the global batch that rank `rank` of `world` trains on."""
    if batch_size % world:
        raise DistributedError(f"data.batch_size {batch_size} does not split over {world} ranks; "
                               f"use a multiple of {world}")
    share = batch_size // world
    return rank * share, (rank + 1) * share


def resolve_backend(backend: str, device: str) -> str:
    """'auto' -> nccl for CUDA devices, gloo otherwise; nccl without CUDA is refused with the fix."""
    cuda = str(device).startswith("cuda")
    if backend == "auto":
        return "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise DistributedError("train.distributed.backend: nccl needs CUDA devices; use gloo (or auto) on CPU")
    return backend


def rank_visible_devices(job_dir: str | Path, device: str, world: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each rank: with the devices the job's slots hold (devices.json, one per rank, the
    executor's own first), rank r sees only the r-th and uses it as cuda:0; otherwise None (inherit the
    executor's, rank r on cuda:r)."""
    from daemon.common.devices import read_job_devices

    held = read_job_devices(Path(job_dir)) if str(device).startswith("cuda") else []
    if not held:
        return [None] * world
    if len(held) < world:
        raise DistributedError(f"train.distributed.world_size {world} needs {world} CUDA devices; the job holds "
                               f"{len(held)} ({held})")
    return [str(i) for i in held[:world]]


def rank_device(device: str, rank: int) -> str:
    """CUDA: one rank per visible device (rank r on cuda:r); CPU: every rank on the CPU."""
    if not str(device).startswith("cuda"):
        return "cpu"
    count = torch.cuda.device_count()
    if rank >= count:
        raise DistributedError(f"train.distributed.world_size needs one CUDA device per rank; this executor sees "
                               f"{count} (CUDA_VISIBLE_DEVICES); lower world_size or give the executor more devices")
    return f"cuda:{rank}"


class RankSync:
    """The collectives of one rank: label counts and controls, gradients, batch-norm buffers."""

    def __init__(self, rank: int, world: int, device: str,
                 local_flags: Callable[[], tuple[bool, bool, int]] | None = None,
                 on_workers: Callable[[int], None] | None = None) -> None:
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        self.local_flags = local_flags  # rank 0: (cancelled, stop_after_epoch, worker count wanted or 0)
        self.on_workers = on_workers  # ranks > 0: resize the rank's pool when rank 0's count changes
        self.cancel = self.stop_after_epoch = False
        self.workers = 0

    def exchange(self, labelled: int) -> int:
        """All-reduce this rank's labelled count with rank 0's control flags; returns the global count."""
        cancel, stop, workers = self.local_flags() if self.local_flags else (False, False, 0)
        t = torch.tensor([labelled, int(cancel), int(stop), int(workers)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t)
        total, cancel_n, stop_n, workers_n = (int(v) for v in t.cpu())
        self.cancel, self.stop_after_epoch = bool(cancel_n), bool(stop_n)
        if workers_n and workers_n != self.workers:
            self.workers = workers_n
            if self.on_workers is not None:
                self.on_workers(workers_n)
        return total

    def reduce_gradients(self, model: nn.Module, loss_share: torch.Tensor) -> torch.Tensor:
        """Sum every gradient over the ranks in one flat all-reduce; returns the summed loss (the global loss)."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss_share.reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[-1]

    def average_buffers(self, model: nn.Module) -> None:
        """Average floating-point buffers (batch-norm running statistics) over the ranks."""
        for b in model.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(self.world)

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Rank 0's weights and buffers to every rank: all start from the very same model."""
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when any rank says True (all ranks call it at the same point of the run)."""
        t = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def controls(self) -> tuple[Callable[[], bool], Callable[[], bool]]:
        """(should_stop, stop_after_epoch) for TrainControl: the flags as all ranks saw them at the last step."""
        return (lambda: self.cancel), (lambda: self.stop_after_epoch)


@dataclass
class RankJob:
    """What a spawned rank needs to train its share; picklable (it travels to the rank once)."""

    spec: TrainSpec  # the job's spec, its train section as rank 0 resolved it (resume, init_from in the home)
    n_classes: int
    recipe: Any  # the full BatchRecipe; each rank takes its rows
    val: list[tuple[torch.Tensor, torch.Tensor]]
    n_workers: int
    worker_nice: int
    job_dir: str
    owner_pid: int | None
    device: str
    backend: str
    init_file: str

    @property
    def world(self) -> int:
        return self.spec.train.distributed.world_size


def share_recipe(recipe: Any, rank: int, world: int) -> Any:
    """The rank's recipe: the same batches, only its rows."""
    return dataclasses.replace(recipe, rows=rank_rows(recipe.batch_size, rank, world))


def build_rank_model(job: RankJob, device: str) -> nn.Module:
    """The model exactly as rank 0 builds it (same seed); SyncBatchNorm on CUDA."""
    from daemon.executor.models import build_model

    spec = job.spec
    torch.manual_seed(spec.train.seed)
    model = build_model(spec.model.name, spec.data.channels, job.n_classes, list(spec.data.crop.size),
                        spec.model.params)
    if str(device).startswith("cuda"):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def init_group(job: RankJob, rank: int) -> None:
    """Join the job's process group (file rendezvous in the job folder)."""
    dist.init_process_group(job.backend, init_method=f"file://{job.init_file}", rank=rank, world_size=job.world,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def rank_threads(world: int) -> int:
    """Intra-op threads per rank: the executor's threads shared out among the ranks (devices.threads_each)."""
    return threads_each(world)


def rank_main(job: RankJob, rank: int, visible: str | None = None) -> None:
    """Entry of a spawned rank (1..N-1): train its share in lockstep with rank 0; write nothing but its log.
    `visible`: the one CUDA device this rank sees (as cuda:0), set before CUDA starts in this process."""
    from daemon.common import malloc
    from workers.worker import arm_parent_death_signal

    malloc.tune()

    arm_parent_death_signal()
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    handler = logging.FileHandler(Path(job.job_dir) / f"rank{rank}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    finished = False
    try:
        train_share(job, rank, device="cuda:0" if visible is not None else None)
        finished = True
    except BaseException:
        log.error("rank %d failed:\n%s", rank, traceback.format_exc())
        raise SystemExit(1)
    finally:
        leave_group(finished)


def train_share(job: RankJob, rank: int, device: str | None = None, threads: int | None = None) -> None:
    """Train rank `rank`'s rows of every batch in lockstep with rank 0 (on `device`, default cuda:rank or cpu)."""
    from daemon.executor.training.job_data import in_process_batches, pool_batches
    from daemon.executor.training.loop import TrainControl, train

    torch.set_num_threads(threads or rank_threads(job.world))
    device = device or rank_device(job.device, rank)
    init_group(job, rank)
    model = build_rank_model(job, device)
    recipe = share_recipe(job.recipe, rank, job.world)
    spec, seed = job.spec, job.spec.train.seed
    pool = None
    if job.n_workers > 0:
        from workers.pool import WorkerPool

        pool = WorkerPool(recipe, n_workers=job.n_workers, seed=seed, ring_slots=spec.data.ring_slots,
                          owner_pid=job.owner_pid, device=device if device.startswith("cuda") else None,
                          nice=job.worker_nice)
    sync = RankSync(rank, job.world, device, on_workers=pool.resize if pool is not None else None)
    sync.broadcast_parameters(model.to(device))
    should_stop, stop_after_epoch = sync.controls()
    source = pool_batches(pool) if pool is not None else in_process_batches(recipe, seed)
    try:
        result = train(model, source, job.job_dir, optim=spec.optim, schedule=spec.schedule, config=spec.train,
                       val_batches=job.val or None, steps_per_epoch=spec.data.batches_per_epoch, device=device,
                       control=TrainControl(should_stop=should_stop, stop_after_epoch=stop_after_epoch), sync=sync)
    finally:
        if pool is not None:
            pool.close()
    log.info("rank %d done: %s at step %d", rank, result.stopped, result.step)


class RankGroup:
    """Rank 0's view of a data-parallel run: the spawned ranks and the process group it has joined.

        with RankGroup(job) as group:       # spawns ranks 1..N-1, joins as rank 0
            train(..., sync=group.sync(...))
    On exit the group is left, the ranks are joined, and any still alive after JOIN_TIMEOUT_S are killed.
    """

    def __init__(self, job: RankJob) -> None:
        self.job = job
        self.procs: list[Any] = []  # spawned processes, or ray_ranks.RayRank (the same four members)
        self._threads = torch.get_num_threads()

    def __enter__(self) -> "RankGroup":
        from daemon.executor import raytasks

        if raytasks.on_ray():
            from daemon.executor.training import ray_ranks

            # they answer like processes (exitcode, join, kill)
            self.procs = ray_ranks.start_ray_ranks(self.job, train_share, log)
        else:
            self._spawn()
        try:
            torch.set_num_threads(rank_threads(self.job.world))
            init_group(self.job, 0)
        except BaseException:
            self._stop_ranks(kill=True)
            raise
        return self

    def _spawn(self) -> None:
        from workers.pool import _main_module_hidden

        ctx = mp.get_context("spawn")
        visible = rank_visible_devices(self.job.job_dir, self.job.device, self.job.world)
        with _main_module_hidden():  # ranks import what they need; they must not re-run the executor's main
            for rank in range(1, self.job.world):
                proc = ctx.Process(target=rank_main, args=(self.job, rank, visible[rank]), name=f"seisd-rank-{rank}")
                proc.start()
                self.procs.append(proc)

    def sync(self, local_flags: Callable[[], tuple[bool, bool, int]]) -> RankSync:
        """Rank 0's collectives, fed with the job's control flags."""
        return RankSync(0, self.job.world, rank_device(self.job.device, 0), local_flags=local_flags)

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> None:
        # Ranks already dead when rank 0 failed are the cause; those that fail after we leave the group are not.
        dead_first = self._dead() if kind is not None else []
        leave_group(finished=kind is None)
        torch.set_num_threads(self._threads)
        dead = self._stop_ranks(kill=kind is not None)
        Path(self.job.init_file).unlink(missing_ok=True)
        if dead_first:
            raise DistributedError(self._describe(dead_first)) from exc
        if dead and kind is None:
            raise DistributedError(self._describe(dead))

    def _dead(self) -> list[int]:
        """Ranks that have exited with an error (waiting a moment: a peer's death is seen before its exit code)."""
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not any(p.exitcode for p in self.procs):
            time.sleep(0.05)
        return [r for r, p in enumerate(self.procs, start=1) if p.exitcode not in (0, None)]

    def _stop_ranks(self, kill: bool) -> list[int]:
        """Join the spawned ranks (kill: after a second; else after JOIN_TIMEOUT_S); ranks that ended in error."""
        deadline = time.monotonic() + (1.0 if kill else JOIN_TIMEOUT_S)
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        dead = [r for r, p in enumerate(self.procs, start=1) if p.exitcode not in (0, None)]
        for r, proc in enumerate(self.procs, start=1):
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
                if not kill:
                    dead.append(r)
        return dead

    def _describe(self, ranks: list[int]) -> str:
        parts = []
        for r in ranks:
            path = Path(self.job.job_dir) / f"rank{r}.log"
            tail = path.read_text()[-2000:] if path.is_file() else "(no log)"
            error = getattr(self.procs[r - 1], "error", None)  # a Ray rank: why its task failed
            parts.append(f"rank {r} exited with code {self.procs[r - 1].exitcode}"
                         f"{f' ({error})' if error else ''}; end of {path.name}:\n{tail}")
        return "data-parallel training lost a rank: " + "\n".join(parts)


def rendezvous_file(job_dir: Path) -> str:
    """A fresh file path for the process group's rendezvous (FileStore needs one that does not exist yet)."""
    folder = Path(job_dir) / "rendezvous"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / uuid.uuid4().hex)
