"""Training throughput inside seisd against a bare PyTorch loop over the same batches held in memory.

    python tools/bench_train.py [--long] [--workers N] [--model patchcnn|unet]

Starts a real daemon in a temporary home, imports a synthetic survey (tools/synth.py) through the client, runs a
train job (no validation, so only training steps are timed) and reads samples/s and the fraction of time the loop
waited for data from the job's result. Then, in this process, builds the same model (same seed) and optimiser and
trains it on the same batches made in memory beforehand, with no data pipeline at all. The two alternate for
--rounds rounds (default 7; a bare run starts after the job has ended, so it never shares the machine with the
job's workers). Both ways are timed epoch by epoch and the first epoch is a warm-up on both sides, left out of
the rate: for the job it holds the worker processes' start (spawning Python, importing numpy and torch: about
a second of CPU on this 2-core machine, which a 3-second run would otherwise count as pipeline cost; over a real
training of minutes it is nothing), for the bare loop its allocator and kernel warm-up. The job's rate over every
epoch is ``seisd_all_epochs_samples_per_s``. ``ratio`` is the median over rounds of job / bare of the same round
(this VM's speed drifts by 20-40 % over seconds; neighbours in time see the same machine); ``ratio_best``
compares the best round of each way. The bare loop runs with the malloc settings seisd's executors use
(daemon/common/malloc.py; without them a plain loop here is 20-35 % slower), so the ratio measures the pipeline, not
the allocator. Prints one JSON line.
Targets: ratio >= 0.9, data wait < 0.05. Default under a minute; --long runs more steps.
"""
from __future__ import annotations

import argparse
import json
import statistics
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


def job_file(model: str, epochs: int, batches: int, workers: int | None, device: str = "auto") -> dict[str, Any]:
    crop, batch, params = ([33, 33], 64, {}) if model == "patchcnn" else ([64, 64], 8, {"base": 8})
    return {"kind": "train", "output": "bench", "overwrite": True, "device": device,
            "data": {"survey": "demo", "crop": {"size": crop}, "batch_size": batch, "batches_per_epoch": batches,
                     "val_batches": 0, "workers": workers, "augment": {"p_flip": 0.5},
                     "split": {"block": 8, "gap": 4}},
            "model": {"name": model, "params": params},
            "train": {"epochs": epochs, "seed": 0, "checkpoint_every_steps": None, "checkpoint_every_minutes": None,
                      "early_stop": {"enabled": False}}}


class BareLoop:
    """The same model, optimiser and batches, trained from tensors already in memory (batches made once)."""

    def __init__(self, job: dict[str, Any], home: Path, work: Path, device: str = "cpu") -> None:
        self.device = "cpu" if device in ("auto", "cpu") else device
        from daemon.kinds.train_spec import TrainSpec
        from daemon.executor.training.job_data import make_batch, prepare_data

        self.spec = TrainSpec.model_validate(job)
        self.optim, self.cfg = self.spec.optim, self.spec.train
        d = self.spec.data
        work.mkdir(parents=True, exist_ok=True)
        data = prepare_data(d, home, work, self.cfg.seed, self.spec.model.name == "unet")
        self.batches = [make_batch(data.recipe, self.cfg.seed, e, k) for e in range(self.cfg.epochs)
                        for k in range(d.batches_per_epoch)]

    def run(self) -> float:
        """Samples per second of one run from a freshly built model (same seed every run), over the epochs after
        the first."""
        import torch
        import torch.nn.functional as F

        from daemon.executor.models import build_model
        from daemon.executor.training.optim import build_optimizer

        d = self.spec.data
        torch.manual_seed(self.cfg.seed)
        model = build_model(self.spec.model.name, 1, 7, d.crop.size, self.spec.model.params).to(self.device)
        opt = build_optimizer(model.parameters(), self.optim)
        model.train()
        per_epoch = d.batches_per_epoch
        for k, (x, y) in enumerate(self.batches):
            if k == per_epoch:  # the first epoch was the warm-up
                if self.device != "cpu":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            x, y = x.to(self.device), y.to(self.device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y, ignore_index=-1, reduction="sum") / int((y != -1).sum())
            loss.backward()
            opt.step()
            float(loss.detach())  # the loop reads the loss every step too
        return (len(self.batches) - per_epoch) * d.batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="more steps and a larger survey")
    ap.add_argument("--workers", type=int, default=None, help="data workers (default: the daemon's default, 2)")
    ap.add_argument("--model", choices=["patchcnn", "unet"], default="patchcnn")
    ap.add_argument("--rounds", type=int, default=7, help="rounds, each a job then a bare loop")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: the job and the bare loop on the first GPU")
    a = ap.parse_args(argv)
    from daemon.common import malloc
    malloc.tune()  # the same allocator settings as the executor that runs the job
    epochs, batches = (4, 100) if a.long else (3, 20)
    shape = (128, 128, 96) if a.long else (64, 64, 64)
    with tempfile.TemporaryDirectory(prefix="seisd-bench-train-") as tmp:
        work = Path(tmp)
        synth.write(synth.generate(shape=shape, seed=0), work / "synth")
        job = job_file(a.model, epochs, batches, a.workers, a.device)
        runs, bare = [], []
        env = {} if a.device == "cpu" else {"SEISD_DEVICES": "auto"}  # the test settings give a CPU slot only
        with RunningDaemon(work / "home", env=env, start_timeout=60) as d:
            import_survey(d.client, work / "synth")
            loop = BareLoop(job, d.home, work / "bare", a.device)
            for _ in range(a.rounds):
                record = d.client.wait(d.client.submit(job)["id"], timeout=1200)
                if record["state"] != "succeeded":
                    raise SystemExit(f"train job {record['state']}: {record['error']}")
                runs.append(record["result"])
                bare.append(loop.run())
    rates = [steady_rate(x) for x in runs]
    best = max(range(len(runs)), key=lambda k: rates[k])
    r = runs[best]
    print(json.dumps({
        "bench": "train", "model": a.model, "device": a.device, "shape": list(shape),
        "batch_size": job["data"]["batch_size"], "crop": job["data"]["crop"]["size"], "steps": r["step"],
        "workers": r["workers"], "rounds": a.rounds,
        "seisd_samples_per_s": rates[best], "bare_samples_per_s": max(bare),
        "seisd_all_epochs_samples_per_s": r["samples_per_s"], "seisd_epoch_rounds": [
            [round(e, 1) for e in x["epoch_samples_per_s"]] for x in runs],
        "seisd_rounds": [round(x, 1) for x in rates], "bare_rounds": [round(x, 1) for x in bare],
        "ratio_rounds": [round(x / y, 3) for x, y in zip(rates, bare)],
        "data_wait_rounds": [x["data_wait_fraction"] and round(x["data_wait_fraction"], 4) for x in runs],
        "data_startup_s": r["data_startup_s"] and round(r["data_startup_s"], 3),
        "ratio": statistics.median(x / y for x, y in zip(rates, bare)), "ratio_best": rates[best] / max(bare),
        "data_wait_fraction": max((x["data_wait_fraction"] or 0.0) for x in runs),  # workers 0: no pool
        "targets": {"ratio": 0.9, "data_wait_fraction": 0.05}}))
    return 0


def steady_rate(result: dict[str, Any]) -> float:
    """Samples per second of a job's epochs after the first (their harmonic mean: equal epochs, total time)."""
    later = result["epoch_samples_per_s"][1:]
    return len(later) / sum(1.0 / r for r in later)


if __name__ == "__main__":
    sys.exit(main())
