"""Crops per second: WorkerPool vs torch DataLoader (same sampling code, same worker count) vs one process.

Cases: (a) 2D 24x24 crops with 8 channels (8 volumes), (b) 64^3 crops with flips. Prints ONE JSON line.
Data is made in a temp folder. --long runs more batches.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
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


def _rate_single(recipe: BatchRecipe) -> float:
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(0, 0, 0, x, y)  # warm the page cache and the maps
    t0 = time.perf_counter()
    for k in range(recipe.batches_per_epoch):
        recipe.make_batch(0, 0, k, x, y)
        _consume(torch.from_numpy(x))
    return recipe.batches_per_epoch * recipe.batch_size / (time.perf_counter() - t0)


def _rate_pool(recipe: BatchRecipe, workers: int) -> float:
    with WorkerPool(recipe, n_workers=workers, ring_slots=4 * workers) as pool:
        for b in pool.epoch(0, stop=2):  # start-up is not throughput
            b.release()
        t0 = time.perf_counter()
        for b in pool.epoch(0):
            with b:
                _consume(b.x)
        return recipe.batches_per_epoch * recipe.batch_size / (time.perf_counter() - t0)


def _rate_dataloader(recipe: BatchRecipe, workers: int) -> float:
    loader = DataLoader(_RecipeBatches(recipe, 0), batch_size=None, num_workers=workers,
                        multiprocessing_context="spawn", persistent_workers=True, prefetch_factor=4)
    it = iter(loader)
    for _ in range(2):
        next(it)
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        _consume(x)
        n += 1
    return n * recipe.batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--long", action="store_true", help="10x more batches")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"bench": "pipeline", "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in _recipes(Path(tmp), 400 if args.long else 40).items():
            single = _rate_single(recipe)
            pool = _rate_pool(recipe, args.workers)
            loader = _rate_dataloader(recipe, args.workers)
            result[name] = {
                "crops_per_s_pool": round(pool, 1), "crops_per_s_dataloader": round(loader, 1),
                "crops_per_s_single_process": round(single, 1),
                "pool_vs_dataloader": round(pool / loader, 3),
                "pool_per_worker_vs_single": round(pool / args.workers / single, 3),
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
