"""User models: a Python file that defines the network (OpendTect's "custom module path").

Contract for the file:

    def build_model(in_channels: int, n_classes: int, **params) -> torch.nn.Module

The module returned takes float32 input [B, in_channels, *crop] and returns logits, either [B, n_classes]
(one class per crop) or [B, n_classes, *crop] (segmentation). The file is imported like any module, so keep
work at import time to imports and definitions. Model files store the source text for the record, but loading a
user model always needs the file itself again: stored code is never executed.

daemon/kinds/user_model_check.py runs `main` below in a child process at submit, so a crash, a hang or a stray
sys.exit in user code cannot hurt the daemon, and the daemon never imports torch.
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from workers.regular_files import UnreadableFile, read_regular


class UserModelError(Exception):
    """The user's model file is missing, fails to import, or breaks the build_model contract."""


def load_build_function(path: str | Path) -> Any:
    """Import the file at path and return its build_model callable."""
    file = Path(path).expanduser()
    try:
        source = read_regular(file)  # a FIFO or a device in its place is refused, never waited on
    except UnreadableFile as exc:
        raise UserModelError(f"user model file: {exc}; give the path of a .py file defining build_model") from None
    module = types.ModuleType(f"seisd_user_model_{abs(hash(str(file)))}")
    module.__file__ = str(file)
    try:
        exec(compile(source, str(file), "exec"), module.__dict__)  # what importing the file would run
    except Exception as exc:  # user code may raise anything; report it as the file's fault
        raise UserModelError(f"importing {file} failed: {type(exc).__name__}: {exc}") from exc
    build = getattr(module, "build_model", None)
    if not callable(build):
        raise UserModelError(f"{file} defines no build_model(in_channels, n_classes, **params) function")
    return build


def build(in_channels: int, n_classes: int, input_shape: Sequence[int], params: dict) -> nn.Module:
    """Build a user model; params['path'] names the file, the other params go to its build_model."""
    extra = {k: v for k, v in params.items() if k != "path"}
    build_model = load_build_function(params["path"])
    try:
        model = build_model(in_channels, n_classes, **extra)
    except Exception as exc:  # user code
        raise UserModelError(f"build_model in {params['path']} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UserModelError(f"build_model in {params['path']} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _probe(path: str, in_channels: int, n_classes: int, input_shape: list[int], params: dict) -> list[str]:
    """Build the model and run one forward pass; return the contract violations found."""
    import torch

    try:
        model = build(in_channels, n_classes, input_shape, {"path": path, **params})
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, *input_shape))
    except UserModelError as exc:
        return [str(exc)]
    except Exception as exc:  # the forward pass is user code too
        return [f"forward pass of the user model failed: {type(exc).__name__}: {exc}"]
    allowed = ([2, n_classes], [2, n_classes, *input_shape])
    if not isinstance(out, torch.Tensor) or list(out.shape) not in allowed:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return [f"user model output should be {allowed[0]} or {allowed[1]} for a batch of 2, got {shape}"]
    return []


def main() -> None:
    """Child-process entry for check_user_model: prints one JSON line {"problems": [...]}."""
    parser = argparse.ArgumentParser(description="check a seisd user model file")
    parser.add_argument("path")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--n-classes", type=int, default=2)
    parser.add_argument("--shape", default="[16, 16]")
    parser.add_argument("--params", default="{}")
    ns = parser.parse_args()
    problems = _probe(ns.path, ns.in_channels, ns.n_classes, json.loads(ns.shape), json.loads(ns.params))
    sys.stdout.flush()
    print(json.dumps({"problems": problems}))


if __name__ == "__main__":
    main()
