#!/usr/bin/env python3
"""Can the project's own network learn the synthetic facies? The central story, measured end to end on CPU.

Generate a survey with tools/synth.py, train daemon.executor.models' `patchcnn` on inline crops around the picks (part
of one inline, class-balanced sampling, crops normalised by the cube's mean and std) or a 2-D `unet` on slabs of the
picked inline with sparse labels (-1 away from the picks), predict the WHOLE cube with
daemon.executor.predict.apply.predict_volume, and score it against the true labels (the array written as labels.sgy)
with daemon.executor.training.metrics. Prints ONE JSON line: pixel accuracy, mean class accuracy, per-class recall, the
depth-only and amplitude-only baselines, class shares, training and prediction seconds.

    python tools/synth_check.py [--shape 128 128 96] [--seed 0] [--model patchcnn|unet] [--crop 32]
                                [--train-seconds 300] [--stride 4]

The acceptance target (docs/synth.md) is pixel accuracy >= 0.85 with at most 10 minutes of CPU training and a
depth-only baseline <= 0.5.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402

MAX_TRAIN_SECONDS = 600.0  # the target's budget: 10 minutes of CPU training


class CheckError(ValueError):
    """Bad options for the check (the message names the option)."""


def baselines(survey: synth.SynthSurvey) -> dict[str, float]:
    """Depth-only and amplitude-only pixel accuracy over the cube, both learned from the picks."""
    return {"depth_only": round(synth.depth_only_baseline(survey.labels, survey.picks), 4),
            "amplitude_only": round(synth.amplitude_only_baseline(survey.seismic, survey.labels, survey.picks), 4)}


def pick_crops(survey: synth.SynthSurvey, crop: int, mean: float, std: float) -> tuple[np.ndarray, np.ndarray]:
    """Inline-plane crops [N, 1, crop, crop] (crossline x sample) centred on every pick, and their classes."""
    from workers.crops import CropSpec, extract_crop
    spec = CropSpec((crop, crop), "inline")
    p = survey.picks
    x = np.empty((len(p.class_id), 1, crop, crop), dtype=np.float32)
    for n, centre in enumerate(zip(p.inline_index, p.crossline_index, p.sample_index)):
        extract_crop(survey.seismic, tuple(int(c) for c in centre), spec, out=x[n, 0])
    return (x - mean) / std, p.class_id.astype(np.int64)


class BalancedBatches:
    """Class-balanced batches: each batch draws every class equally often (with replacement)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, n_classes: int, batch: int, per_epoch: int, seed: int) -> None:
        self.x, self.y, self.batch, self.steps = x, y, batch, max(1, per_epoch // batch)
        self.by_class = [np.flatnonzero(y == c) for c in range(n_classes) if np.any(y == c)]
        self.seed = seed

    def __call__(self, epoch: int, start_batch: int):
        import torch
        rng = np.random.default_rng([self.seed, epoch])
        for _ in range(self.steps):
            cls = rng.integers(0, len(self.by_class), self.batch)
            idx = np.array([self.by_class[c][rng.integers(0, len(self.by_class[c]))] for c in cls])
            yield torch.from_numpy(self.x[idx]), torch.from_numpy(self.y[idx])

    def __len__(self) -> int:
        return self.steps


class SlabBatches:
    """unet batches: windows of the picked inline [B, 1, width, ns]; labels -1 away from the picks."""

    def __init__(self, survey: synth.SynthSurvey, width: int, batch: int, per_epoch: int, mean: float, std: float,
                 seed: int) -> None:
        p = survey.picks
        il = int(p.inline_index[0])
        self.section = ((survey.seismic[il] - mean) / std).astype(np.float32)
        self.target = np.full(self.section.shape, -1, dtype=np.int64)
        self.target[p.crossline_index, p.sample_index] = p.class_id
        self.lo, self.hi = int(p.crossline_index.min()), int(p.crossline_index.max())
        self.width, self.batch, self.steps, self.seed = width, batch, max(1, per_epoch // batch), seed

    def __call__(self, epoch: int, start_batch: int):
        import torch
        rng = np.random.default_rng([self.seed, epoch])
        nxl = self.section.shape[0]
        for _ in range(self.steps):
            # windows overlapping the picked crosslines, anywhere on the inline
            starts = rng.integers(max(0, self.lo - self.width // 2),
                                  max(1, min(nxl - self.width, self.hi - self.width // 2)) + 1, self.batch)
            x = np.stack([self.section[s:s + self.width] for s in starts])[:, None]
            y = np.stack([self.target[s:s + self.width] for s in starts])
            yield torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def __len__(self) -> int:
        return self.steps


def train_model(model, batches, seconds: float, epochs: int, lr: float, job_dir: Path) -> dict:
    """Train with the project's loop until `epochs` or the time budget ends; returns steps, epochs, seconds."""
    from daemon.kinds.train_spec import OptimSection, ScheduleSection, TrainSection
    from daemon.executor.training.loop import TrainControl, train
    optim = OptimSection(name="adam", lr=lr)
    schedule = ScheduleSection(kind="cosine", min_lr=lr / 20)
    cfg = TrainSection(epochs=epochs, max_steps=epochs * len(batches), seed=0, checkpoint_every_steps=None,
                       checkpoint_every_minutes=None, log_every_steps=10_000)
    t0 = time.monotonic()
    result = train(model, batches, job_dir, optim=optim, schedule=schedule, config=cfg,
                   control=TrainControl(should_stop=lambda: time.monotonic() - t0 > seconds),
                   steps_per_epoch=len(batches))
    return {"steps": result.step, "epochs": result.epoch, "stopped": result.stopped,
            "seconds": round(time.monotonic() - t0, 1)}


def score(labels: np.ndarray, pred: np.ndarray, names: tuple[str, ...]) -> dict:
    """Pixel accuracy, mean class accuracy and per-class recall of `pred` against `labels` over the cube."""
    from daemon.executor.training import metrics
    n = len(names)
    cm = np.zeros((n, n), dtype=np.int64)
    for i in range(labels.shape[0]):  # per inline: keeps the temporaries small
        cm += metrics.confusion_matrix(labels[i].ravel().astype(np.int64), pred[i].ravel().astype(np.int64), n)
    _, recall, _, _ = metrics.precision_recall_f1(cm)
    return {"pixel_accuracy": round(metrics.pixel_accuracy(cm), 4),
            "mean_class_accuracy": round(metrics.mean_class_accuracy(cm), 4),
            "recall": {name: round(float(r), 3) for name, r in zip(names, recall)}}


def lateral_profile(labels: np.ndarray, pred: np.ndarray, picks: "synth.PickSet") -> dict:
    """Accuracy by inline distance from the picked inline (bands of 8), and on the picked inline inside and
    outside the picked crossline range: tells whether what was learnt at the picks carries across the cube."""
    il = int(picks.inline_index[0])
    x0, x1 = int(picks.crossline_index.min()), int(picks.crossline_index.max()) + 1
    hits = np.array([np.mean(np.asarray(pred[i]) == labels[i]) for i in range(labels.shape[0])])
    dist = np.abs(np.arange(labels.shape[0]) - il)
    bands = {f"{d}-{d + 7}": round(float(hits[(dist >= d) & (dist < d + 8)].mean()), 3)
             for d in range(0, int(dist.max()) + 1, 8)}
    line_hit = np.asarray(pred[il]) == labels[il]
    outside = np.r_[line_hit[:x0].ravel(), line_hit[x1:].ravel()]
    return {"by_inline_distance": bands, "picked_inline_inside": round(float(line_hit[x0:x1].mean()), 3),
            "picked_inline_outside": round(float(outside.mean()), 3) if outside.size else None}


def run_check(shape=(128, 128, 96), seed: int = 0, model_name: str = "patchcnn", crop: int = 32,
              train_seconds: float = 300.0, epochs: int = 30, stride: int = 4, noise: float = 0.2,
              threads: int | None = None, structure: bool = True) -> dict:
    """Generate, train, predict the whole cube and score it; returns the figures printed by the CLI."""
    if not 0 < train_seconds <= MAX_TRAIN_SECONDS:
        raise CheckError(f"--train-seconds must be in (0, {MAX_TRAIN_SECONDS:.0f}], got {train_seconds}")
    if model_name not in ("patchcnn", "unet"):
        raise CheckError(f"--model must be patchcnn or unet, got {model_name!r}")
    import torch
    from daemon.executor.models import build_model
    from daemon.executor.predict.apply import predict_volume
    if threads:
        torch.set_num_threads(threads)
    t0 = time.monotonic()
    survey = synth.generate(tuple(shape), seed=seed, noise=noise, structure=structure)
    gen_s = time.monotonic() - t0
    names = survey.class_names
    mean, std = float(survey.seismic.mean()), float(survey.seismic.std())
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="synth_check_") as tmp:
        if model_name == "patchcnn":
            x, y = pick_crops(survey, crop, mean, std)
            model = build_model("patchcnn", in_channels=1, n_classes=len(names), input_shape=(crop, crop), params={})
            batches = BalancedBatches(x, y, len(names), batch=64, per_epoch=min(len(y), 4096), seed=seed)
            fit = train_model(model, batches, train_seconds, epochs, 2e-3, Path(tmp) / "job")
            t1 = time.monotonic()
            out = predict_volume(model, survey.seismic, out_dir=Path(tmp) / "pred", kind="patch",
                                 normalisation=(mean, std), outputs=("labels",), orientation="inline",
                                 crop=(crop, crop), stride=stride, device="cpu")
        else:
            model = build_model("unet", in_channels=1, n_classes=len(names), input_shape=(64, shape[2]),
                                params={"dropout": 0.1})
            batches = SlabBatches(survey, 64, batch=8, per_epoch=256, mean=mean, std=std, seed=seed)
            fit = train_model(model, batches, train_seconds, epochs, 2e-3, Path(tmp) / "job")
            t1 = time.monotonic()
            out = predict_volume(model, survey.seismic, out_dir=Path(tmp) / "pred", kind="fcn",
                                 normalisation=(mean, std), outputs=("labels",), orientation="inline",
                                 tile=(shape[1], shape[2]), device="cpu")
        pred = np.load(out["paths"]["labels"], mmap_mode="r")
        figures = score(survey.labels, np.asarray(pred), names)
        figures["lateral"] = lateral_profile(survey.labels, pred, survey.picks)
        predict_s = time.monotonic() - t1
    shares = synth.class_shares(survey.labels, len(names))
    return {"check": "synth_check", "shape": list(shape), "seed": seed, "noise": noise, "model": model_name,
            "structure": structure,
            "crop": crop if model_name == "patchcnn" else None, "stride": stride, **figures, **baselines(survey),
            "target_met": figures["pixel_accuracy"] >= 0.85,
            "class_share": {n: round(float(s), 3) for n, s in zip(names, shares)},
            "train": fit, "generate_s": round(gen_s, 1), "predict_s": round(predict_s, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 128, 96], metavar=("IL", "XL", "NS"))
    ap.add_argument("--long", action="store_true", help="the default 256 x 256 x 128 survey")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="patchcnn", choices=("patchcnn", "unet"))
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--train-seconds", type=float, default=300.0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--stride", type=int, default=4, help="patchcnn: predict every stride-th voxel per axis")
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--flat", action="store_true",
                    help="sanity case: no folds, faults or lateral facies change (a flat layer cake)")
    ap.add_argument("--baselines-only", action="store_true", help="generate and print the baselines, no training")
    args = ap.parse_args(argv)
    shape = (256, 256, 128) if args.long else tuple(args.shape)
    try:
        if args.baselines_only:
            survey = synth.generate(shape, seed=args.seed, noise=args.noise, structure=not args.flat)
            print(json.dumps({"check": "synth_check", "shape": list(shape), "seed": args.seed, **baselines(survey)}))
            return 0
        print(json.dumps(run_check(shape, args.seed, args.model, args.crop, args.train_seconds, args.epochs,
                                   args.stride, args.noise, structure=not args.flat)))
    except (CheckError, synth.SynthError) as exc:
        print(f"synth_check: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
