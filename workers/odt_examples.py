"""OpendTect's example-set ("training set") HDF5 files, read into seisd example sets and written from them.

OpendTect's layout (written by OpendTect, read by dgbpy's hdf5.getInfo and getDatasets)::

    ++info++     a scalar dataset whose string attributes hold every metadatum; lists joined by backticks, Yes/No
      Type, Content                      Seismic Classification, Classification Data (the one kind served here)
      Input.Shape, Output.Shape          inline`crossline`z of an example; 1 (a class per example)
      Examples.Size                      targets; per target i: Examples.i.Name (its HDF5 group), .Survey, .Target,
                                         .Size (collections), and per collection j: Examples.i.j.Name, .ID,
                                         .Class Name (and .Line name for 2D lines)
      Input.Size                         inputs (surveys); per input i: Input.i.Name, .Survey, .Size (attributes),
                                         and per attribute j: Input.i.j.Name, .ID, .Stats (mean`std)
      Input.Scaling.Type, Edge extrapolation, Classes (the class values)
    /<Examples.i.Name>/<collection>/x_data   [N, n_attributes, inline, crossline, z] float32
                                   /y_data   [N, 1] the class value of each example
    (older files keep one dataset per example under x_data/ and y_data/; both are read)

How it maps onto a seisd example set (workers/examples.py), docs/opendtect.md has the table: an example's
[n_attributes, inline, crossline, z] is the crop [C, *size] with the orientation that its one-long axis says
(1`a`b inline, a`1`b crossline, a`b`1 time, else 3d); attributes are channels (volumes); each target group is a
source (survey); class values become class ids 0..K-1 in the order of `Classes` (else sorted), named by the Class
Name of the collection that holds them; Stats become the normalisation. OpendTect keeps no grid positions:
`position` is -1. seisd writes, beside OpendTect's datasets, a group ++seisd++ (the set's meta and each example's
row, source and position; OpendTect does not read it) so that an export read back by an import gives the same set.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from workers.crops import CropSpec
from workers.examples import BATCH, ExampleSetError, ExampleSetInfo, ExampleSetLocked, ExtractCancelled, info

INFO, SEISD = "++info++", "++seisd++"
CLASSIFICATION = "Seismic Classification"
Progress = Callable[[float, str], None] | None
Cancel = Callable[[], bool] | None


class OdtExampleError(ExampleSetError):
    """A file that is not an OpendTect example set seisd can read, or one it cannot write; names what and why."""


# -- ++info++ -----------------------------------------------------------------------------------------------------

def read_info(h5: h5py.File, path: Path) -> dict[str, str]:
    """The ++info++ attributes as text (OpendTect writes bytes; an array attribute counts by its first item)."""
    if INFO not in h5:
        raise OdtExampleError(f"{path} has no {INFO} dataset at its root: it is not an example set written by "
                              "OpendTect (export one from OpendTect's machine-learning plugin)")
    out = {}
    for key, value in h5[INFO].attrs.items():
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0] if value.size else b""
        out[key] = (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).split("\x00")[0]
    return out


def _get(attrs: dict[str, str], key: str, path: Path) -> str:
    if key not in attrs:
        raise OdtExampleError(f"{path}: {INFO} lacks the attribute {key!r}")
    return attrs[key].strip()


def _ints(attrs: dict[str, str], key: str, path: Path) -> list[int]:
    try:
        return [int(float(v)) for v in _get(attrs, key, path).split("`")]
    except ValueError:
        raise OdtExampleError(f"{path}: {INFO} attribute {key!r} is {attrs[key]!r}, not integers joined by "
                              "backticks") from None


def crop_of_shape(shape: list[int]) -> CropSpec:
    """Input.Shape (inline, crossline, z) as a seisd crop: its one-long axis says the orientation."""
    il, xl, z = shape
    if il == 1:
        return CropSpec((xl, z), "inline")
    if xl == 1:
        return CropSpec((il, z), "crossline")
    if z == 1:
        return CropSpec((il, xl), "time")
    return CropSpec((il, xl, z), "3d")


def shape_of_crop(crop: CropSpec) -> list[int]:
    """The inverse: a seisd crop as Input.Shape."""
    shape = [1, 1, 1]
    for size, axis in zip(crop.size, crop.volume_axes):
        shape[axis] = size
    return shape


# -- reading --------------------------------------------------------------------------------------------------------

def _collections(h5: h5py.File, attrs: dict[str, str], path: Path) -> list[tuple[int, str, str, str | None]]:
    """(target index, group, collection, class name) of every collection that has data, in ++info++ order."""
    out = []
    for i in range(_ints(attrs, "Examples.Size", path)[0]):
        group = _get(attrs, f"Examples.{i}.Name", path)
        if group not in h5:
            continue  # as dgbpy does: a target without data is skipped
        for j in range(_ints(attrs, f"Examples.{i}.Size", path)[0]):
            key = f"Examples.{i}.{j}."
            name = attrs.get(key + "Line name") or _get(attrs, key + "Name", path).replace("/", "_")
            if name in h5[group] and "x_data" in h5[group][name]:
                out.append((i, group, name, attrs.get(key + "Class Name")))
            elif any(k.startswith(f"{j}:") for k in h5[group]):
                raise OdtExampleError(f"{path}: group {group!r} keeps one dataset per example at its top (the "
                                      "oldest OpendTect layout); export the set again from a recent OpendTect")
    if not out:
        raise OdtExampleError(f"{path} holds no examples: no <target>/<collection>/x_data of the collections its "
                              f"{INFO} names")
    return out


class _Collection:
    """One collection's x_data and y_data, as one dataset each or as one dataset per example (older layout)."""

    def __init__(self, grp: h5py.Group, where: str):
        x, y = grp["x_data"], grp.get("y_data")
        if y is None:
            raise OdtExampleError(f"{where} has x_data but no y_data (unlabelled examples cannot be trained on)")
        self.names = sorted(x, key=_natural) if isinstance(x, h5py.Group) else None
        self.x, self.y, self.where = x, y, where
        self.n = len(self.names) if self.names is not None else int(x.shape[0])
        if (len(y) if isinstance(y, h5py.Group) else int(y.shape[0])) != self.n:
            raise OdtExampleError(f"{where}: x_data has {self.n} examples, y_data {len(y)}")

    def labels(self) -> np.ndarray:
        if self.names is None:
            y = np.asarray(self.y[()], dtype=np.float64).reshape(self.n, -1)
        else:
            y = np.stack([np.asarray(self.y[k][()], np.float64).reshape(-1) for k in self.names])
        if y.shape[1] != 1:
            raise OdtExampleError(f"{self.where}: y_data holds {y.shape[1]} outputs per example; seisd trains "
                                  "classifiers with one class per example")
        return y[:, 0]

    def rows(self, a: int, b: int, shape: tuple[int, ...]) -> np.ndarray:
        x = self.x[a:b] if self.names is None else np.stack([self.x[k][()] for k in self.names[a:b]])
        try:
            return np.asarray(x, dtype=np.float32).reshape((b - a, *shape))
        except ValueError:
            raise OdtExampleError(f"{self.where}: x_data rows of shape {list(x.shape[1:])} do not hold "
                                  f"[attributes, inline, crossline, z] = {list(shape)}") from None


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in name.replace(":", " ").split())


