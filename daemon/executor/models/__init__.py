"""Model registry: build a network by name and parameters, as chosen in a train job's `model:` section.

Importing this package does not import torch (the daemon's main process uses model_names and
validate_model_params at submit time); build_model imports the torch modules when it is first called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from daemon.kinds.model_params import MODEL_SPECS, model_names, resolved_params, validate_model_params

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelParamsError", "build_model", "model_names", "validate_model_params", "MODEL_SPECS"]


class ModelParamsError(ValueError):
    """The model name or parameters are invalid; the message lists every problem."""


def build_model(name: str, in_channels: int, n_classes: int, input_shape: Sequence[int],
                params: dict[str, Any] | None = None) -> "nn.Module":
    """Build registry model `name` for crops [in_channels, *input_shape] and n_classes outputs; with
    params["members"] > 1, an Ensemble of that many (daemon/executor/models/ensemble.py)."""
    problems = validate_model_params(name, params, input_shape)
    if in_channels < 1 or n_classes < 2:
        problems.append(f"need in_channels >= 1 and n_classes >= 2, got {in_channels} and {n_classes}")
    if problems:
        raise ModelParamsError("; ".join(problems))
    full = resolved_params(name, params)
    members = int(full.pop("members"))
    shape = [int(n) for n in input_shape]
    if members > 1:
        from daemon.executor.models.ensemble import Ensemble
        return Ensemble(lambda: _build_one(name, in_channels, n_classes, shape, full), members)
    return _build_one(name, in_channels, n_classes, shape, full)


def _build_one(name: str, in_channels: int, n_classes: int, shape: list[int], full: dict[str, Any]) -> "nn.Module":
    if name == "patchcnn":
        from daemon.executor.models import patchcnn
        return patchcnn.build(in_channels, n_classes, shape, full)
    if name == "unet":
        from daemon.executor.models import unet
        return unet.build(in_channels, n_classes, shape, full)
    from daemon.executor.models import user
    return user.build(in_channels, n_classes, shape, full)
