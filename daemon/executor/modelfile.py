"""Model files (models/<name>.h5): weights as HDF5 datasets plus one JSON document describing the model.

Layout (format "seisd-model", version 1):

    /                 attrs: format, format_version, model_name, in_channels, n_classes (typed), info (JSON text)
    /weights/<key>    one dataset per state-dict entry (parameters and buffers), named by the state-dict key

No pickle anywhere: loading reads arrays and JSON only, and rebuilds a registry model from its name and
parameters. A user model is rebuilt from its Python file, which must be given again (or still be at the stored
path with the same source); the stored source text is kept for the record and is never executed.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import platform
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from daemon.executor.models import build_model
from daemon.kinds.modelinfo import (MODEL_FORMAT, MODEL_FORMAT_VERSION, ModelFileError, ModelInfo,  # noqa: F401
                                   read_model_info)

if TYPE_CHECKING:  # torch is imported where weights are touched, so listings (in the daemon) stay torch-free
    import torch
    from torch import nn

def provenance(job_id: str | None = None) -> dict[str, Any]:
    """Who made a model, where, when and with what versions."""
    import torch

    import daemon

    return {"job_id": job_id, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(), "user": getpass.getuser(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "h5py": h5py.__version__,
            "seisd": getattr(daemon, "__version__", "0.1.0")}


def user_source_of(path: str | Path) -> str:
    """The text of a user model file, to store with the model."""
    return Path(path).expanduser().read_text(encoding="utf-8")


def save_model_file(path: str | Path, model: nn.Module, info: ModelInfo) -> Path:
    """Write model weights and info to an HDF5 file (via a temporary file and rename, so readers never see half)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    if info.name == "user" and info.user_source is None and info.params.get("path"):
        info.user_source = user_source_of(info.params["path"])
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update({"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
                             "model_name": info.name, "in_channels": info.in_channels,
                             "n_classes": info.n_classes, "info": json.dumps(asdict(info), default=_jsonable)})
            weights = h5.create_group("weights")
            for key, tensor in model.state_dict().items():
                weights.create_dataset(key, data=tensor.detach().cpu().numpy())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _jsonable(value: Any) -> Any:
    """JSON fallback for numpy scalars, arrays, tuples and paths found in configs and metrics."""
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a model file")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict stored in a model file."""
    import torch

    with h5py.File(path, "r") as h5:
        return {key: torch.from_numpy(np.asarray(ds[()])) for key, ds in h5["weights"].items()}


def build_from_info(info: ModelInfo, user_model_path: str | Path | None = None) -> nn.Module:
    """An untrained module of this architecture (user models need their file; see load_model_file)."""
    params = dict(info.params)
    if info.name == "user":
        params["path"] = str(_user_file(info, user_model_path))
    return build_model(info.name, info.in_channels, info.n_classes, info.input_shape, params)


def load_model_file(path: str | Path, user_model_path: str | Path | None = None) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model of a model file with its weights, in eval mode; returns (module, info)."""
    info = read_model_info(path)
    model = build_from_info(info, user_model_path)
    state = read_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"weights in {path} do not fit the {info.name} architecture: {exc}") from exc
    return model.eval(), info


def _user_file(info: ModelInfo, given: str | Path | None) -> Path:
    """The user model file to build from: the given one, else the stored path if its source is unchanged."""
    if given is not None:
        return Path(given).expanduser()
    stored = Path(str(info.params.get("path", ""))).expanduser()
    if not stored.is_file():
        raise ModelFileError(f"user model file {stored} is gone; pass user_model_path= with a copy of it "
                             "(its source text is stored in the model file's info.user_source)")
    if info.user_source is not None and _digest(stored.read_text(encoding="utf-8")) != _digest(info.user_source):
        raise ModelFileError(f"user model file {stored} changed since the model was trained; pass "
                             "user_model_path= to a file with the stored source (info.user_source)")
    return stored


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