def _class_table(colls: list[_Collection], names: list[str | None], attrs: dict[str, str],
                 path: Path) -> tuple[list[float], list[str], list[np.ndarray]]:
    """Class values (Classes, else sorted), their names, and each collection's labels as class ids."""
    labels = [c.labels() for c in colls]
    seen = np.unique(np.concatenate(labels))
    values = [float(v) for v in attrs["Classes"].split("`")] if attrs.get("Classes") else [float(v) for v in seen]
    missing = sorted(set(seen.tolist()) - set(values))
    if missing:
        raise OdtExampleError(f"{path}: y_data holds class values {missing} that its Classes attribute "
                              f"({attrs.get('Classes')}) does not list")
    class_names = [f"class {v:g}" for v in values]
    for name, y in zip(names, labels):
        if name and len(np.unique(y)) == 1:
            class_names[values.index(float(y[0]))] = name
    index = {v: k for k, v in enumerate(values)}
    return values, class_names, [np.array([index[float(v)] for v in y], np.int32) for y in labels]


def _inputs(attrs: dict[str, str], path: Path) -> list[dict[str, Any]]:
    """Per input (survey): its name, survey, attribute names and (mean, std) pairs (None where not stored)."""
    out = []
    for i in range(_ints(attrs, "Input.Size", path)[0]):
        key = f"Input.{i}."
        names, stats = [], []
        for j in range(_ints(attrs, key + "Size", path)[0]):
            names.append(_get(attrs, f"{key}{j}.Name", path).replace("`", ":"))
            text = attrs.get(f"{key}{j}.Stats", "0`0")
            stats.append(None if text in ("0`0", "") else tuple(float(v) for v in text.split("`")[:2]))
        out.append({"name": attrs.get(key + "Name", ""), "survey": attrs.get(key + "Survey", ""),
                    "volumes": names, "stats": stats})
    if not out or not out[0]["volumes"]:
        raise OdtExampleError(f"{path}: {INFO} names no input attributes (Input.Size, Input.0.Size)")
    return out


