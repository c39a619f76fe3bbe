"""Typed configuration of a training run: the train job file's `optim:`, `schedule:` and `train:` sections.

Torch-free, so the daemon's main process can validate a job file at submit time. Defaults live here only;
docs/training.md shows the same schema as YAML.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class OptimConfig:
    """Optimiser: adam, adamw or sgd."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only


@dataclass
class ScheduleConfig:
    """Learning-rate schedule per step, with an optional linear warm-up; 'plateau' acts at epoch ends."""

    kind: str = "constant"  # constant | step | cosine | plateau
    warmup_steps: int = 0
    step_size: int = 1000  # step: multiply by gamma every step_size steps
    gamma: float = 0.1
    min_lr: float = 0.0  # cosine floor, and plateau floor
    plateau_patience: int = 2  # epochs without improvement before reducing
    plateau_factor: float = 0.5


@dataclass
class EarlyStopConfig:
    """Stop when the monitored validation figure has not improved for `patience` epochs; keep the best weights."""

    enabled: bool = True
    metric: str = "macro_f1"  # macro_f1 | pixel_accuracy | mean_class_accuracy | weighted_f1 | val_loss
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True
    min_epochs: int = 0  # no early stop before this epoch: a noisy validation strip can peak early by chance


@dataclass
class DistributedConfig:
    """Data-parallel training: world_size ranks on the executor's machine, each taking B / world_size rows."""

    world_size: int = 1
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl


@dataclass
class TrainConfig:
    """How long to train, checkpoints, modes and device options."""

    mode: str = "new"  # new | resume | transfer
    init_from: str | None = None  # resume/transfer: a checkpoint (.pt) or a model file (.h5)
    trainable_layers: int = 1  # transfer: how many of the last parameterised layers stay trainable
    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimiser steps in all (overrides epochs when reached)
    max_minutes: float | None = None  # a time budget: no epoch is begun that would end past it (resume included)
    seed: int = 0
    checkpoint_every_steps: int | None = 500
    checkpoint_every_minutes: float | None = 10.0
    amp: bool = True  # CUDA only: bfloat16/float16 autocast
    channels_last: bool = True  # CUDA only, 2D models
    progress_interval_s: float = 0.5
    log_every_steps: int = 50
    class_weights: list[float] | None = None
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


MODES = ("new", "resume", "transfer")
OPTIMISERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine", "plateau")
BACKENDS = ("auto", "gloo", "nccl")
MAX_WORLD_SIZE = 64
MONITORED = ("macro_f1", "pixel_accuracy", "mean_class_accuracy", "weighted_f1", "val_loss")


class ConfigError(ValueError):
    """A training section is invalid; `problems` lists every problem with its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _fill(cls: type, section: str, data: dict[str, Any] | None, problems: list[str]) -> Any:
    """Build dataclass cls from a mapping, collecting unknown keys and wrong types as problems."""
    data = dict(data or {})
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for key, value in data.items():
        if key not in known:
            problems.append(f"{section}.{key}: unknown key; expected one of {', '.join(known)}")
            continue
        default = getattr(defaults, key)
        if isinstance(default, (EarlyStopConfig, DistributedConfig)):
            if not isinstance(value, dict):
                problems.append(f"{section}.{key}: expected a mapping, got {value!r}")
                continue
            kwargs[key] = _fill(type(default), f"{section}.{key}", value, problems)
            continue
        problem = _type_problem(default, value)
        if problem:
            problems.append(f"{section}.{key}: {problem}")
            continue
        kwargs[key] = tuple(value) if isinstance(default, tuple) else value
    return cls(**kwargs)


def _type_problem(default: Any, value: Any) -> str | None:
    """Why value cannot replace default, or None. None defaults accept numbers, strings and lists."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, int) and ok and not isinstance(value, int):
            return f"expected an integer, got {value!r}"
        return None if ok else f"expected a number, got {value!r}"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"expected a string, got {value!r}"
    if isinstance(default, (tuple, list)):
        return None if isinstance(value, (tuple, list)) else f"expected a list, got {value!r}"
    return None


def parse_sections(optim: dict | None, schedule: dict | None, train: dict | None
                   ) -> tuple[OptimConfig, ScheduleConfig, TrainConfig]:
    """Typed configs from the job file's sections; raises ConfigError naming every problem."""
    problems: list[str] = []
    o = _fill(OptimConfig, "optim", optim, problems)
    s = _fill(ScheduleConfig, "schedule", schedule, problems)
    t = _fill(TrainConfig, "train", train, problems)
    checks = [
        (o.name in OPTIMISERS, f"optim.name: expected one of {', '.join(OPTIMISERS)}, got {o.name!r}"),
        (o.lr > 0, f"optim.lr: expected a positive number, got {o.lr}"),
        (s.kind in SCHEDULES, f"schedule.kind: expected one of {', '.join(SCHEDULES)}, got {s.kind!r}"),
        (s.step_size >= 1, "schedule.step_size: expected >= 1"),
        (0 < s.plateau_factor < 1, "schedule.plateau_factor: expected a number in (0, 1)"),
        (t.mode in MODES, f"train.mode: expected one of {', '.join(MODES)}, got {t.mode!r}"),
        (t.mode == "new" or bool(t.init_from),
         f"train.init_from: mode {t.mode!r} needs a checkpoint (.pt) or model file (.h5) to start from"),
        (t.epochs >= 1, "train.epochs: expected >= 1"),
        (t.max_steps is None or t.max_steps >= 1, "train.max_steps: expected >= 1 or null"),
        (t.max_minutes is None or t.max_minutes > 0, "train.max_minutes: expected a positive number or null"),
        (t.trainable_layers >= 1, "train.trainable_layers: expected >= 1"),
        (t.early_stop.min_epochs >= 0, "train.early_stop.min_epochs: expected >= 0"),
        (t.early_stop.metric in MONITORED,
         f"train.early_stop.metric: expected one of {', '.join(MONITORED)}, got {t.early_stop.metric!r}"),
        (1 <= t.distributed.world_size <= MAX_WORLD_SIZE,
         f"train.distributed.world_size: expected 1..{MAX_WORLD_SIZE}, got {t.distributed.world_size}"),
        (t.distributed.backend in BACKENDS,
         f"train.distributed.backend: expected one of {', '.join(BACKENDS)}, got {t.distributed.backend!r}"),
    ]
    problems += [message for ok, message in checks if not ok]
    if problems:
        raise ConfigError(problems)
    return o, s, t


def to_dict(*configs: Any) -> dict[str, Any]:
    """Plain dicts of configs, keyed by section name, for model files and checkpoints."""
    names = {OptimConfig: "optim", ScheduleConfig: "schedule", TrainConfig: "train"}
    return {names[type(c)]: asdict(c) for c in configs}
