"""Labelled points ("picks") on a survey grid: reading OpendTect/MalenoV point files, labelled slices, label volumes.

A point file is whitespace-separated text (tabs or spaces, CRLF or LF): inline, crossline, z, then optional extra
columns; leading lines that do not start with a number are headers and skipped. A line of numbers is data, so NaN or
inf in a used column is an error, named by line like any other bad line. The class of a file comes from its name
through a regex with a ``name`` group (MalenoV: ``multi_<class>_ilxl.pts``) or from a column of class ids.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from workers.names import is_internal, name_error, work_path
from workers.regular_files import UnreadableFile, read_regular
from workers.survey import Survey

Z_UNITS = ("ms", "s", "sample", "auto")


class PicksError(ValueError):
    """A pick file or pick set that cannot be used; the message names the file and the problem. A fix that is an
    argument names it as `` `name: value` `` (a job's runner turns that into the job's key, seisctl into its flag)."""


class PicksOutsideSurvey(PicksError):
    """Some points fall outside the survey; drop_outside=True drops them instead."""


@dataclass
class PickSet:
    """Points as grid indices (i inline, x crossline, s sample) with a class id each."""

    i: np.ndarray
    x: np.ndarray
    s: np.ndarray
    cls: np.ndarray
    class_names: list[str]
    dropped_outside: int = 0
    dropped_duplicates: int = 0
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.i)

    def counts(self) -> dict[str, int]:
        """Number of points per class name."""
        n = np.bincount(self.cls, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, n)}

    def positions(self) -> np.ndarray:
        """[N, 3] int64 grid indices (i, x, s)."""
        return np.stack([self.i, self.x, self.s], axis=1).astype(np.int64)

    def save(self, survey_folder: str | os.PathLike, name: str) -> Path:
        """Write ``<survey>/picks/<name>.npz`` (atomically) and return its path."""
        if (why := name_error(name)):
            raise PicksError(f"pick set name: {why}")
        path = pick_set_file(survey_folder, name)
        path.parent.mkdir(exist_ok=True)
        tmp = work_path(path, "tmp")
        with open(tmp, "wb") as fh:  # a file object: np.savez would add .npz to a name
            np.savez(fh, i=self.i, x=self.x, s=self.s, cls=self.cls, class_names=np.array(self.class_names))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, survey_folder: str | os.PathLike, name: str) -> "PickSet":
        """Read a pick set written by save."""
        path = pick_set_file(survey_folder, name)
        if not path.is_file():
            raise PicksError(f"no pick set {name!r} in {path.parent}; it has {pick_set_names(survey_folder)}")
        with np.load(path) as z:
            return cls(z["i"], z["x"], z["s"], z["cls"], [str(n) for n in z["class_names"]])


def pick_set_file(survey_folder: str | os.PathLike, name: str) -> Path:
    """Where a survey keeps its pick set `name`: ``<survey>/picks/<name>.npz``."""
    return Path(survey_folder) / "picks" / f"{name}.npz"


def pick_set_names(survey_folder: str | os.PathLike) -> list[str]:
    """The names of a survey's pick sets, sorted."""
    folder = pick_set_file(survey_folder, "_").parent
    return sorted(p.stem for p in folder.glob("*.npz") if not is_internal(p.name)) if folder.is_dir() else []


LINE_HOLDS = ("a point line holds inline, crossline and z as numbers, then optional numeric columns (e.g. "
              "'120 880 1024'); fix or delete the line")
COLUMN_NAMES = ("inline", "crossline", "z")