# -- import ---------------------------------------------------------------------------------------------------------

def import_odt(src: str | os.PathLike, out_path: str | os.PathLike, notes: str | None = None,
               job_id: str | None = None, progress: Progress = None, cancel: Cancel = None) -> ExampleSetInfo:
    """Read OpendTect example set `src` into a new seisd example set at `out_path` (an unlocked one there is
    replaced; a locked one raises ExampleSetLocked). Built beside the target and renamed at the end."""
    src, out_path = Path(src), Path(out_path)
    if out_path.exists() and info(out_path).locked:
        raise ExampleSetLocked(f"example set {out_path.stem!r} is locked; unlock it before overwriting")
    tmp = out_path.with_name(out_path.name + ".partial")
    try:
        with h5py.File(src, "r") as h5, h5py.File(tmp, "w") as out:
            _import(h5, src, out, notes, job_id, progress, cancel)
        os.replace(tmp, out_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OdtExampleError(f"{src} cannot be read as HDF5, or {out_path} written: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return info(out_path)


def _import(h5: h5py.File, src: Path, out: h5py.File, notes: str | None, job_id: str | None, progress: Progress,
            cancel: Cancel) -> None:
    attrs = read_info(h5, src)
    kind = _get(attrs, "Type", src)
    if kind != CLASSIFICATION or attrs.get("Content", "Classification Data") != "Classification Data":
        raise OdtExampleError(f"{src} is a {kind!r} example set ({attrs.get('Content', '')}); seisd imports "
                              f"{CLASSIFICATION!r} sets (one class per example) only, see docs/opendtect.md")
    shape = _ints(attrs, "Input.Shape", src)
    if len(shape) != 3:
        raise OdtExampleError(f"{src}: Input.Shape {attrs['Input.Shape']!r} is not inline`crossline`z")
    found = _collections(h5, attrs, src)
    colls = [_Collection(h5[g][c], f"{src}:/{g}/{c}") for _, g, c, _ in found]
    values, class_names, ids = _class_table(colls, [n for *_, n in found], attrs, src)
    inputs = _inputs(attrs, src)
    channels = len(inputs[0]["volumes"])
    stored = json.loads(h5[SEISD].attrs["meta"]) if SEISD in h5 else None   # written by export_odt
    crop = CropSpec.from_dict(stored["crop"]) if stored else crop_of_shape(shape)
    total = sum(c.n for c in colls)
    dx = out.create_dataset("x", (total, channels, *crop.size), np.float32, chunks=(1, channels, *crop.size))
    dy = out.create_dataset("y", (total,), np.int32)
    ds = out.create_dataset("source", (total,), np.int32)
    dp = out.create_dataset("position", (total, 3), np.int32, fillvalue=-1)
    order = np.asarray(h5[SEISD]["row"][()]) if stored else np.arange(total)
    targets = sorted({i for i, *_ in found})
    sums = np.zeros((len(targets), channels, 3))   # count, sum, sum of squares per source and channel
    done = 0
    for (i, *_), coll, y in zip(found, colls, ids):
        for a in range(0, coll.n, BATCH):
            if cancel is not None and cancel():
                raise ExtractCancelled(f"import cancelled after {done} of {total} examples")
            b = min(a + BATCH, coll.n)
            x = coll.rows(a, b, (channels, *crop.size))
            rows = order[done:done + b - a]
            _write_rows(dx, rows, x)
            _write_rows(dy, rows, y[a:b])
            _write_rows(ds, rows, np.full(b - a, targets.index(i), np.int32))
            flat = x.reshape(b - a, channels, -1).astype(np.float64)
            sums[targets.index(i)] += np.stack([np.full(channels, flat.shape[2] * (b - a)), flat.sum((0, 2)),
                                                (flat ** 2).sum((0, 2))], axis=1)
            done += b - a
            if progress is not None:
                progress(done / total, f"{done} of {total} examples")
    if stored:
        ds[...] = h5[SEISD]["source"][()]
        dp[...] = h5[SEISD]["position"][()]
        meta = stored if notes is None else {**stored, "notes": notes}
    else:
        meta = _meta(attrs, src, crop, inputs, targets, class_names, values, np.concatenate(ids), sums, job_id,
                     notes or "")
    out.attrs["meta"] = json.dumps(meta)


def _write_rows(dset: h5py.Dataset, rows: np.ndarray, values: np.ndarray) -> None:
    """values[k] into row rows[k]; consecutive rows (every import but a round trip) in one write."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        dset[int(rows[0]):int(rows[-1]) + 1] = values
        return
    for r, v in zip(rows, values):
        dset[int(r)] = v


def _meta(attrs: dict[str, str], src: Path, crop: CropSpec, inputs: list[dict[str, Any]], targets: list[int],
          class_names: list[str], values: list[float], y: np.ndarray, sums: np.ndarray, job_id: str | None,
          notes: str) -> dict[str, Any]:
    volumes = inputs[0]["volumes"]
    surveys, norm = [], []
    for k, i in enumerate(targets):
        survey = attrs.get(f"Examples.{i}.Survey") or attrs.get(f"Examples.{i}.Name", "")
        inp = next((p for p in inputs if p["survey"] and p["survey"] == survey), inputs[min(i, len(inputs) - 1)])
        surveys.append({"name": survey, "folder": "", "volumes": list(volumes)})
        stats = {}
        for c, v in enumerate(volumes):
            n, s1, s2 = sums[k, c]
            mean, std = inp["stats"][c] if c < len(inp["stats"]) and inp["stats"][c] else (
                s1 / max(n, 1), float(np.sqrt(max(s2 / max(n, 1) - (s1 / max(n, 1)) ** 2, 0.0))))
            stats[v] = {"mean": float(mean), "std": float(std)}
        norm.append(stats)
    return {"format_version": 1, "surveys": surveys, "volumes": list(volumes), "crop": crop.to_dict(),
            "class_names": class_names, "class_counts": {n: int(c) for n, c in zip(
                class_names, np.bincount(y, minlength=len(class_names)))},
            "normalisation": norm, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "job_id": job_id,
            "notes": notes, "locked": False,
            "opendtect": {"file": str(src), "type": attrs.get("Type"), "class_values": values,
                          "scaling": attrs.get("Input.Scaling.Type"), "input_shape": attrs.get("Input.Shape")}}


# -- export ---------------------------------------------------------------------------------------------------------

def export_odt(set_path: str | os.PathLike, out_path: str | os.PathLike, overwrite: bool = False,
               progress: Progress = None, cancel: Cancel = None) -> dict[str, Any]:
    """Write seisd example set `set_path` as an OpendTect example set at `out_path`; refused when the file exists
    unless `overwrite`. Written beside the target and renamed at the end."""
    s, out_path = info(set_path), Path(out_path)
    if out_path.exists() and not overwrite:
        raise OdtExampleError(f"{out_path} already exists; choose another file or allow overwriting")
    tmp = out_path.with_name(out_path.name + ".partial")
    try:
        with h5py.File(s.path, "r") as h5, h5py.File(tmp, "w") as out:
            summary = _export(h5, s, out, progress, cancel)
        os.replace(tmp, out_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OdtExampleError(f"{out_path} cannot be written: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {**summary, "file": str(out_path)}


def _export(h5: h5py.File, s: ExampleSetInfo, out: h5py.File, progress: Progress, cancel: Cancel) -> dict[str, Any]:
    meta, crop = s.meta, CropSpec.from_dict(s.meta["crop"])
    y, source = h5["y"][()], h5["source"][()]
    names, volumes = list(meta["class_names"]), list(meta["volumes"])
    shape = shape_of_crop(crop)
    groups: list[str] = []
    for sv in meta["surveys"]:   # one group per source; a survey named twice gets _2, _3 ...
        g, k = sv["name"] or "examples", 2
        while g in groups or g in (INFO, SEISD):
            g, k = f"{sv['name']}_{k}", k + 1
        groups.append(g)
    a = {"Type": CLASSIFICATION, "Content": "Classification Data", "Version": "1",
         "Input.Shape": "`".join(map(str, shape)), "Output.Shape": "1", "Edge extrapolation": "No",
         "Input.Scaling.Type": "Global Standardization", "Examples.Size": str(len(groups)),
         "Classes": "`".join(str(k + 1) for k in range(len(names))), "Input.Size": str(len(groups))}
    order, done = [], 0
    for k, g in enumerate(groups):
        survey = meta["surveys"][k]["name"]
        stats = (meta.get("normalisation") or [{}] * len(groups))[k]
        a.update({f"Input.{k}.Name": survey, f"Input.{k}.Survey": survey, f"Input.{k}.Size": str(len(volumes))})
        for c, v in enumerate(volumes):
            st = stats.get(v) or {}
            a.update({f"Input.{k}.{c}.Name": v, f"Input.{k}.{c}.ID": "",
                      f"Input.{k}.{c}.Stats": f"{st.get('mean', 0)}`{st.get('std', 0)}"})
        present = [c for c in range(len(names)) if np.any((source == k) & (y == c))]
        a.update({f"Examples.{k}.Name": g, f"Examples.{k}.Survey": survey, f"Examples.{k}.Target": s.name,
                  f"Examples.{k}.Size": str(len(present))})
        for j, c in enumerate(present):
            coll = names[c].replace("/", "_")
            a.update({f"Examples.{k}.{j}.Name": coll, f"Examples.{k}.{j}.ID": "",
                      f"Examples.{k}.{j}.Class Name": names[c]})
            rows = np.flatnonzero((source == k) & (y == c))
            grp = out.create_group(f"{g}/{coll}")
            dx = grp.create_dataset("x_data", (len(rows), len(volumes), *shape), np.float32,
                                    chunks=(1, len(volumes), *shape))
            grp.create_dataset("y_data", data=np.full((len(rows), 1), c + 1, np.float32))
            for b in range(0, len(rows), BATCH):
                if cancel is not None and cancel():
                    raise ExtractCancelled(f"export cancelled after {done} of {s.count} examples")
                part = rows[b:b + BATCH]
                dx[b:b + len(part)] = h5["x"][part].reshape(len(part), len(volumes), *shape)
                done += len(part)
                if progress is not None:
                    progress(done / max(s.count, 1), f"{done} of {s.count} examples")
            order.append(rows)
    info_ds = out.create_dataset(INFO, (1,), "S1")
    for key, value in a.items():
        info_ds.attrs[key] = np.bytes_(value.encode("utf-8"))
    extra = out.create_group(SEISD)
    extra.attrs["meta"] = json.dumps(meta)
    extra.create_dataset("row", data=np.concatenate(order) if order else np.zeros(0, np.int64))
    extra.create_dataset("source", data=source)
    extra.create_dataset("position", data=h5["position"][()])
    return {"examples": s.name, "count": done, "classes": names, "input_shape": shape, "groups": groups}
