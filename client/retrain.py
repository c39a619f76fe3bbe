"""A retrain from a model of the home: the loop's step 5 (docs/loop.md), shared by `seisctl submit --from` and
tools/loop_experiment.py so that what the experiment measures is what a user runs.

    from client.retrain import from_model
    job = from_model(yaml.safe_load(open("configs/train_facies_unet.yaml")), "facies")

A retrain starts from the model's weights (`train.init_from: models/MODEL.h5`; `train.mode: resume` keeps its
classes, `transfer` starts a new head) and adds a fixed number of epochs without early stopping: RETRAIN_EPOCHS,
the length the loop experiment measured best (docs/loop.md: 12 until session 26, 24 since). A job file meant for a
training from scratch asks for more epochs (the default facies file 32 from random weights, or 80 with early
stopping); a retrain starts from trained weights and needs fewer. Whoever wants another length changes the returned
job (`--set train.epochs=N`).
"""
from __future__ import annotations

from typing import Any

RETRAIN_EPOCHS = 24
MODES = ("resume", "transfer")


class RetrainError(ValueError):
    """The job cannot be made a retrain; the message names why."""


def from_model(job: dict[str, Any], model: str, mode: str = "resume", epochs: int = RETRAIN_EPOCHS) -> dict[str, Any]:
    """`job` (a train job, changed in place and returned) made a retrain from `model` of the home."""
    if mode not in MODES:
        raise RetrainError(f"mode {mode!r}: a retrain is one of {', '.join(MODES)}")
    if job.get("kind") != "train":
        raise RetrainError(f"a retrain from a model is a train job; this one has kind {job.get('kind')!r}")
    train = job.setdefault("train", {})
    if not isinstance(train, dict):
        raise RetrainError("train must be a mapping of keys")
    early_stop = train.get("early_stop")
    train.update(mode=mode, init_from=f"models/{model}.h5", epochs=epochs,
                 early_stop={**(early_stop if isinstance(early_stop, dict) else {}), "enabled": False})
    return job