def _is_number(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _shown(line: bytes, limit: int = 60) -> str:
    """A line for an error message: decoded, whitespace collapsed, cut at ``limit`` characters."""
    text = " ".join(line.decode("utf-8", "replace").split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _data_lines(text: bytes, skip: int) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of every non-blank line after the ``skip`` header lines."""
    for n, line in enumerate(text.split(b"\n")[skip:], start=skip + 1):
        if line.strip():
            yield n, line


def _bad_line(path: Path, text: bytes, skip: int, columns: int) -> PicksError:
    """The error for the first line that is not ``columns`` numbers (the slow pass, run only once parsing failed)."""
    first = None
    for n, line in _data_lines(text, skip):
        first = first or n
        tokens = line.split()
        word = next((t for t in tokens if not _is_number(t)), None)
        if word is not None:
            return PicksError(f"{path}, line {n}: {_shown(line)} is not a point ({_shown(word, 20)} is not a number);"
                              f" {LINE_HOLDS}")
        if len(tokens) != columns:
            return PicksError(f"{path}, line {n}: {_shown(line)} has {len(tokens)} columns where line {first} has "
                              f"{columns} (a ragged or damaged line); every point line has the same columns: "
                              f"{LINE_HOLDS}")
    return PicksError(f"{path}: a damaged line that could not be located; {LINE_HOLDS}")


def _parse_numbers(path: Path, used: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """[rows, columns] float64 of a point file, parsed in one vectorised pass.

    Columns ``used`` (inline, crossline, z and any class column) must be finite: a NaN there is an error in the
    data, reported with its line (which is only looked for once the fast pass found a problem).
    """
    text = read_regular(path).replace(b"\r", b"")  # a FIFO or a device is refused, never waited on
    lines = text.split(b"\n", 50)
    skip = 0
    for line in lines:  # header lines: anything before the first line that starts with a number (nan included)
        tok = line.split()
        if tok and _is_number(tok[0]):
            break
        skip += 1
    body = text.split(b"\n", skip)[-1] if skip else text
    first = body.split(b"\n", 1)[0].split()
    if len(first) < 3:
        raise PicksError(f"{path}: a point line needs inline, crossline and z, got {first[:5]!r}")
    try:
        values = np.array(body.split(), dtype=np.float64)  # bytes -> float in C; far faster than np.loadtxt
    except ValueError:
        raise _bad_line(path, text, skip, len(first)) from None
    if values.size % len(first):
        raise _bad_line(path, text, skip, len(first))
    rows = values.reshape(-1, len(first))
    used = tuple(c for c in used if c < rows.shape[1])
    finite = np.isfinite(rows[:, used]).all(axis=1)
    if not finite.all():
        k = int(np.argmin(finite))
        n, line = next(itertools.islice(_data_lines(text, skip), k, None))
        c = next(c for c in used if not np.isfinite(rows[k, c]))
        name = COLUMN_NAMES[c] if c < 3 else f"class column {c}"
        raise PicksError(f"{path}, line {n}: {_shown(line)} has {line.split()[c].decode()} as {name}; a point's "
                         "inline, crossline and z (and class column) must be finite numbers, since a NaN or infinite "
                         "coordinate is an error in the data: fix or delete the line")
    return rows


def _z_to_samples(z: np.ndarray, survey: Survey, unit: str) -> np.ndarray:
    g = survey.geometry
    if unit == "auto":  # seconds when every z fits inside the axis expressed in seconds, else the survey's unit
        last_s = (g.sample_start + g.sample_step * (g.sample_count - 1)) / 1000.0
        unit = "s" if g.sample_unit == "ms" and z.size and z.max() <= last_s else g.sample_unit
    if unit == "sample":
        return np.rint(z).astype(np.int64)
    if unit == "s" and g.sample_unit == "ms":
        z = z * 1000.0
    elif unit != g.sample_unit:
        raise PicksError(f"z unit {unit!r} does not fit the survey's sample unit {g.sample_unit!r}")
    return np.rint((z - g.sample_start) / g.sample_step).astype(np.int64)


def _snap(values: np.ndarray, lines: np.ndarray) -> np.ndarray:
    step = int(lines[1] - lines[0]) if len(lines) > 1 else 1
    return np.rint((values - lines[0]) / step).astype(np.int64)


def _class_name(path: Path, pattern: str) -> str:
    m = re.search(pattern, path.name)
    if not m or "name" not in m.groupdict():
        raise PicksError(f"{path.name}: the class pattern {pattern!r} (with a (?P<name>...) group) does not match "
                         "the file name; rename the file or pass class_pattern= / class_column=")
    return m.group("name")


def read_pick_files(paths: list[str | os.PathLike], survey: Survey,
                    class_pattern: str = r"multi_(?P<name>.+)_ilxl", z_unit: str = "ms",
                    class_column: int | None = None, drop_outside: bool = False) -> PickSet:
    """Read point files into a PickSet snapped to the survey grid.

    Classes come from each file's name through ``class_pattern`` or, when ``class_column`` is given, from that
    (0-based) column of integer class ids. Points outside the survey raise PicksOutsideSurvey (with counts and
    examples) unless ``drop_outside``; exact duplicates are dropped and counted.
    """
    if z_unit not in Z_UNITS:
        raise PicksError(f"z unit {z_unit!r} is not one of {Z_UNITS}")
    names: list[str] = []
    parts: list[tuple[np.ndarray, np.ndarray, Path]] = []
    for p in map(Path, paths):
        try:
            rows = _parse_numbers(p, (0, 1, 2) + ((class_column,) if class_column is not None else ()))
        except UnreadableFile as exc:
            raise PicksError(f"pick file {exc}") from None
        if class_column is not None:
            if class_column >= rows.shape[1]:
                raise PicksError(f"{p}: class column {class_column} but the file has {rows.shape[1]} columns")
            ids = rows[:, class_column].astype(np.int64)
        else:
            name = _class_name(p, class_pattern)
            if name not in names:
                names.append(name)
            ids = np.full(len(rows), names.index(name), dtype=np.int64)
        parts.append((rows, ids, p))
    if class_column is not None:
        top = max((int(ids.max()) for _, ids, _ in parts if ids.size), default=-1)
        names = [f"class_{k}" for k in range(top + 1)]
    return _to_pickset(parts, survey, names, z_unit, drop_outside)


def _to_pickset(parts: list[tuple[np.ndarray, np.ndarray, Path]], survey: Survey, names: list[str], z_unit: str,
                drop_outside: bool) -> PickSet:
    rows = np.concatenate([r[:, :3] for r, _, _ in parts]) if parts else np.zeros((0, 3))
    cls = np.concatenate([c for _, c, _ in parts]) if parts else np.zeros(0, np.int64)
    i, x = _snap(rows[:, 0], survey.inlines), _snap(rows[:, 1], survey.crosslines)
    s = _z_to_samples(rows[:, 2], survey, z_unit)
    ni, nx, ns = survey.shape
    inside = (i >= 0) & (i < ni) & (x >= 0) & (x < nx) & (s >= 0) & (s < ns) & (cls >= 0)
    n_out = int((~inside).sum())
    if n_out and not drop_outside:
        bad = rows[~inside][:3].tolist()
        raise PicksOutsideSurvey(
            f"{n_out} of {len(rows)} points are outside survey {survey.name!r} (inlines {survey.inlines[0]}.."
            f"{survey.inlines[-1]}, crosslines {survey.crosslines[0]}..{survey.crosslines[-1]}, z "
            f"{survey.samples[0]}..{survey.samples[-1]} {survey.geometry.sample_unit}), e.g. {bad}; check "
            "`z_unit`, or give `drop_outside: true` to drop them")
    keys = np.stack([i, x, s, cls], axis=1)[inside]
    uniq, first = np.unique(keys, axis=0, return_index=True)
    uniq = keys[np.sort(first)]  # keep file order
    return PickSet(uniq[:, 0].astype(np.int32), uniq[:, 1].astype(np.int32), uniq[:, 2].astype(np.int32),
                   uniq[:, 3].astype(np.int32), names, dropped_outside=n_out,
                   dropped_duplicates=int(len(keys) - len(uniq)))


def merge_pick_sets(old: PickSet, new: PickSet) -> tuple[PickSet, dict[str, int]]:
    """`new` added to `old`: the old points are kept, the new ones appended; a position (inline, crossline,
    sample) held by both keeps the new point's class (the newer pick wins). Classes are matched by name: the old
    set's class ids stay as they were, a class only the new files name is appended after them. Returns the merged
    set and counts: ``kept`` (old points not picked again), ``added`` (new positions), ``replaced`` (positions
    picked again, with the new class), ``changed_class`` (of those, how many changed class), ``new_classes``."""
    names = list(old.class_names) + [n for n in new.class_names if n not in old.class_names]
    remap = np.array([names.index(n) for n in new.class_names], dtype=np.int32)
    new_cls = remap[new.cls] if len(new) else new.cls.astype(np.int32)
    shape = np.array([max(int(a.max(initial=-1)), int(b.max(initial=-1))) + 1
                      for a, b in ((old.i, new.i), (old.x, new.x), (old.s, new.s))], dtype=np.int64)

    def keys(ps: PickSet) -> np.ndarray:
        return (ps.i.astype(np.int64) * shape[1] + ps.x) * shape[2] + ps.s

    old_keys, new_keys = keys(old), keys(new)
    again = np.isin(old_keys, new_keys)
    at = {int(k): c for k, c in zip(old_keys[again], old.cls[again])}
    changed = sum(1 for k, c in zip(new_keys, new_cls) if int(k) in at and at[int(k)] != c)
    keep = ~again
    merged = PickSet(np.concatenate([old.i[keep], new.i]).astype(np.int32),
                     np.concatenate([old.x[keep], new.x]).astype(np.int32),
                     np.concatenate([old.s[keep], new.s]).astype(np.int32),
                     np.concatenate([old.cls[keep], new_cls]).astype(np.int32), names,
                     dropped_outside=new.dropped_outside, dropped_duplicates=new.dropped_duplicates)
    return merged, {"kept": int(keep.sum()), "added": int((~np.isin(new_keys, old_keys)).sum()),
                    "replaced": int(again.sum()), "changed_class": int(changed),
                    "new_classes": len(names) - len(old.class_names)}


def from_labelled_slice(survey: Survey, inline: int, labels: np.ndarray, class_names: list[str]) -> PickSet:
    """Points of a labelled inline: ``labels`` is [n_crosslines, n_samples] of class ids, -1 = unlabelled."""
    i, _ = survey.index_of(inline, int(survey.crosslines[0]))
    if labels.shape != survey.shape[1:]:
        raise PicksError(f"labelled slice has shape {labels.shape}; inline slices of survey {survey.name!r} are "
                         f"{survey.shape[1:]} (crossline x sample)")
    if labels.max(initial=-1) >= len(class_names):
        raise PicksError(f"label {int(labels.max())} has no class name (got {len(class_names)} names)")
    x, s = np.nonzero(labels >= 0)
    return PickSet(np.full(len(x), i, np.int32), x.astype(np.int32), s.astype(np.int32),
                   labels[x, s].astype(np.int32), list(class_names))


def from_label_volume(survey: Survey, volume: str, class_names: list[str], unlabelled: float = -1,
                      step: int = 1) -> PickSet:
    """Points of a label volume in the survey (imported with add_volume), every ``step``-th voxel on each axis."""
    vol = survey.volume(volume)
    chunks = []
    for i in range(0, survey.shape[0], step):  # inline by inline: bounded memory on big cubes
        plane = np.asarray(vol[i, ::step, ::step])
        x, s = np.nonzero(plane != unlabelled)
        ids = np.rint(plane[x, s]).astype(np.int64)
        chunks.append(np.stack([np.full(len(x), i), x * step, s * step, ids], axis=1))
    pts = np.concatenate(chunks) if chunks else np.zeros((0, 4), np.int64)
    if len(pts) and (pts[:, 3].min() < 0 or pts[:, 3].max() >= len(class_names)):
        raise PicksError(f"label volume {volume!r} holds class ids {int(pts[:, 3].min())}..{int(pts[:, 3].max())}"
                         f" but {len(class_names)} class names were given")
    return PickSet(*(pts[:, k].astype(np.int32) for k in range(4)), list(class_names))
