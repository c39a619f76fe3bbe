"""Optimisers and learning-rate schedules.

The schedule is computed from the step number (warm-up, then step decay or cosine), times a plateau factor that
changes only at epoch ends. Computing the rate from the step rather than mutating it step by step makes resume
exact: a restored run needs only the step and the plateau state.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch

from daemon.kinds.train_spec import OptimSection, ScheduleSection, TrainSection


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimSection) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over the given (trainable) parameters."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: with train.mode=transfer raise train.trainable_layers")
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name: unknown optimiser {cfg.name!r}; expected adam, adamw or sgd")


class LRSchedule:
    """Learning rate as a function of the step, with warm-up and a plateau factor updated per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, cfg: ScheduleSection,
                 total_steps: int, maximize: bool = True) -> None:
        self.optimizer, self.base_lr, self.cfg = optimizer, base_lr, cfg
        self.total_steps = max(1, total_steps)
        self.maximize = maximize
        self.plateau_factor = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad_epochs = 0

    def lr_at(self, step: int) -> float:
        """The learning rate for optimiser step `step` (0-based)."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return self.base_lr * (step + 1) / cfg.warmup_steps
        lr = self.base_lr
        after = step - cfg.warmup_steps
        if cfg.kind == "step":
            lr *= cfg.gamma ** (after // cfg.step_size)
        elif cfg.kind == "cosine":
            span = max(1, self.total_steps - cfg.warmup_steps)
            progress = min(1.0, after / span)
            lr = cfg.min_lr + (lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        return max(lr * self.plateau_factor, cfg.min_lr if cfg.kind == "plateau" else 0.0)

    def apply(self, step: int) -> float:
        """Set the optimiser's rate for `step` and return it."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def end_epoch(self, value: float | None) -> None:
        """Feed the epoch's monitored figure; with kind 'plateau', reduce the rate after patience bad epochs."""
        if self.cfg.kind != "plateau" or value is None:
            return
        better = self.plateau_best is None or (value > self.plateau_best if self.maximize
                                               else value < self.plateau_best)
        if better:
            self.plateau_best, self.plateau_bad_epochs = value, 0
            return
        self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs > self.cfg.plateau_patience:
            self.plateau_factor *= self.cfg.plateau_factor
            self.plateau_bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        """What resume needs besides the step."""
        return {"plateau_factor": self.plateau_factor, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from state_dict()."""
        self.plateau_factor = float(state["plateau_factor"])
        self.plateau_best = state["plateau_best"]
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])


def run_config(optim: OptimSection, schedule: ScheduleSection, config: TrainSection) -> dict[str, Any]:
    """The run's sections as plain dicts, keyed by section name, for checkpoints and model files."""
    return {"optim": optim.model_dump(), "schedule": schedule.model_dump(), "train": config.model_dump()}
