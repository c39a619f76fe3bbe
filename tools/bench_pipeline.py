"""Crops per second: WorkerPool vs torch DataLoader (same sampling code, same worker count) vs one process.

Cases: (a) 2D 24x24 crops with 8 channels (8 volumes), (b) 64^3 crops with flips. Prints ONE JSON line.
Data is made in a temp folder. --long runs more batches.

Per-worker efficiency is reported twice, because N workers plus the consumer cannot each get a core on a
machine with fewer than N + 1 cores:
  pool_1_worker_vs_single: one worker feeding the consumer through the ring vs one process cutting the same
      crops with no transport. This is what the "80% of the single-process rate per worker" target refers to:
      the cost of the pool per worker, with the worker on a core of its own, run as training runs it (the
      pool's default depth of batches in flight; the DataLoader comparison uses its prefetch_factor of 4).
  pool_per_worker_vs_single: N workers' rate / N vs one process; bounded by cores_per_worker_bound
      (cpu_count / N, at most 1) and by whatever else runs on the machine (see the load averages).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from workers.augment import Augmentation
from workers.crops import CropSpec
from workers.pool import DEFAULT_DEPTH, WorkerPool
from workers.sampling import BatchRecipe, PickSampler, RawVolume


_PREFETCH = 4  # batches queued per worker, the same for the pool and DataLoader


class _RecipeBatches(Dataset):
    """Batch k of epoch 0 through the same recipe code, for DataLoader (batch_size=None)."""

    def __init__(self, recipe: BatchRecipe, seed: int) -> None:
        self.recipe, self.seed = recipe, seed

    def __len__(self) -> int:
        return self.recipe.batches_per_epoch

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = np.empty(self.recipe.x_shape, np.float32), np.empty(self.recipe.y_shape, np.int64)
        self.recipe.make_batch(self.seed, 0, k, x, y)
        return torch.from_numpy(x), torch.from_numpy(y)


def _recipes(folder: Path, batches: int) -> dict[str, BatchRecipe]:
    shape = (96, 96, 160)
    rng = np.random.default_rng(0)
    vols = []
    for c in range(8):
        path = folder / f"v{c}.f32"
        rng.standard_normal(shape, dtype=np.float32).tofile(path)
        vols.append(RawVolume(str(path), shape))
    picks = np.stack([rng.integers(0, s, 5000) for s in shape], axis=1)
    labels = rng.integers(0, 6, 5000)
    return {
        "2d_24x24x8ch": BatchRecipe(tuple(vols), CropSpec((24, 24), "inline"), PickSampler(picks, labels), 256,
                                    batches, norm=((0.0, 1.0),) * 8),
        "3d_64cube_flips": BatchRecipe((vols[0],), CropSpec((64, 64, 64), "3d"), PickSampler(picks, labels), 8,
                                       max(4, batches // 4), augment=Augmentation(p_flip=0.5)),
    }


def _consume(batch_x: torch.Tensor) -> float:
    return float(batch_x[0, 0].sum())  # touch the data like a training step would


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


class _Single:
    """One process cutting the batches itself: no workers, no transport."""

    def __init__(self, recipe: BatchRecipe) -> None:
        self.recipe = recipe
        self.x, self.y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
        recipe.make_batch(0, 0, 0, self.x, self.y)  # warm the page cache and the maps

    def close(self) -> None:
        pass

    def run(self, epoch: int) -> tuple[float, float, float]:
        """(wall seconds, CPU seconds of workers, CPU seconds of the consumer) for one epoch."""
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(self.recipe.batches_per_epoch):
            self.recipe.make_batch(0, epoch, k, self.x, self.y)
            _consume(torch.from_numpy(self.x))
        return time.perf_counter() - t0, time.process_time() - c0, 0.0


def _timed(worker_pids: list[int], batches: Iterator[torch.Tensor]) -> tuple[float, float, float]:
    """Consume ``batches``: (wall seconds, CPU seconds of the workers, CPU seconds of this process)."""
    t0, c0, w0 = time.perf_counter(), time.process_time(), _cpu_seconds(worker_pids)
    for x in batches:
        _consume(x)
    return time.perf_counter() - t0, _cpu_seconds(worker_pids) - w0, time.process_time() - c0


class _Pool:
    def __init__(self, recipe: BatchRecipe, workers: int, depth: int = _PREFETCH) -> None:
        # ``depth`` batches in flight per worker (DataLoader's prefetch_factor for the comparison with it, the
        # pool's own default for the per-worker figure), plus slots for the consumer
        self.pool = WorkerPool(recipe, n_workers=workers, ring_slots=depth * workers + 2, depth=depth)
        for b in self.pool.epoch(0, stop=2):  # start-up is not throughput
            b.release()

    def close(self) -> None:
        self.pool.close()

    def _batches(self, epoch: int) -> Iterator[torch.Tensor]:
        for b in self.pool.epoch(epoch):
            with b:
                yield b.x

    def run(self, epoch: int) -> tuple[float, float, float]:
        return _timed(self.pool.worker_pids(), self._batches(epoch))


class _Loader:
    def __init__(self, recipe: BatchRecipe, workers: int) -> None:
        self.loader = DataLoader(_RecipeBatches(recipe, 0), batch_size=None, num_workers=workers,
                                 multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=_PREFETCH)
        it = iter(self.loader)
        for _ in range(2):  # start-up is not throughput
            next(it)
        self.pids = [w.pid for w in it._workers]  # private, but the only handle on DataLoader's processes

    def close(self) -> None:
        del self.loader  # persistent workers end with their iterator

    def run(self, epoch: int) -> tuple[float, float, float]:
        return _timed(self.pids, (x for x, _ in self.loader))


def _case(recipe: BatchRecipe, workers: int, rounds: int) -> dict:
    """Every way, interleaved round by round so that a change in the machine's load hits all of them alike;
    the best round of each counts (other work on the machine only ever slows a round down)."""
    runners = {"single": _Single(recipe), "pool": _Pool(recipe, workers), "loader": _Loader(recipe, workers),
               "pool_1": _Pool(recipe, 1, depth=DEFAULT_DEPTH)}  # as training runs it
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runners}
    try:
        for r in range(rounds):
            for name, runner in runners.items():
                times[name].append(runner.run(r + 1))
    finally:
        for runner in runners.values():
            runner.close()
    crops = recipe.batches_per_epoch * recipe.batch_size
    rate = {name: crops / min(t[0] for t in ts) for name, ts in times.items()}
    # CPU seconds per crop, of the workers and of the whole (workers + consumer): load slows these far less
    # than wall time, and on a machine the pipeline keeps busy, throughput goes as 1 / whole.
    worker_cpu = {name: min(t[1] for t in ts) / crops for name, ts in times.items()}
    whole_cpu = {name: min(t[1] + t[2] for t in ts) / crops for name, ts in times.items()}
    return {
        "crops_per_s_pool": round(rate["pool"], 1), "crops_per_s_dataloader": round(rate["loader"], 1),
        "crops_per_s_single_process": round(rate["single"], 1), "crops_per_s_pool_1_worker": round(rate["pool_1"], 1),
        "pool_vs_dataloader": round(rate["pool"] / rate["loader"], 3),
        "pool_1_worker_vs_single": round(rate["pool_1"] / rate["single"], 3),
        "pool_per_worker_vs_single": round(rate["pool"] / workers / rate["single"], 3),
        "cpu_us_per_crop": {name: round(v * 1e6, 1) for name, v in whole_cpu.items()},
        "pool_vs_dataloader_cpu": round(whole_cpu["loader"] / whole_cpu["pool"], 3),
        "worker_cpu_per_crop_vs_single": round(worker_cpu["pool"] / worker_cpu["single"], 3),
        "pool_1_worker_cpu_per_crop_vs_single": round(worker_cpu["pool_1"] / worker_cpu["single"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each way counts")
    parser.add_argument("--long", action="store_true", help="10x more batches")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    result: dict = {"bench": "pipeline", "workers": args.workers, "rounds": args.rounds, "cpu_count": cpus,
                    "cores_per_worker_bound": round(min(1.0, cpus / args.workers), 3),
                    "loadavg_start": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in _recipes(Path(tmp), 400 if args.long else 40).items():
            result[name] = _case(recipe, args.workers, args.rounds)
    result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["targets"] = {"2d_24x24x8ch.pool_vs_dataloader": 1.5, "3d_64cube_flips.pool_vs_dataloader": 1.0,
                         "pool_1_worker_vs_single": 0.8}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
