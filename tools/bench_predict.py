"""Throughput of whole-volume predict: end to end (read, infer, blend, write) vs the forward pass alone.

Prints one JSON line: voxels/s end to end and forward-only on the same tiles/crops, and their ratio, for the
registry's unet (tiled) and patchcnn (crops, stride for a coarse preview) on this machine's device. Data is made
in a temp folder. --long uses a bigger volume.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from daemon.models import build_model
from daemon.predict.apply import predict_volume
from daemon.predict.tiling import TilePlan, VolumeReader


def forward_only(model: torch.nn.Module, inputs: np.ndarray, batch: int) -> float:
    """Seconds for the forward passes alone over prepared inputs."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k in range(0, len(inputs), batch):
            model(torch.from_numpy(inputs[k:k + batch]))
    return time.perf_counter() - t0


def bench_unet(folder: Path, shape: tuple[int, int, int], tile: tuple[int, int]) -> dict:
    volume = np.lib.format.open_memmap(folder / "seis.npy", mode="w+", dtype=np.float32, shape=shape)
    volume[:] = np.random.default_rng(0).normal(size=shape)
    model = build_model("unet", 1, 4, tile, {"base": 8, "depth": 3, "norm": "batch"}).eval()
    result = predict_volume(model, volume, out_dir=folder / "unet", tile=tile, device="cpu", resume=False)
    plan = TilePlan(shape, tile, tuple(t // 4 for t in tile))
    reader = VolumeReader([volume], [(0.0, 1.0)])
    inputs = np.stack([reader.tile_input(t, plan.input_shape) for t in plan.tiles])
    seconds = forward_only(model, inputs, result["batch_size"])
    voxels = int(np.prod(shape))
    return {"voxels": voxels, "tiles": len(plan.tiles), "end_to_end_vps": voxels / result["seconds"],
            "forward_only_vps": voxels / seconds, "ratio": seconds / result["seconds"],
            "batch_size": result["batch_size"]}


def bench_patch(folder: Path, shape: tuple[int, int, int], crop: tuple[int, int], stride: int) -> dict:
    volume = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    model = build_model("patchcnn", 1, 4, crop, {"filters": [8, 16]}).eval()
    result = predict_volume(model, volume, kind="patch", crop=crop, stride=stride, out_dir=folder / "patch",
                            device="cpu", resume=False)
    grid = [len(range(0, n, stride)) for n in shape]
    crops = np.random.default_rng(2).normal(size=(grid[1] * grid[2], 1) + crop).astype(np.float32)
    seconds = forward_only(model, crops, result["batch_size"]) * grid[0]
    return {"voxels": int(np.prod(shape)), "crops": int(np.prod(grid)), "stride": stride,
            "end_to_end_crops_per_s": np.prod(grid) / result["seconds"], "forward_only_crops_per_s":
            np.prod(grid) / seconds, "ratio": seconds / result["seconds"], "batch_size": result["batch_size"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long", action="store_true", help="bigger volumes (a few minutes)")
    args = parser.parse_args()
    scale = 4 if args.long else 1
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        unet = bench_unet(folder, (8 * scale, 256, 256), (128, 128))
        patch = bench_patch(folder, (4 * scale, 64, 96), (33, 33), 2)
    print(json.dumps({"bench": "predict", "device": "cpu", "threads": torch.get_num_threads(),
                      "unet": unet, "patchcnn": patch}, default=float))


if __name__ == "__main__":
    main()
