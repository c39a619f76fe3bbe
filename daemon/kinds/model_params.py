"""Parameter schemas of the registry's models, free of torch.

The daemon's main process validates job files at submit time without importing torch, so everything it needs to
know about a model's parameters lives here: names, types, defaults and allowed ranges. The torch modules
(patchcnn.py, unet.py, user.py) read their defaults from the same tables, so there is one place for them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class ParamSpec:
    """One model parameter: its type, default and an optional check returning a problem or None."""

    kind: type | tuple[type, ...]
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None


def _positive_int_list(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or not value:
        return "expected a non-empty list of positive integers"
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return "expected a non-empty list of positive integers"
    return None


def _in_range(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"expected a value in [{low}, {high}], got {value}"
    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}, got {value!r}"
    return check


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: a one-line description, its parameters, and the spatial ranks it accepts."""

    doc: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    ranks: tuple[int, ...] = (2, 3)
    open_params: bool = False  # user models take any extra keyword parameters


ACTIVATIONS = ("elu", "relu", "leaky_relu", "gelu")
NORMS = ("batch", "instance", "none")

MODEL_SPECS: dict[str, ModelSpec] = {
    "patchcnn": ModelSpec(
        doc="Patch classifier from the seed: blocks of conv-conv-norm-activation, pooling and dropout after the "
            "first block, then a dense head; one class per crop.",
        params={
            "filters": ParamSpec(list, [12, 16, 24, 32], "filters per block", _positive_int_list),
            "kernel_size": ParamSpec(int, 3, "convolution kernel size (odd)", _in_range(1, 11)),
            "dropout": ParamSpec((int, float), 0.25, "dropout rate after each pooled block", _in_range(0.0, 0.95)),
            "activation": ParamSpec(str, "elu", "activation function", _one_of(*ACTIVATIONS)),
            "norm": ParamSpec(str, "batch", "normalisation layer", _one_of(*NORMS)),
        },
    ),
    "unet": ModelSpec(
        doc="Fully convolutional U-Net for sparse-label segmentation; pads inputs internally to a multiple of "
            "2**depth and crops the output back.",
        params={
            "base": ParamSpec(int, 8, "channels of the first level", _in_range(1, 256)),
            "depth": ParamSpec(int, 3, "number of downsampling steps", _in_range(1, 6)),
            "growth": ParamSpec((int, float), 2.0, "channel multiplier per level", _in_range(1.0, 4.0)),
            "convs_per_block": ParamSpec(int, 2, "convolutions per level", _in_range(1, 4)),
            "dropout": ParamSpec((int, float), 0.0, "dropout rate at the bottom level", _in_range(0.0, 0.95)),
            "norm": ParamSpec(str, "batch", "normalisation layer", _one_of(*NORMS)),
            "activation": ParamSpec(str, "relu", "activation function", _one_of(*ACTIVATIONS)),
        },
    ),
    "user": ModelSpec(
        doc="A model defined by a Python file with build_model(in_channels, n_classes, **params) -> nn.Module; "
            "'path' names the file, every other parameter is passed to build_model.",
        params={"path": ParamSpec(str, None, "path of the Python file defining build_model")},
        open_params=True,
    ),
}


# Parameters every model takes (the registry's and user models alike); build_model consumes them.
COMMON_PARAMS: dict[str, ParamSpec] = {
    "members": ParamSpec(int, 1, "models of this architecture trained side by side from different initial weights, "
                         "their probabilities averaged when predicting (1: a single model)", _in_range(1, 16)),
}


def model_names() -> list[str]:
    """Names accepted by build_model, sorted."""
    return sorted(MODEL_SPECS)


def resolved_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The parameters with defaults filled in, COMMON_PARAMS included (no validation; call validate_model_params
    first)."""
    spec = MODEL_SPECS[name]
    out = {key: (list(p.default) if isinstance(p.default, list) else p.default)
           for key, p in {**spec.params, **COMMON_PARAMS}.items()}
    out.update(params or {})
    return out


def validate_model_params(name: str, params: dict[str, Any] | None, input_shape: Sequence[int]) -> list[str]:
    """Every problem with a model choice, as 'model.<key>: what is wrong' lines; empty when it is valid."""
    if name not in MODEL_SPECS:
        return [f"model.name: unknown model {name!r}; expected one of {', '.join(model_names())}"]
    spec = MODEL_SPECS[name]
    problems = _check_input_shape(spec, input_shape)
    params = dict(params or {})
    for key, value in params.items():
        pspec = spec.params.get(key) or COMMON_PARAMS.get(key)
        if pspec is None:
            if not spec.open_params:
                problems.append(f"model.params.{key}: unknown parameter for {name}; "
                                f"expected one of {', '.join(sorted([*spec.params, *COMMON_PARAMS]))}")
            continue
        problems.extend(_check_value(key, value, pspec))
    if name == "user":
        problems.extend(_check_user_path(params.get("path")))
    return problems


def _check_input_shape(spec: ModelSpec, input_shape: Sequence[int]) -> list[str]:
    shape = list(input_shape)
    if len(shape) not in spec.ranks:
        return [f"input.crop: expected a crop with {' or '.join(map(str, spec.ranks))} spatial dimensions, "
                f"got {shape}"]
    if not all(isinstance(n, int) and n > 0 for n in shape):
        return [f"input.crop: expected positive integer sizes, got {shape}"]
    return []


def _check_value(key: str, value: Any, pspec: ParamSpec) -> list[str]:
    kinds = pspec.kind if isinstance(pspec.kind, tuple) else (pspec.kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        return [f"model.params.{key}: expected {names}, got {type(value).__name__} {value!r}"]
    if pspec.check is not None:
        problem = pspec.check(value)
        if problem:
            return [f"model.params.{key}: {problem}"]
    return []


def _check_user_path(path: Any) -> list[str]:
    if not isinstance(path, str) or not path:
        return ["model.params.path: a user model needs the path of its Python file"]
    file = Path(path).expanduser()
    if file.suffix != ".py":
        return [f"model.params.path: expected a .py file, got {path}"]
    if not file.is_file():
        return [f"model.params.path: file not found: {path}"]
    return []
