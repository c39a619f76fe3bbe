"""What a model file (models/<name>.h5) says about its model, read with h5py only: no torch.

The main side lists and checks models with this (catalogue, predict's submit check); the executor side
(daemon/executor/modelfile.py) writes model files and loads their weights. The layout is described there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

MODEL_FORMAT = "seisd-model"
MODEL_FORMAT_VERSION = 1


class ModelFileError(Exception):
    """A model file is missing, malformed, of a newer version, or its user model source is unavailable."""


@dataclass
class ModelInfo:
    """Everything a model file says about its model besides the weights."""

    name: str  # registry name: patchcnn, unet, user
    params: dict[str, Any]
    in_channels: int
    n_classes: int
    input_shape: list[int]  # spatial crop shape the model was trained on
    classes: list[str] = field(default_factory=list)
    input_spec: dict[str, Any] = field(default_factory=dict)  # channels, orientation, volumes
    normalisation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # configs, step, epoch
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    user_source: str | None = None  # source text of a user model file, for the record
    # what it was trained on: sets [{name, surveys}] and surveys [{name, picks, examples, volumes [{name, mean,
    # std}]}] (picks: the pick set, trained from picks; suggest weighs its picks)
    # (older model files: empty); predict compares a survey's amplitudes with these (daemon/executor/predict/job.py)
    trained_on: dict[str, Any] = field(default_factory=dict)


def read_model_info(path: str | Path) -> ModelInfo:
    """The info of a model file, without torch modules (cheap, for listings)."""
    file = Path(path)
    if not file.is_file():
        raise ModelFileError(f"model file not found: {file}")
    try:
        with h5py.File(file, "r") as h5:
            attrs = dict(h5.attrs)
    except OSError as exc:
        raise ModelFileError(f"{file} is not a readable HDF5 file: {exc}") from exc
    if attrs.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{file} is not a seisd model file (format attribute {attrs.get('format')!r})")
    if int(attrs.get("format_version", 0)) > MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{file} has model format version {attrs['format_version']}; this seisd reads up to "
                             f"{MODEL_FORMAT_VERSION}: upgrade seisd")
    return ModelInfo(**json.loads(attrs["info"]))
