"""Measure U-Net prediction throughput (voxels per second) on this machine's CPU (or CUDA with --device cuda).

Prints one JSON line: voxels/s of a 2D unet (by default the default facies job's: base 16, depth 4, one member)
three ways, all in the same run and number format (--precision): the baseline (plain no_grad, contiguous layout),
`fast` (torch.inference_mode, channels-last: the layout prediction uses) and `prepared` (the same on the copy
prediction actually runs, daemon/executor/models/inference.py: batch norms folded into the convolutions,
activations in place), with the ratios between them. Synthetic input made here; no files are written. --long
measures more repetitions and a 3D variant.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from daemon.executor.models import build_model
from daemon.executor.models.inference import inference_copy


def _rate(model: torch.nn.Module, x: torch.Tensor, reps: int, fast: bool, precision: str = "float32") -> float:
    """Voxels per second over reps forward passes after one warm-up pass."""
    if fast and x.dim() == 4:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    context = torch.inference_mode if fast else torch.no_grad
    with context(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return x.numel() / x.shape[1] * reps / elapsed


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--long", action="store_true", help="more repetitions and a 3D model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--slab", type=int, default=256, help="2D slab edge in samples")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="the forward pass's number format (prediction's 'auto' is bfloat16 on a CPU that has it)")
    ns = parser.parse_args()
    torch.manual_seed(0)
    reps = 20 if ns.long else 5
    params = {"base": ns.base, "depth": ns.depth}
    model = build_model("unet", 1, 9, (ns.slab, ns.slab), params)
    model.train()(torch.randn(4, 1, 64, 64))  # batch norms with running statistics, as in a trained model
    model = model.eval().to(ns.device)
    x = torch.randn(4, 1, ns.slab, ns.slab, device=ns.device)
    result = {"bench": "unet_predict", "device": ns.device, "threads": torch.get_num_threads(), "params": params,
              "input": list(x.shape), "precision": ns.precision}
    baseline = _rate(model, x, reps, fast=False, precision=ns.precision)
    fast = _rate(model, x, reps, fast=True, precision=ns.precision)
    prepared = _rate(inference_copy(model), x, reps, fast=True, precision=ns.precision)
    result.update(voxels_per_s_2d=round(fast), baseline_voxels_per_s_2d=round(baseline),
                  ratio_vs_baseline=round(fast / baseline, 3), voxels_per_s_2d_prepared=round(prepared),
                  ratio_prepared_vs_fast=round(prepared / fast, 3))
    if ns.long:
        model3 = build_model("unet", 1, 9, (64, 64, 64), params).eval().to(ns.device)
        result["voxels_per_s_3d"] = round(_rate(model3, torch.randn(1, 1, 64, 64, 64, device=ns.device), 5, True))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
