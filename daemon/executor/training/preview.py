"""Predict one inline of a survey with a model: the preview picture of each epoch and the model file check.

Uses daemon.executor.predict.apply_block, the same code path as whole-volume prediction, on a block of the inlines the
model's crops need around the chosen one. Patch classifiers (patchcnn) use kind "patch", fully convolutional
models (unet) kind "fcn". A model trained with context sections (data.context > 0) gets them from the block, which
then holds that many inlines on each side of an inline section.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from daemon.executor.predict import apply_block


class PreviewUnsupported(ValueError):
    """The model's input spec cannot be predicted slice by slice by the apply engine (the message says why)."""


@dataclass(frozen=True)
class SliceInput:
    """How a model reads the survey: its apply kind, crop, orientation and per-volume (mean, std)."""

    kind: str                                   # "patch" or "fcn"
    crop: tuple[int, ...]
    orientation: str                            # inline, crossline, time, 3d
    normalisation: tuple[tuple[float, float], ...]
    context: int = 0

    @classmethod
    def from_input_spec(cls, spec: dict, normalisation: dict) -> "SliceInput":
        """From a model file's input_spec and normalisation documents."""
        pairs = tuple((float(v["mean"]), float(v["std"])) for v in normalisation["volumes"])
        return cls(spec["apply_kind"], tuple(spec["crop"]), spec["orientation"], pairs, int(spec.get("context", 0)))


def apply_kind_of(model: torch.nn.Module, channels: int, crop: Sequence[int]) -> str:
    """'fcn' when the model returns a class map the size of its input, else 'patch'."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = model(torch.zeros((1, channels, *crop)))
    model.train(was_training)
    return "fcn" if out.dim() == 2 + len(crop) else "patch"


def predict_inline(model: torch.nn.Module, volumes: Sequence[np.ndarray], inline: int, how: SliceInput, *,
                   stride: int = 1, device: str = "cpu") -> np.ndarray:
    """uint8 labels [crosslines, samples] of inline index `inline` (volumes: [il, xl, s] arrays, one per channel)."""
    if how.orientation == "time":
        raise PreviewUnsupported("models on time slices are not previewed on an inline")
    if how.context and how.kind != "fcn":
        raise PreviewUnsupported("context sections are applied to fully convolutional models only")
    ni = volumes[0].shape[0]
    half = how.context if how.orientation == "inline" else how.crop[0] // 2
    i0, i1 = max(0, inline - half), min(ni, inline + half + 1)
    block = [np.ascontiguousarray(v[i0:i1], dtype=np.float32) for v in volumes]
    orientation = "inline" if how.orientation == "3d" else how.orientation
    kw: dict = dict(kind=how.kind, normalisation=how.normalisation, outputs=("labels",), device=device)
    if how.kind == "patch":
        kw.update(crop=how.crop, orientation=orientation, stride=stride)
    else:
        shape = block[0].shape
        lateral = shape[1:] if how.orientation == "inline" else (shape[0], shape[2])
        tile = tuple(min(c, n) for c, n in zip(how.crop, shape)) if how.orientation == "3d" else tuple(lateral)
        kw.update(tile=tile, overlap=tuple(t // 4 for t in tile), orientation=orientation, context=how.context)
    labels = apply_block(model, block if len(block) > 1 else block[0], **kw)["labels"]  # on a copy: the model
    return labels[inline - i0]                                                            # keeps its mode


def predict_inline_from_file(model_path: str | Path, survey_folder: str | Path, inline: int, *, stride: int = 1,
                             device: str = "cpu") -> np.ndarray:
    """Load a model file (models/<name>.h5) and predict inline index `inline` of a survey folder."""
    from daemon.executor.modelfile import load_model_file
    from workers.survey import Survey

    model, info = load_model_file(model_path)
    survey = Survey.open(survey_folder)
    volumes = [survey.volume(v) for v in info.input_spec["volumes"]]
    how = SliceInput.from_input_spec(info.input_spec, info.normalisation)
    return predict_inline(model.to(device), volumes, inline, how, stride=stride, device=device)
