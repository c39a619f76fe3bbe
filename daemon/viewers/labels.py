"""Class-id volumes the survey page draws over the seismic: predictions in any format a predict job writes, and
label volumes of the survey itself (a ground truth imported with `seisctl survey import ... --volume truth --add`).

Every reader answers the three slice forms the page asks for, v[i], v[:, x] and v[:, :, s], reading only that
slice, so a survey of any size opens at once:

  labels.sgy     (the predict job's default output) memory-mapped; its traces are placed on the survey's grid by
                 their inline and crossline header fields (the survey's header bytes); class names from the
                 folder's summary.json `classes`
  labels.npy     an [ni, nx, ns] integer memmap (keep_arrays, or a tool of one's own); class names from meta.json
  *.h5           a `labels` dataset of that shape (format hdf5); class names from its `class_names` attribute
  survey volume  a volume of the survey whose values are class ids (-1 = unlabelled)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import segyio

from workers.segy_import import NUMPY_FORMATS, ibm_to_float32
from workers.segy_scan import byte_orders
from workers.survey import Survey

LABEL_FILES = ("labels.sgy", "labels.npy", "*.h5")
VOLUME_PREFIX = "volume: "  # how the page lists a label volume of the survey beside the predictions


class LabelsError(ValueError):
    """Labels that cannot be drawn on this survey; the message says what was found and what to do."""


class Labels:
    """A class-id volume [ni, nx, ns] read a slice at a time, with its class names (may be empty)."""

    def __init__(self, volume: Any, class_names: list[str], closing: Any = None):
        self.volume, self.class_names, self._closing = volume, class_names, closing
        self.shape = tuple(volume.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.volume[key])

    def close(self) -> None:
        if self._closing is not None:
            self._closing.close()
            self._closing = None


def label_volume_names(survey: Survey) -> list[str]:
    """The survey's volumes that hold class ids: whole numbers from -1 (unlabelled) to 255 by their statistics."""
    names = []
    for name in survey.volumes:
        stats = survey.stats(name)
        lo, hi = stats.get("min"), stats.get("max")
        if lo is not None and hi is not None and float(lo).is_integer() and float(hi).is_integer() \
                and -1 <= lo <= hi <= 255:
            names.append(name)
    return names


def open_labels(home_predictions: Path, choice: str, survey: Survey) -> Labels:
    """The labels the page's overlay list names: `volume: NAME` of the survey, else a prediction folder's name."""
    if choice.startswith(VOLUME_PREFIX):
        return Labels(survey.volume(choice[len(VOLUME_PREFIX):]), [])
    labels = open_prediction(home_predictions / choice, survey)
    if labels.shape != survey.shape:
        labels.close()
        raise LabelsError(f"prediction {choice!r} has shape {list(labels.shape)}, survey {survey.name!r} "
                          f"{list(survey.shape)}: it belongs to another survey; choose that survey")
    return labels


def open_prediction(folder: Path, survey: Survey) -> Labels:
    """The class labels of a prediction folder, in whichever format the predict job wrote them."""
    summary = _json(folder / "summary.json")
    if (folder / "labels.sgy").is_file():
        return Labels(SegyOnGrid(folder / "labels.sgy", survey), list(summary.get("classes", [])))
    if (folder / "labels.npy").is_file():
        names = list(_json(folder / "meta.json").get("class_names", summary.get("classes", [])))
        return Labels(np.load(folder / "labels.npy", mmap_mode="r"), names)
    for path in sorted(folder.glob("*.h5")):
        f = h5py.File(path, "r")
        if "labels" in f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs.get("class_names", [])]
            return Labels(f["labels"], names, f)
        f.close()
    raise LabelsError(_no_labels(folder, summary, survey))


