"""Training throughput inside seisd against a bare PyTorch loop over the same batches held in memory.

    python tools/bench_train.py [--long] [--workers N] [--model patchcnn|unet]

Starts a real daemon in a temporary home, imports a synthetic survey (tools/synth.py) through the client, runs a
train job (no validation, so only training steps are timed) and reads samples/s and the fraction of time the loop
waited for data from the job's result. Then, in this process, builds the same model (same seed) and optimiser and
trains it on the same batches made in memory beforehand, with no data pipeline at all. Prints one JSON line.
Targets: ratio >= 0.9, data wait < 0.05. Default well under a minute; --long runs more steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import synth  # noqa: E402
from facies_experiment import import_survey  # noqa: E402

from tests.harness import RunningDaemon  # noqa: E402


def job_file(model: str, epochs: int, batches: int, workers: int | None) -> dict[str, Any]:
    crop, batch, params = ([33, 33], 64, {}) if model == "patchcnn" else ([64, 64], 8, {"base": 8})
    return {"kind": "train", "output": "bench", "overwrite": True,
            "data": {"survey": "demo", "crop": {"size": crop}, "batch_size": batch, "batches_per_epoch": batches,
                     "val_batches": 0, "workers": workers, "augment": {"p_flip": 0.5},
                     "split": {"block": 8, "gap": 4}},
            "model": {"name": model, "params": params},
            "train": {"epochs": epochs, "seed": 0, "checkpoint_every_steps": None, "checkpoint_every_minutes": None,
                      "early_stop": {"enabled": False}}}


def bare_loop(job: dict[str, Any], home: Path, work: Path) -> dict[str, Any]:
    """The same model, optimiser and batches, trained from tensors already in memory."""
    import torch
    import torch.nn.functional as F

    from daemon.jobs.train import TrainSpec
    from daemon.models import build_model
    from daemon.training.config import parse_sections
    from daemon.training.job_data import make_batch, prepare_data
    from daemon.training.optim import build_optimizer

    spec = TrainSpec.model_validate(job)
    optim, _, cfg = parse_sections(spec.optim, spec.schedule, spec.train)
    d = spec.data
    torch.manual_seed(cfg.seed)
    model = build_model(spec.model.name, 1, 7, d.crop.size, spec.model.params)
    per_voxel = spec.model.name == "unet"
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(d, home, work, cfg.seed, per_voxel)
    batches = [make_batch(data.recipe, cfg.seed, e, k) for e in range(cfg.epochs) for k in range(d.batches_per_epoch)]
    opt = build_optimizer(model.parameters(), optim)
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, ignore_index=-1, reduction="sum") / int((y != -1).sum())
        loss.backward()
        opt.step()
        float(loss.detach())  # the loop reads the loss every step too
    seconds = time.perf_counter() - t0
    return {"samples_per_s": len(batches) * d.batch_size / seconds, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="more steps and a larger survey")
    ap.add_argument("--workers", type=int, default=None, help="data workers (default: the daemon's default, 2)")
    ap.add_argument("--model", choices=["patchcnn", "unet"], default="patchcnn")
    a = ap.parse_args(argv)
    epochs, batches = (4, 100) if a.long else (2, 30)
    shape = (128, 128, 96) if a.long else (64, 64, 64)
    with tempfile.TemporaryDirectory(prefix="seisd-bench-train-") as tmp:
        work = Path(tmp)
        synth.write(synth.generate(shape=shape, seed=0), work / "synth")
        job = job_file(a.model, epochs, batches, a.workers)
        with RunningDaemon(work / "home", start_timeout=60) as d:
            import_survey(d.client, work / "synth")
            record = d.client.wait(d.client.submit(job)["id"], timeout=1200)
            if record["state"] != "succeeded":
                raise SystemExit(f"train job {record['state']}: {record['error']}")
            bare = bare_loop(job, d.home, work / "bare")
    r = record["result"]
    print(json.dumps({
        "bench": "train", "model": a.model, "shape": list(shape), "batch_size": job["data"]["batch_size"],
        "crop": job["data"]["crop"]["size"], "steps": r["step"], "workers": r["workers"],
        "seisd_samples_per_s": r["samples_per_s"], "bare_samples_per_s": bare["samples_per_s"],
        "ratio": r["samples_per_s"] / bare["samples_per_s"], "data_wait_fraction": r["data_wait_fraction"],
        "targets": {"ratio": 0.9, "data_wait_fraction": 0.05}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
