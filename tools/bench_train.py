"""Training throughput inside seisd against a bare PyTorch loop over the same batches held in memory.

    python tools/bench_train.py [--long] [--workers N] [--model patchcnn|unet]

Starts a real daemon in a temporary home, imports a synthetic survey (tools/synth.py) through the client, runs a
train job (no validation, so only training steps are timed) and reads samples/s and the fraction of time the loop
waited for data from the job's result. Then, in this process, builds the same model (same seed) and optimiser and
trains it on the same batches made in memory beforehand, with no data pipeline at all. Each way runs --rounds
times (default 3; the jobs first, then the bare loops, so a bare run never shares the machine with a job's
workers) and the best round of each counts. Prints one JSON line.
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


class BareLoop:
    """The same model, optimiser and batches, trained from tensors already in memory (batches made once)."""

    def __init__(self, job: dict[str, Any], home: Path, work: Path) -> None:
        from daemon.jobs.train import TrainSpec
        from daemon.training.config import parse_sections
        from daemon.training.job_data import make_batch, prepare_data

        self.spec = TrainSpec.model_validate(job)
        self.optim, _, self.cfg = parse_sections(self.spec.optim, self.spec.schedule, self.spec.train)
        d = self.spec.data
        work.mkdir(parents=True, exist_ok=True)
        data = prepare_data(d, home, work, self.cfg.seed, self.spec.model.name == "unet")
        self.batches = [make_batch(data.recipe, self.cfg.seed, e, k) for e in range(self.cfg.epochs)
                        for k in range(d.batches_per_epoch)]

    def run(self) -> float:
        """Samples per second of one run from a freshly built model (same seed every run)."""
        import torch
        import torch.nn.functional as F

        from daemon.models import build_model
        from daemon.training.optim import build_optimizer

        d = self.spec.data
        torch.manual_seed(self.cfg.seed)
        model = build_model(self.spec.model.name, 1, 7, d.crop.size, self.spec.model.params)
        opt = build_optimizer(model.parameters(), self.optim)
        model.train()
        t0 = time.perf_counter()
        for x, y in self.batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y, ignore_index=-1, reduction="sum") / int((y != -1).sum())
            loss.backward()
            opt.step()
            float(loss.detach())  # the loop reads the loss every step too
        return len(self.batches) * d.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="more steps and a larger survey")
    ap.add_argument("--workers", type=int, default=None, help="data workers (default: the daemon's default, 2)")
    ap.add_argument("--model", choices=["patchcnn", "unet"], default="patchcnn")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each way; the best of each counts")
    a = ap.parse_args(argv)
    epochs, batches = (4, 100) if a.long else (2, 30)
    shape = (128, 128, 96) if a.long else (64, 64, 64)
    with tempfile.TemporaryDirectory(prefix="seisd-bench-train-") as tmp:
        work = Path(tmp)
        synth.write(synth.generate(shape=shape, seed=0), work / "synth")
        job = job_file(a.model, epochs, batches, a.workers)
        runs, bare = [], []
        with RunningDaemon(work / "home", start_timeout=60) as d:
            import_survey(d.client, work / "synth")
            loop = BareLoop(job, d.home, work / "bare")
            # Rounds, the best of each way: load from elsewhere on the machine only slows a round down.
            for _ in range(a.rounds):
                record = d.client.wait(d.client.submit(job)["id"], timeout=1200)
                if record["state"] != "succeeded":
                    raise SystemExit(f"train job {record['state']}: {record['error']}")
                runs.append(record["result"])
            bare = [loop.run() for _ in range(a.rounds)]
    r = max(runs, key=lambda x: x["samples_per_s"])
    print(json.dumps({
        "bench": "train", "model": a.model, "shape": list(shape), "batch_size": job["data"]["batch_size"],
        "crop": job["data"]["crop"]["size"], "steps": r["step"], "workers": r["workers"], "rounds": a.rounds,
        "seisd_samples_per_s": r["samples_per_s"], "bare_samples_per_s": max(bare),
        "seisd_rounds": [round(x["samples_per_s"], 1) for x in runs], "bare_rounds": [round(x, 1) for x in bare],
        "data_wait_rounds": [round(x["data_wait_fraction"], 4) for x in runs],
        "data_startup_s": round(r["data_startup_s"], 3),
        "ratio": r["samples_per_s"] / max(bare), "data_wait_fraction": r["data_wait_fraction"],
        "targets": {"ratio": 0.9, "data_wait_fraction": 0.05}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