def _no_labels(folder: Path, summary: dict[str, Any], survey: Survey) -> str:
    if not folder.is_dir():
        return f"there is no prediction {folder.name!r} ({folder} is missing); `seisctl jobs` lists the predict jobs"
    files = sorted(p.name for p in folder.iterdir())
    if files == ["arrays"] or not summary:
        return (f"{folder} holds no finished prediction yet ({', '.join(files) or 'nothing'}): wait for its predict "
                "job to end (`seisctl jobs`), or predict again if it failed")
    return (f"{folder} holds no class labels ({', '.join(files)}; the viewer reads labels.sgy, labels.npy or an HDF5 "
            f"file with a 'labels' dataset): it was predicted without the labels output. Predict again with it: "
            f"seisctl predict {summary.get('model', 'MODEL')} {summary.get('survey', survey.name)} --name "
            f"{folder.name} --outputs labels,confidence --overwrite")


def _json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return {}


class SegyOnGrid:
    """A SEG-Y file of one value per grid sample (a prediction), memory-mapped and placed on the survey's grid.

    Each trace goes where its inline and crossline header fields say (the bytes the survey was imported with), so
    a file in any trace order, or with traces missing (read as -1, unlabelled), is drawn where it belongs. The
    usual case, every trace in the survey's own order (the predict job writes that), is a plain strided view.
    """

    def __init__(self, path: Path, survey: Survey):
        ni, nx, ns = self.shape = survey.shape
        bytes_ = survey.source.get("bytes", {})
        iline, xline = int(bytes_.get("iline", 189)), int(bytes_.get("xline", 193))
        try:
            endian = byte_orders(path, "auto")[0][0]
            with segyio.open(str(path), "r", ignore_geometry=True, endian=endian) as f:
                count, samples, code, ext = f.tracecount, len(f.samples), int(f.format), int(f.ext_headers)
                il, xl = f.attributes(iline)[:], f.attributes(xline)[:]
        except (OSError, RuntimeError, ValueError) as exc:
            raise LabelsError(f"{path} cannot be read as SEG-Y: {exc}") from None
        if samples != ns:
            raise LabelsError(f"{path} has {samples} samples a trace, survey {survey.name!r} {ns}: it belongs to "
                              "another survey; choose that survey")
        self.grid = _trace_grid(path, survey, il, xl, (iline, xline))
        big = endian == "big"
        sample = np.dtype(NUMPY_FORMATS[code]).newbyteorder(">" if big else "<")
        record = np.dtype([("h", np.uint8, (240,)), ("s", sample, (ns,))])
        traces = np.memmap(path, dtype=record, mode="r", offset=3600 + 3200 * ext, shape=(count,))
        self.samples, self.ibm = traces["s"], code == 1
        self.in_order = count == ni * nx and bool(np.array_equal(self.grid.ravel(), np.arange(count)))

    def _values(self, a: np.ndarray) -> np.ndarray:
        return ibm_to_float32(a) if self.ibm else np.asarray(a)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        axis, index = len(key) - 1, int(key[-1])
        ni, nx, ns = self.shape
        if self.in_order:  # one strided view: only the asked slice's pages are read
            return self._values(self.samples.reshape(ni, nx, ns)[key])
        ids = np.take(self.grid, index, axis=axis) if axis < 2 else self.grid
        have = ids >= 0
        out = np.full(ids.shape + ((ns,) if axis < 2 else ()), -1, np.float32)  # -1: no trace, unlabelled
        out[have] = self._values(self.samples[ids[have]] if axis < 2 else self.samples[ids[have], index])
        return out


def _trace_grid(path: Path, survey: Survey, il: np.ndarray, xl: np.ndarray, where: tuple[int, int]) -> np.ndarray:
    """[ni, nx] trace number at each grid position (-1: no trace there); refuses traces off the survey's grid."""
    grid = np.full(survey.shape[:2], -1, np.int64)
    lines = (survey.inlines, survey.crosslines)
    idx = []
    for values, axis, byte, name in ((il, lines[0], where[0], "inline"), (xl, lines[1], where[1], "crossline")):
        k = np.clip(np.searchsorted(axis, values), 0, len(axis) - 1)
        off = np.flatnonzero(axis[k] != values)
        if off.size:
            t = int(off[0])
            raise LabelsError(f"{path}: trace {t} has {name} {int(values[t])} (header byte {byte}), which survey "
                              f"{survey.name!r} lacks ({name}s {axis[0]}..{axis[-1]}): it belongs to another survey")
        idx.append(k)
    grid[idx[0], idx[1]] = np.arange(len(il))
    return grid
