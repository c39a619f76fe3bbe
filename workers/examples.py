"""Example sets (OpendTect's "training sets"): crops around picks, with labels, in one self-describing HDF5 file.

File ``<examples folder>/<name>.h5``::

    x         [N, C, *crop] float32, chunked one example per chunk (raw amplitudes; normalise with meta's stats)
    y         [N] int32 class ids (index into meta["class_names"]): the class of the crop's centre
    labels    [N, *crop] int16 every pick of the example's survey that the crop covers (class ids), -1 elsewhere:
              what segmentation models learn from (sets extracted before it was added lack it)
    source    [N] int32 index into meta["surveys"]
    position  [N, 3] int32 grid indices (inline, crossline, sample) of the crop centre
    attrs["meta"]  one JSON document: surveys, volumes, crop, class names and counts, normalisation, created,
                   job_id, notes, locked

The folder's ``default.json`` names the default set. Locked sets cannot be removed, renamed or overwritten.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from workers.crops import CropSpec, crop_fit_problem, extract_crop
from workers.names import is_internal, name_error, work_path
from workers.picks import PickSet
from workers.sampling import PointLabels
from workers.survey import Survey

BATCH = 256  # examples written per HDF5 write: bounds memory, amortises h5py overhead
DEFAULT_FILE = "default.json"


class ExampleSetError(ValueError):
    """An example set that is missing, malformed, or cannot be changed as asked."""


class ExampleSetLocked(ExampleSetError):
    """The set is locked; unlock it first (seisctl examples unlock <name>)."""


class ExtractCancelled(Exception):
    """cancel() returned True during extraction; no file was written."""


@dataclass
class ExampleSetInfo:
    """What ``info`` reports about one example set."""

    name: str
    path: Path
    count: int
    meta: dict[str, Any]

    @property
    def locked(self) -> bool:
        return bool(self.meta.get("locked", False))

    @property
    def class_counts(self) -> dict[str, int]:
        return dict(self.meta.get("class_counts", {}))


@dataclass
class BrokenExampleSet:
    """A file in the examples folder that cannot be read as a set; ``error`` is what ``info`` on it raises."""

    name: str
    path: Path
    error: str


Source = tuple[Survey, PickSet, list[str]]


def class_union(class_lists: list[list[str]]) -> tuple[list[str], list[np.ndarray]]:
    """One class list across several (first-seen order) and, per list, its ids mapped into it: how extract joins
    the pick sets of its sources, and how a train job joins the class lists of its example sets."""
    names: list[str] = []
    maps = []
    for own in class_lists:
        for n in own:
            if n not in names:
                names.append(n)
        maps.append(np.array([names.index(n) for n in own], dtype=np.int32))
    return names, maps


def _class_union(sources: list[Source]) -> tuple[list[str], list[np.ndarray]]:
    return class_union([list(picks.class_names) for _, picks, _ in sources])


def _check_sources(sources: list[Source]) -> list[str]:
    if not sources:
        raise ExampleSetError("no sources given: pass at least one (survey, picks, volumes)")
    volumes = list(sources[0][2])
    for survey, _, vols in sources:
        if len(vols) != len(volumes):
            raise ExampleSetError(f"every source needs {len(volumes)} volumes (channels); survey {survey.name!r} "
                                  f"gives {list(vols)}")
        missing = [v for v in vols if v not in survey.volumes]
        if missing:
            raise ExampleSetError(f"survey {survey.name!r} has no volume(s) {missing}; it has {survey.volumes}")
    return volumes


def _check_crop(sources: list[Source], spec: CropSpec) -> None:
    """The crop rule train jobs apply too (workers.crops.crop_fit_problem): one rule, one message."""
    for survey, _, _ in sources:
        if (problem := crop_fit_problem(spec, survey.shape, survey.name)):
            raise ExampleSetError(problem)


def _meta(sources: list[Source], spec: CropSpec, names: list[str], counts: np.ndarray, job_id: str | None,
          notes: str) -> dict[str, Any]:
    return {
        "format_version": 1,
        "surveys": [{"name": s.name, "folder": str(s.folder), "volumes": list(v)} for s, _, v in sources],
        "volumes": list(sources[0][2]),
        "crop": spec.to_dict(),
        "class_names": names,
        "class_counts": {n: int(c) for n, c in zip(names, counts)},
        "normalisation": [{v: s.stats(v) for v in vols} for s, _, vols in sources],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job_id": job_id,
        "notes": notes,
        "locked": False,
    }


def extract_examples(sources: list[Source], spec: CropSpec, out_path: str | os.PathLike, job_id: str | None = None,
                     notes: str = "", progress: Callable[[float, str], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> ExampleSetInfo:
    """Crop every pick of every source (channels = the source's volumes) into a new example set at ``out_path``.

    An existing unlocked set at ``out_path`` is replaced; a locked one raises ExampleSetLocked. The file is built
    beside the target and renamed at the end, so readers never see a half-written set.
    """
    out_path = Path(out_path)
    if out_path.exists() and info(out_path).locked:
        raise ExampleSetLocked(f"example set {out_path.stem!r} is locked; unlock it before overwriting")
    _check_sources(sources)
    _check_crop(sources, spec)
    names, maps = _class_union(sources)
    total = sum(len(p) for _, p, _ in sources)
    channels = len(sources[0][2])
    crop = spec.out_shape()
    tmp = work_path(out_path)
    counts = np.zeros(len(names), dtype=np.int64)
    try:
        with h5py.File(tmp, "w") as h5:
            dx = h5.create_dataset("x", (total, channels, *crop), np.float32, chunks=(1, channels, *crop))
            dy = h5.create_dataset("y", (total,), np.int32)
            ds = h5.create_dataset("source", (total,), np.int32)
            dp = h5.create_dataset("position", (total, 3), np.int32)
            dl = h5.create_dataset("labels", (total, *crop), np.int16, chunks=(1, *crop))
            done = 0
            for k, (survey, picks, vols) in enumerate(sources):
                y = maps[k][picks.cls] if len(picks) else np.zeros(0, np.int32)
                counts += np.bincount(y, minlength=len(names))
                done = _write_source(survey, picks, vols, spec, (dx, dy, ds, dp, dl), y, k, done, total, progress,
                                     cancel)
            h5.attrs["meta"] = json.dumps(_meta(sources, spec, names, counts, job_id, notes))
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return info(out_path)


def _write_source(survey: Survey, picks: PickSet, vols: list[str], spec: CropSpec, dsets: tuple, y: np.ndarray,
                  k: int, done: int, total: int, progress: Callable[[float, str], None] | None,
                  cancel: Callable[[], bool] | None) -> int:
    """Write one source's examples in batches; returns the new count of examples written."""
    dx, dy, ds, dp, dl = dsets
    volumes = [survey.volume(v) for v in vols]
    pos = picks.positions()
    sparse = PointLabels(survey.shape, pos, y)  # the labels a segmentation job cuts around the same picks
    buf = np.empty((BATCH, len(vols), *spec.out_shape()), dtype=np.float32)
    for a in range(0, len(pos), BATCH):
        if cancel is not None and cancel():
            raise ExtractCancelled(f"extraction cancelled after {done} of {total} examples")
        b = min(a + BATCH, len(pos))
        for j in range(a, b):
            for c, vol in enumerate(volumes):
                extract_crop(vol, tuple(pos[j]), spec, out=buf[j - a, c])
        dx[done:done + b - a] = buf[:b - a]
        dy[done:done + b - a] = y[a:b]
        ds[done:done + b - a] = k
        dp[done:done + b - a] = pos[a:b]
        dl[done:done + b - a] = sparse.crops(pos[a:b], spec).astype(np.int16)
        done += b - a
        if progress is not None:
            progress(done / max(total, 1), f"{done} of {total} examples")
    return done


# ---- management: seisctl examples list|info|rename|lock|unlock|rm|default|note ----------------------------------

def _path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ExampleSetError(f"no example set at {path}")
    return path


def info(path: str | os.PathLike) -> ExampleSetInfo:
    """Metadata and size of one example set."""
    path = _path(path)
    try:
        with h5py.File(path, "r") as h5:
            meta = json.loads(h5.attrs["meta"])
            count = int(h5["y"].shape[0])
        if not isinstance(meta, dict):
            raise TypeError(f"its meta attribute is JSON {type(meta).__name__}, not an object")
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:  # h5py's and json's ways to refuse
        raise ExampleSetError(f"example set {path.stem!r} ({path}) cannot be read: it is truncated, damaged or not a "
                              f"seisd example set ({exc}); remove it (seisctl examples rm {path.stem}) and extract "
                              "it again") from exc
    return ExampleSetInfo(path.stem, path, count, meta)


def list_sets(folder: str | os.PathLike) -> list[ExampleSetInfo | BrokenExampleSet]:
    """Every example set in a folder, by name; a file that cannot be read is listed as a BrokenExampleSet (one
    damaged file must neither hide the others nor vanish without a word)."""
    folder = Path(folder)
    out: list[ExampleSetInfo | BrokenExampleSet] = []
    for p in sorted(q for q in folder.glob("*.h5") if not is_internal(q.name)) if folder.is_dir() else []:
        try:
            out.append(info(p))
        except ExampleSetError as exc:
            out.append(BrokenExampleSet(p.stem, p, str(exc)))
    return out


def _update_meta(path: str | os.PathLike, **changes: Any) -> ExampleSetInfo:
    path = _path(path)
    with h5py.File(path, "r+") as h5:
        meta = json.loads(h5.attrs["meta"])
        meta.update(changes)
        h5.attrs["meta"] = json.dumps(meta)
    return info(path)


def set_locked(path: str | os.PathLike, locked: bool) -> ExampleSetInfo:
    """Lock (protect from rm/rename/overwrite) or unlock a set."""
    return _update_meta(path, locked=bool(locked))


def set_note(path: str | os.PathLike, notes: str) -> ExampleSetInfo:
    """Replace the set's notes (allowed on locked sets: notes are not data)."""
    return _update_meta(path, notes=notes)


def _refuse_locked(path: Path, action: str, damaged_ok: bool = False) -> None:
    try:
        locked = info(path).locked
    except ExampleSetError:
        if not damaged_ok:
            raise
        return  # a damaged set's lock flag cannot be read, and removing the set is the fix its error names
    if locked:
        raise ExampleSetLocked(f"example set {path.stem!r} is locked; unlock it before you {action} it")


def rename(path: str | os.PathLike, new_name: str) -> Path:
    """Rename a set within its folder (the default follows it); refused when locked or the name is taken."""
    path = _path(path)
    _refuse_locked(path, "rename")
    if (why := name_error(new_name)):
        raise ExampleSetError(f"example set name: {why}")
    target = path.with_name(f"{new_name}.h5")
    if target.exists():
        raise ExampleSetError(f"an example set named {new_name!r} already exists in {path.parent}")
    os.rename(path, target)
    if get_default(path.parent) == path.stem:
        set_default(path.parent, new_name)
    return target


def remove(path: str | os.PathLike) -> None:
    """Delete a set; refused with ExampleSetLocked when locked (a damaged set, whose lock cannot be read, is removed).
    Clears the default if it was the default."""
    path = _path(path)
    _refuse_locked(path, "remove", damaged_ok=True)
    path.unlink()
    if get_default(path.parent) == path.stem:
        (path.parent / DEFAULT_FILE).unlink()


def set_default(folder: str | os.PathLike, name: str) -> None:
    """Make ``name`` the folder's default example set."""
    folder = Path(folder)
    _path(folder / f"{name}.h5")
    tmp = work_path(folder / DEFAULT_FILE, "tmp")
    tmp.write_text(json.dumps({"default": name}))
    os.replace(tmp, folder / DEFAULT_FILE)


def get_default(folder: str | os.PathLike) -> str | None:
    """Name of the folder's default example set, or None."""
    path = Path(folder) / DEFAULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("default")
    except json.JSONDecodeError as exc:
        raise ExampleSetError(f"{path} is not valid JSON ({exc}); delete it and set the default again") from exc
