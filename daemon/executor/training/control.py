"""What a training run takes and gives besides its data: the executor's hooks (TrainControl), the progress reports
it receives (Progress), and how the run ended (TrainResult). daemon/executor/training/loop.py runs it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from torch import nn


@dataclass
class Progress:
    """One progress report, for the job's events."""

    epoch: int
    step: int
    total_steps: int | None
    loss: float
    lr: float
    samples_per_s: float
    eta_s: float | None


@dataclass
class TrainControl:
    """Hooks the executor passes in: cancel, stop at the epoch's end, progress, and a preview picture."""

    should_stop: Callable[[], bool] = lambda: False  # checked every step; a checkpoint is saved before stopping
    stop_after_epoch: Callable[[], bool] = lambda: False
    on_progress: Callable[[Progress], None] | None = None  # called at most once per config.progress_interval_s
    preview: Callable[[nn.Module], tuple[np.ndarray, np.ndarray]] | None = None  # -> (image, prediction) 2-D
    on_epoch: Callable[[int, int, dict[str, float] | None], None] | None = None  # (epoch, step, val figures)
    class_names: list[str] | None = None  # names in the validation report (default: class ids)
    # (epochs done, best epoch) -> epochs of a run to follow within train.max_minutes (a refit), each as the last
    reserve_epochs: Callable[[int, int | None], int] = lambda epoch, best: 0


@dataclass
class TrainResult:
    """How a run ended."""

    stopped: str  # finished | max_steps | time_limit | early_stop | cancelled | stop_after_epoch
    step: int
    epoch: int  # epochs completed
    best_value: float | None
    best_epoch: int | None
    history: list[dict[str, float]] = field(default_factory=list)  # validation figures per epoch of this run
    losses: list[float] = field(default_factory=list)  # loss per step of this run
    report: dict[str, Any] | None = None  # last classification report
    samples: int = 0  # samples trained on in this run
    train_seconds: float = 0.0  # time inside the training epochs (batches and steps; no validation)
    epoch_rates: list[float] = field(default_factory=list)  # samples/s of each (whole or partial) epoch of this run
