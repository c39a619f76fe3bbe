"""Parameter schemas of the registry's models, free of torch.

The daemon's main process validates job files at submit time without importing torch, so everything it needs to
know about a model's parameters lives here: names, types, defaults and allowed ranges, and the crops a model takes.
The train job's schema (daemon/kinds/train_spec.py, ModelSection) checks `model:` with `param_problems`;
build_model checks with `validate_model_params`; the torch modules (patchcnn.py, unet.py, user.py) get their
defaults from `resolved_params`, so there is one place for them.
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


# Each check carries `json_schema`: the same rule in JSON Schema keywords (the train job file's schema,
# daemon/kinds/job_schemas.py, is generated from these tables).

def _positive_int_list(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or not value:
        return "expected a non-empty list of positive integers"
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return "expected a non-empty list of positive integers"
    return None


_positive_int_list.json_schema = {"minItems": 1, "items": {"type": "integer", "minimum": 1}}  # type: ignore


def _in_range(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"expected a value in [{low}, {high}], got {value}"
    check.json_schema = {"minimum": low, "maximum": high}  # type: ignore[attr-defined]
    return check


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}, got {value!r}"
    check.json_schema = {"enum": list(choices)}  # type: ignore[attr-defined]
    return check


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: a one-line description, its parameters, and the spatial ranks it accepts."""

    doc: str
    params: dict[str, ParamSpec] = field(default_factory=dict)
    ranks: tuple[int, ...] = (2, 3)
    open_params: bool = False  # user models take any extra keyword parameters
    min_2d_crop: int = 1  # the smallest side of a 2D crop it can take


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
        min_2d_crop=4,  # pooling after the first block, then 3x3 convolutions
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


def param_problems(name: str, params: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Every problem with a model name and its parameters, as (key path inside `model:`, what is wrong). Whether a
    user model's file exists is not looked at (validate_model_params and the train job's submit check do)."""
    if name not in MODEL_SPECS:
        return [(("name",), f"unknown model {name!r}; expected one of {', '.join(model_names())}")]
    spec = MODEL_SPECS[name]
    problems: list[tuple[tuple[str, ...], str]] = []
    for key, value in params.items():
        pspec = spec.params.get(key) or COMMON_PARAMS.get(key)
        if pspec is None:
            if not spec.open_params:
                problems.append((("params", key), f"unknown parameter for {name}; "
                                 f"expected one of {', '.join(sorted([*spec.params, *COMMON_PARAMS]))}"))
            continue
        if (problem := _value_problem(value, pspec)):
            problems.append((("params", key), problem))
    if name == "user" and (problem := _user_path_problem(params.get("path"))):
        problems.append((("params", "path"), problem))
    return problems


def crop_problems(name: str, crop: Sequence[int], orientation: str) -> list[str]:
    """What is wrong with crops of `crop` ([a, b] or [a, b, c]) for model `name` (a registered one)."""
    spec = MODEL_SPECS[name]
    if len(crop) not in spec.ranks:
        return [f"{name} takes crops with {' or '.join(map(str, spec.ranks))} sizes, got {list(crop)}"]
    if orientation != "3d" and min(crop) < spec.min_2d_crop:
        return [f"{name} needs crops of at least {spec.min_2d_crop} x {spec.min_2d_crop}, got {list(crop)}"]
    return []


def validate_model_params(name: str, params: dict[str, Any] | None, input_shape: Sequence[int]) -> list[str]:
    """Every problem with a model choice, as 'model.<key>: what is wrong' lines; empty when it is valid."""
    if name not in MODEL_SPECS:
        return [f"model.name: unknown model {name!r}; expected one of {', '.join(model_names())}"]
    params = dict(params or {})
    problems = _check_input_shape(MODEL_SPECS[name], input_shape)
    problems += [f"model.{'.'.join(loc)}: {problem}" for loc, problem in param_problems(name, params)]
    if name == "user" and _user_path_problem(params.get("path")) is None:
        if (missing := user_file_problem(params["path"])):
            problems.append(f"model.params.path: {missing}")
    return problems


def user_file_problem(path: str) -> str | None:
    """Whether a user model's file (its path checked by param_problems) is there."""
    return None if Path(path).expanduser().is_file() else f"file not found: {path}"


def _check_input_shape(spec: ModelSpec, input_shape: Sequence[int]) -> list[str]:
    shape = list(input_shape)
    if len(shape) not in spec.ranks:
        return [f"input.crop: expected a crop with {' or '.join(map(str, spec.ranks))} spatial dimensions, "
                f"got {shape}"]
    if not all(isinstance(n, int) and n > 0 for n in shape):
        return [f"input.crop: expected positive integer sizes, got {shape}"]
    return []


_JSON_TYPES = {int: "integer", float: "number", str: "string", list: "array", bool: "boolean"}


def params_json_schema(name: str) -> dict[str, Any]:
    """`model.params` of model `name` in JSON Schema keywords: what param_problems checks."""
    spec = MODEL_SPECS[name]
    props: dict[str, Any] = {}
    for key, p in {**spec.params, **COMMON_PARAMS}.items():
        types = {_JSON_TYPES[k] for k in (p.kind if isinstance(p.kind, tuple) else (p.kind,))}
        one = {"type": "number" if types == {"integer", "number"} else types.pop(), "description": p.doc,
               **getattr(p.check, "json_schema", {})}
        if p.default is not None:
            one["default"] = p.default
        props[key] = one
    out: dict[str, Any] = {"type": "object", "properties": props}
    if not spec.open_params:
        out["additionalProperties"] = False
    if name == "user":  # _user_path_problem
        out["required"] = ["path"]
        props["path"]["pattern"] = r"[^/]\.py$"
    return out


def model_section_json_schema() -> dict[str, Any]:
    """The train job's `model:` section in JSON Schema keywords: a registered name, and its parameter table."""
    return {"allOf": [{"properties": {"name": {"enum": model_names()}}}] + [
        {"if": {"properties": {"name": {"const": n}}, "required": ["name"]},
         "then": {"properties": {"params": params_json_schema(n)}}} for n in model_names()]}


def crop_json_schema() -> list[dict[str, Any]]:
    """crop_problems' smallest 2D crop per model, for the train job (keys `model.name`, `data.crop`)."""
    return [{"if": {"properties": {"model": {"properties": {"name": {"const": n}}, "required": ["name"]},
                                   "data": {"properties": {"crop": {"properties": {
                                       "orientation": {"not": {"const": "3d"}}}}}}},
                    "required": ["model"]},
             "then": {"properties": {"data": {"properties": {"crop": {"properties": {
                 "size": {"items": {"minimum": s.min_2d_crop}}}}}}}}}
            for n, s in sorted(MODEL_SPECS.items()) if s.min_2d_crop > 1]


def _value_problem(value: Any, pspec: ParamSpec) -> str | None:
    kinds = pspec.kind if isinstance(pspec.kind, tuple) else (pspec.kind,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        return f"expected {names}, got {type(value).__name__} {value!r}"
    return pspec.check(value) if pspec.check is not None else None


def _user_path_problem(path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return "a user model needs the path of its Python file"
    if Path(path).expanduser().suffix != ".py":
        return f"expected a .py file, got {path}"
    return None
