"""Refitting: once the run with validation (the selection) has chosen how many epochs to train, the same model
trains again from the same start on every labelled point, the validation's and the gap's too, for that many
epochs, and that run's model becomes the job's model file.

Why: a blocked split holds out whole strips of the picks and drops a gap of traces beside each, so that the
validation figures are honest. On one partly picked inline that is 35-55 % of the picked traces (docs/training.md,
"Refitting"), and the looks on them are then missing from the model the user gets. The selection's validation
figures stay the model file's figures: the refit run has no held-out data to score.

Files in the job folder's refit/ (each found done by a resumed attempt):

    selection.json          the selection run's TrainResult, written when it has ended: a resumed attempt goes
                            straight to the refit run
    checkpoints/, summary.h5, tensorboard/
                            the refit run's (the training loop's files, as the selection's are in the job folder)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from daemon.executor.training.checkpoint import atomic_write
from daemon.executor.training.loop import TrainResult
from daemon.kinds.train_spec import TrainSpec


def folder(job_dir: Path) -> Path:
    """The job's refit/ folder (made on first use)."""
    out = Path(job_dir) / "refit"
    out.mkdir(parents=True, exist_ok=True)
    return out


def finished_selection(job_dir: Path) -> TrainResult | None:
    """The selection run an earlier attempt of this job finished, or None when it has to be run."""
    record = Path(job_dir) / "refit" / "selection.json"
    if not record.is_file():
        return None
    return TrainResult(**json.loads(record.read_text()))


def record_selection(job_dir: Path, result: TrainResult) -> None:
    """Mark the selection done (written atomically: whole or absent)."""
    text = json.dumps(dataclasses.asdict(result), default=float).encode()
    atomic_write(folder(job_dir) / "selection.json", lambda f: f.write(text))


def kept_epochs(spec: TrainSpec, epoch: int, best_epoch: int | None) -> int:
    """The epochs a refit trains after a selection that ran `epoch` epochs with best_epoch the best: the epoch whose
    weights the selection keeps (early stopping with restore_best), else all the epochs it ran (the best epoch is
    tracked either way, but then not what it keeps)."""
    early = spec.train.early_stop
    if early.enabled and early.restore_best and best_epoch:
        return int(best_epoch)
    return max(1, int(epoch))


def reserve(spec: TrainSpec):
    """The selection run's TrainControl.reserve_epochs: train.max_minutes covers the selection and the refit
    together, so the selection begins no epoch after which the refit of the epochs it would keep no longer fits."""
    return lambda epoch, best_epoch: kept_epochs(spec, epoch, best_epoch)


def every_point(data: Any, epochs: int | None = None) -> Any:
    """The job's TrainData with every labelled point in training and none held out (data.refit_recipe); the split
    record counts them (`refit_points`) and, when given, the epochs they train for (`refit_epochs`)."""
    split = {**data.split, "refit_points": sum(int(data.split[k]) for k in ("train_points", "val_points",
                                                                             "dropped_points"))}
    if epochs is not None:
        split["refit_epochs"] = epochs
    return dataclasses.replace(data, recipe=data.refit_recipe, val=[], split=split)


def selects(spec: TrainSpec) -> bool:
    """Whether a selection run has anything to choose: the number of epochs, by early stopping. With early stopping
    off the refit would train the job file's epochs whatever the selection saw, so the job trains once, on every
    point, and the model file has no held-out figures."""
    return bool(spec.train.early_stop.enabled)


def refit_spec(spec: TrainSpec, ctx: Any, epochs: int) -> TrainSpec:
    """The job file as the refit run reads it: `epochs` epochs from the selection's start (or the refit's own last
    checkpoint after a requeue), no validation, no early stop, and a budget that cuts no epoch it was given."""
    cfg = spec.train
    last = folder(ctx.job_dir) / "checkpoints" / "last.pt"
    start = {}
    if ctx.resume and last.is_file():
        ctx.log.info("continuing from %s (interrupted attempt)", last)
        start = {"mode": "resume", "init_from": str(last)}
    early = cfg.early_stop.model_copy(update={"enabled": False, "restore_best": False})
    train = cfg.model_copy(update={**start, "epochs": epochs, "max_steps": None, "budget_min_epochs": epochs,
                                   "early_stop": early})
    return spec.model_copy(update={"train": train})


def merged(selection: TrainResult, refit: TrainResult) -> TrainResult:
    """The refit run's counters with the selection's validation figures (the only held-out figures there are)."""
    return dataclasses.replace(refit, best_value=selection.best_value, best_epoch=selection.best_epoch,
                               history=list(selection.history), report=selection.report)
