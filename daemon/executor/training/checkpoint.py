"""Checkpoints: atomic writes of training state.

Checkpoints are torch.save files of state dicts (they use pickle). That is acceptable because they never leave
the machine: they are written and read only by the executor for resume. What is shared (models/<name>.h5) is
written by daemon.executor.modelfile without pickle.

Atomic write: the data goes to a temporary file in the same folder, is fsynced, renamed over the target, and the
folder is fsynced so the rename itself survives a power cut. A crash at any point leaves either the old file or
the new one, never a torn file.
"""
from __future__ import annotations

import io

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

CHECKPOINT_FORMAT = "seisd-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable or not a seisd checkpoint."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file atomically by calling write(handle) on a temporary file, then renaming it to path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        # leave the previous file as it was; remove only our partial temporary file
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in folder (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save a training state dict atomically, tagged with the checkpoint format and version."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    buffer = io.BytesIO()  # serialised first, so a full disk surfaces as the OSError it is, not a torch error
    torch.save(payload, buffer)
    return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint not found: {file}")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"cannot read checkpoint {file}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file} is not a seisd checkpoint")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{file} has checkpoint version {state['version']}; this seisd reads up to "
                              f"{CHECKPOINT_VERSION}: upgrade seisd")
    return state
