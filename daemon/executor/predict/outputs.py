"""What a prediction leaves on disk: the resume record, HDF5 and SEG-Y exports, and scores against known labels."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
import torch

from workers.names import work_path

RECORD_VERSION = 1
# Inlines copied per step when exporting, so a large volume never has to fit in memory.
EXPORT_INLINES = 16


class OutputError(ValueError):
    """An output that cannot be written or read back; the message names the problem and the fix."""


class ProgressRecord:
    """progress.json beside the outputs: settings key, batch and chunk sizes, and which chunks are done.

    `done` lists the chunk indices on disk (any order: the shards of a sharded job finish chunks in parallel);
    `chunks_done` is their count. Updates go through mark_done, under a file lock beside the record.

    Saved atomically (temporary file, fsync, rename), so a crash leaves either the old or the new record.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none."""
        if not self.path.exists():
            return None
        try:
            doc = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise OutputError(f"{self.path} is not valid JSON ({exc}); delete it to start the prediction over") from exc
        if doc.get("version") != RECORD_VERSION:
            raise OutputError(f"{self.path} has record version {doc.get('version')}, expected {RECORD_VERSION}; "
                              "delete it to start the prediction over")
        return doc["state"]

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive access across processes (the shards of one prediction share the record)."""
        with open(self.path.with_name(self.path.name + ".lock"), "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def mark_done(self, chunk: int) -> dict[str, Any]:
        """Add one chunk to the record's done set (read, merge, save under the lock); returns the new state."""
        with self.locked():
            state = self.load()
            if state is None:
                raise OutputError(f"{self.path} disappeared while the prediction ran; start it over")
            done = sorted(set(done_chunks(state)) | {int(chunk)})
            state["done"], state["chunks_done"] = done, len(done)
            self.save(state)
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        """Replace the record with `state` atomically."""
        tmp = work_path(self.path, "tmp")
        with open(tmp, "w") as f:
            json.dump({"version": RECORD_VERSION, "state": state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def done_chunks(state: Mapping[str, Any]) -> list[int]:
    """Indices of the chunks on disk. Records written before sharding hold only a count of leading chunks."""
    if "done" in state:
        return [int(k) for k in state["done"]]
    return list(range(int(state["chunks_done"])))


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's parameter and buffer bytes: a resume must use the very same weights."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_outputs(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The output memmaps (read-only) of a predict_volume result."""
    return {name: np.load(path, mmap_mode="r") for name, path in result["paths"].items()}


def _class_names(n_classes: int, class_names: Sequence[str] | None) -> list[str]:
    names = list(class_names) if class_names is not None else [f"class{k}" for k in range(n_classes)]
    if len(names) != n_classes:
        raise OutputError(f"{len(names)} class names given for {n_classes} classes")
    return names


def write_hdf5(path: str | Path, arrays: Mapping[str, np.ndarray], inlines: Sequence[int],
               crosslines: Sequence[int], samples: Sequence[float], class_names: Sequence[str] | None = None,
               attrs: Mapping[str, Any] | None = None) -> Path:
    """Write labels / probabilities / confidence / disagreement as HDF5 datasets, the survey's axes as attributes.

    Datasets keep the volume layout [inline, crossline, sample] (probabilities [class, inline, crossline, sample]);
    each carries axis attributes so a reader needs no other file. Extra `attrs` (e.g. model name) go on the root.
    """
    path = Path(path)
    n_classes = arrays["probabilities"].shape[0] if "probabilities" in arrays else None
    with h5py.File(path, "w") as f:
        f.attrs["inlines"] = np.asarray(inlines, dtype=np.int64)
        f.attrs["crosslines"] = np.asarray(crosslines, dtype=np.int64)
        f.attrs["samples"] = np.asarray(samples, dtype=np.float64)
        if n_classes is not None or class_names is not None:
            f.attrs["class_names"] = _class_names(n_classes or len(class_names), class_names)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for name, array in arrays.items():
            ds = f.create_dataset(name, shape=array.shape, dtype=array.dtype, chunks=True, compression="gzip",
                                  compression_opts=1)
            ds.attrs["axes"] = (["class"] if name == "probabilities" else []) + ["inline", "crossline", "sample"]
            axis = 1 if name == "probabilities" else 0
            for i0 in range(0, array.shape[axis], EXPORT_INLINES):
                sl = (slice(None),) * axis + (slice(i0, i0 + EXPORT_INLINES),)
                ds[sl] = array[sl]
    return path


def write_segy(survey, out_dir: str | Path, arrays: Mapping[str, np.ndarray],
               class_names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write each output as SEG-Y with the survey's geometry and headers: labels int8 (format 8), confidence,
    disagreement and one file per class of probabilities float32 (format 5). Returns file paths by output name."""
    try:
        from workers.segy_write import write_like_survey
    except ImportError as exc:
        raise OutputError("SEG-Y output needs workers.segy_write, which this installation lacks; "
                          "write HDF5 instead (format: hdf5)") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "labels" in arrays:
        if int(np.max(arrays["labels"], initial=0)) > 127:
            raise OutputError("labels above 127 do not fit SEG-Y format 8 (int8); write HDF5 instead")
        paths["labels"] = out_dir / "labels.sgy"
        write_like_survey(survey, paths["labels"], arrays["labels"].view(np.int8), "int8")
    for name in ("confidence", "disagreement"):
        if name in arrays:
            paths[name] = out_dir / f"{name}.sgy"
            write_like_survey(survey, paths[name], arrays[name], "float32")
    if "probabilities" in arrays:
        probs = arrays["probabilities"]
        for k, name in enumerate(_class_names(probs.shape[0], class_names)):
            key = f"probability_{name}"
            paths[key] = out_dir / f"{key}.sgy"
            write_like_survey(survey, paths[key], probs[k], "float32")
    return paths


def confusion_matrix(labels_pred: np.ndarray, labels_true: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [n_classes, n_classes] counts (rows true, columns predicted); true labels < 0 are ignored.

    Sums over blocks add up, so a large volume is scored a slab at a time."""
    pred = np.asarray(labels_pred).reshape(-1).astype(np.int64)
    true = np.asarray(labels_true).reshape(-1).astype(np.int64)
    if pred.shape != true.shape:
        raise OutputError(f"prediction has {pred.size} voxels, truth {true.size}: they must cover the same voxels")
    keep = true >= 0
    pred, true = pred[keep], true[keep]
    if true.size and (true.max() >= n_classes or pred.min() < 0 or pred.max() >= n_classes):
        raise OutputError(f"labels must lie in 0..{n_classes - 1} (or -1 for unlabelled truth)")
    return np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores_of(confusion: np.ndarray) -> dict[str, Any]:
    """Pixel accuracy, mean class accuracy (over classes present in the truth), per-class accuracy, confusion."""
    confusion = np.asarray(confusion, dtype=np.int64)
    total = int(confusion.sum())
    support = confusion.sum(axis=1)
    per_class = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
    present = support > 0
    return {"n_scored": total,
            "pixel_accuracy": float(np.trace(confusion) / total) if total else float("nan"),
            "mean_class_accuracy": float(np.mean(per_class[present])) if present.any() else float("nan"),
            "per_class_accuracy": [None if np.isnan(a) else float(a) for a in per_class],
            "confusion": confusion.tolist()}


def score(labels_pred: np.ndarray, labels_true: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Pixel accuracy, mean class accuracy and confusion matrix (rows true, columns predicted).

    Voxels whose true label is negative (-1: unlabelled) are ignored. Mean class accuracy averages the classes
    present in the truth. Returns plain Python numbers and lists (JSON-able).
    """
    return scores_of(confusion_matrix(labels_pred, labels_true, n_classes))
