"""Crops per second: WorkerPool vs torch DataLoader (same sampling code, same worker count) vs one process.

Cases: (a) 2D 24x24 crops with 8 channels (8 volumes), (b) 64^3 crops with flips. Prints ONE JSON line.
Data is made in a temp folder. --long runs more batches.

Per-worker efficiency is reported twice, because N workers plus the consumer cannot each get a core on a
machine with fewer than N + 1 cores:
  pool_1_worker_vs_single: one worker feeding the consumer through the ring vs one process cutting the same
      crops with no transport. This is what the "80% of the single-process rate per worker" target refers to:
      the cost of the pool per worker, with the worker on a core of its own.
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

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from workers.augment import Augmentation
from workers.crops import CropSpec
from workers.pool import WorkerPool
from workers.sampling import BatchRecipe, PickSampler, RawVolume


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

    def run(self, epoch: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds spent making batches) for one epoch."""
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(self.recipe.batches_per_epoch):
            self.recipe.make_batch(0, epoch, k, self.x, self.y)
            _consume(torch.from_numpy(self.x))
        return time.perf_counter() - t0, time.process_time() - c0


class _Pool:
    def __init__(self, recipe: BatchRecipe, workers: int) -> None:
        self.pool = WorkerPool(recipe, n_workers=workers, ring_slots=4 * workers)
        for b in self.pool.epoch(0, stop=2):  # start-up is not throughput
            b.release()

    def close(self) -> None:
        self.pool.close()

    def run(self, epoch: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds of the workers) for one epoch."""
        pids = self.pool.worker_pids()
        t0, c0 = time.perf_counter(), _cpu_seconds(pids)
        for b in self.pool.epoch(epoch):
            with b:
                _consume(b.x)
        return time.perf_counter() - t0, _cpu_seconds(pids) - c0


class _Loader:
    def __init__(self, recipe: BatchRecipe, workers: int) -> None:
        self.loader = DataLoader(_RecipeBatches(recipe, 0), batch_size=None, num_workers=workers,
                                 multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=4)
        it = iter(self.loader)
        for _ in range(2):  # start-up is not throughput
            next(it)

    def close(self) -> None:
        del self.loader  # persistent workers end with their iterator

    def run(self, epoch: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        for x, _ in self.loader:
            _consume(x)
        return time.perf_counter() - t0, float("nan")


def _case(recipe: BatchRecipe, workers: int, rounds: int) -> dict:
    """Every way, interleaved round by round so that a change in the machine's load hits all of them alike;
    the best round of each counts (other work on the machine only ever slows a round down)."""
    runners = {"single": _Single(recipe), "pool": _Pool(recipe, workers), "loader": _Loader(recipe, workers)}
    if workers != 1:
        runners["pool_1"] = _Pool(recipe, 1)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    try:
        for r in range(rounds):
            for name, runner in runners.items():
                times[name].append(runner.run(r + 1))
    finally:
        for runner in runners.values():
            runner.close()
    crops = recipe.batches_per_epoch * recipe.batch_size
    rate = {name: crops / min(wall for wall, _ in t) for name, t in times.items()}
    cpu = {name: min(c for _, c in t) / crops for name, t in times.items()}  # CPU seconds per crop
    rate.setdefault("pool_1", rate["pool"])
    cpu.setdefault("pool_1", cpu["pool"])
    return {
        "crops_per_s_pool": round(rate["pool"], 1), "crops_per_s_dataloader": round(rate["loader"], 1),
        "crops_per_s_single_process": round(rate["single"], 1), "crops_per_s_pool_1_worker": round(rate["pool_1"], 1),
        "pool_vs_dataloader": round(rate["pool"] / rate["loader"], 3),
        "pool_1_worker_vs_single": round(rate["pool_1"] / rate["single"], 3),
        "pool_per_worker_vs_single": round(rate["pool"] / workers / rate["single"], 3),
        # CPU a worker spends per crop vs the single process: the pool's own cost, whatever the load
        "worker_cpu_per_crop_vs_single": round(cpu["pool"] / cpu["single"], 3),
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
