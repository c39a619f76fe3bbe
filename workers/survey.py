"""The survey cache: one folder per survey, holding memory-mappable float32 volumes and their geometry.

Layout (docs/formats.md has the full description)::

    <folder>/survey.json     format version, grid (line numbers, sample axis), volumes with statistics, source info
    <folder>/<volume>.f32    native float32, C order [inline, crossline, sample]
    <folder>/geometry.h5     cdp_x, cdp_y, dead mask, text/binary/trace headers of the source SEG-Y
    <folder>/picks/          imported pick sets
    <folder>/<file>.unsynced marker: <file> was written through the page cache and may not be on disk yet

``survey.json`` is always replaced atomically (write a temporary file, then rename), so a reader never sees half.

The importer does not wait for the disk (an fsync of a cache as large as the SEG-Y would make the import write it
while it still reads the file, and the two share the disk). It leaves a ``.unsynced`` marker, on disk before the data
is written, holding the kernel's boot id. The first Survey.open after that (with ``sync``, as jobs open it) fsyncs
the file (by then the kernel has usually written it back: a cheap call) and removes the marker. A marker from an
earlier boot means the machine went down before the data reached the disk: open refuses the survey and says to
import it again, instead of serving a cache that may hold zeros where the data was.
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from workers.names import work_path

FORMAT_VERSION = 1
SAMPLE_UNITS = ("ms", "s", "m")


class SurveyError(ValueError):
    """A survey folder that is missing, malformed, or asked for something it does not hold."""


@dataclass(frozen=True)
class Geometry:
    """The grid of a survey: real inline/crossline numbers and the sample axis. Two surveys compare with same_grid."""

    inlines: tuple[int, ...]
    crosslines: tuple[int, ...]
    sample_start: float
    sample_step: float
    sample_count: int
    sample_unit: str = "ms"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inlines", tuple(int(v) for v in self.inlines))
        object.__setattr__(self, "crosslines", tuple(int(v) for v in self.crosslines))
        if not self.inlines or not self.crosslines or self.sample_count < 1:
            raise SurveyError(f"empty grid: {len(self.inlines)} inlines, {len(self.crosslines)} crosslines, "
                              f"{self.sample_count} samples")
        if self.sample_unit not in SAMPLE_UNITS:
            raise SurveyError(f"sample unit {self.sample_unit!r} is not one of {SAMPLE_UNITS}")
        if self.sample_step <= 0:
            raise SurveyError(f"sample step must be positive, got {self.sample_step}")

    @classmethod
    def regular(cls, inlines: tuple[int, int, int], crosslines: tuple[int, int, int],
                samples: tuple[float, float, float], unit: str = "ms") -> "Geometry":
        """Grid from (first, last, step) triples, e.g. F3: (100, 750, 1), (300, 1250, 1), (4, 1848, 4)."""
        il = tuple(range(inlines[0], inlines[1] + 1, inlines[2]))
        xl = tuple(range(crosslines[0], crosslines[1] + 1, crosslines[2]))
        count = int(round((samples[1] - samples[0]) / samples[2])) + 1
        return cls(il, xl, float(samples[0]), float(samples[2]), count, unit)

    @property
    def shape(self) -> tuple[int, int, int]:
        """[n_inlines, n_crosslines, n_samples]."""
        return (len(self.inlines), len(self.crosslines), self.sample_count)

    def samples(self) -> np.ndarray:
        """The sample axis values (float64)."""
        return self.sample_start + self.sample_step * np.arange(self.sample_count, dtype=np.float64)

    def differences(self, other: "Geometry") -> list[str]:
        """Human-readable list of what differs between two grids (empty when they are the same)."""
        out = []
        for label, a, b in (("inlines", self.inlines, other.inlines), ("crosslines", self.crosslines,
                                                                          other.crosslines)):
            if a != b:
                out.append(f"{label} {_describe_lines(a)} vs {_describe_lines(b)}")
        for key in ("sample_start", "sample_step", "sample_count", "sample_unit"):
            if getattr(self, key) != getattr(other, key):
                out.append(f"{key} {getattr(self, key)} vs {getattr(other, key)}")
        return out

    def same_grid(self, other: "Geometry") -> bool:
        """True when both surveys have the same line numbers and sample axis."""
        return not self.differences(other)

    def to_json(self) -> dict[str, Any]:
        """The grid part of survey.json."""
        return {
            "shape": list(self.shape),
            "inlines": list(self.inlines), "inline_step": _step(self.inlines),
            "crosslines": list(self.crosslines), "crossline_step": _step(self.crosslines),
            "samples": {"start": self.sample_start, "step": self.sample_step, "count": self.sample_count,
                        "unit": self.sample_unit},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Geometry":
        """Inverse of to_json."""
        s = d["samples"]
        return cls(tuple(d["inlines"]), tuple(d["crosslines"]), float(s["start"]), float(s["step"]),
                   int(s["count"]), s["unit"])


def _step(lines: tuple[int, ...]) -> int:
    return int(lines[1] - lines[0]) if len(lines) > 1 else 1


def _describe_lines(lines: tuple[int, ...]) -> str:
    return f"{lines[0]}..{lines[-1]} ({len(lines)} lines)"


@dataclass
class GeometryArrays:
    """Per-trace data of geometry.h5; every array is [n_inlines, n_crosslines, ...]."""

    cdp_x: np.ndarray
    cdp_y: np.ndarray
    dead: np.ndarray
    text_headers: list[bytes] = field(default_factory=list)
    binary_header: bytes = b""
    trace_headers: np.ndarray | None = None   # [ni, nx, 240] uint8; may be an np.memmap


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # Linux: changes at every boot
UNSYNCED = ".unsynced"


@functools.cache
def boot_id() -> str:
    """This boot's id ('' where the kernel does not give one: markers then cannot tell a restart); read once."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_unsynced(folder: Path, *files: str) -> None:
    """Leave a durable marker for each file of ``folder`` about to be written without an fsync (see the module
    docstring); Survey.open settles them."""
    for name in files:
        marker = folder / (name + UNSYNCED)
        with open(marker, "w") as fh:
            json.dump({"boot_id": boot_id(), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, fh)
            fh.flush()
            os.fsync(fh.fileno())
    _fsync_path(folder)


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = work_path(path, "tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def reserve_trace_headers(path: Path, ni: int, nx: int) -> np.memmap:
    """Create geometry.h5 holding only an allocated, contiguous ``trace_headers`` dataset [ni, nx, 240] uint8 and
    return a writable memmap of its bytes in the file: an importer fills it in place (no second copy), then
    write_geometry_h5 adds the rest."""
    with h5py.File(path, "w") as h5:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # the bytes exist (at a fixed offset) before any write
        space = h5py.h5s.create_simple((ni, nx, 240))
        offset = h5py.h5d.create(h5.id, b"trace_headers", h5py.h5t.NATIVE_UINT8, space, dcpl=dcpl).get_offset()
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=offset, shape=(ni, nx, 240))


def write_geometry_h5(path: Path, arrays: GeometryArrays) -> None:
    """Add the per-trace geometry and the source's text and binary headers to a geometry.h5 made by
    reserve_trace_headers (whose trace headers the importer has written in place)."""
    with h5py.File(path, "a") as h5:
        h5.create_dataset("cdp_x", data=np.asarray(arrays.cdp_x, dtype=np.float64))
        h5.create_dataset("cdp_y", data=np.asarray(arrays.cdp_y, dtype=np.float64))
        h5.create_dataset("dead", data=np.asarray(arrays.dead, dtype=bool))
        h5.create_dataset("text_headers", data=np.array([np.void(t) for t in arrays.text_headers])
                          if arrays.text_headers else np.zeros(0, dtype="V3200"))
        h5.create_dataset("binary_header", data=np.frombuffer(arrays.binary_header, dtype=np.uint8))


class Survey:
    """An opened survey folder. Volumes are returned as read-only memory maps."""

    def __init__(self, folder: Path, doc: dict[str, Any]) -> None:
        self.folder = folder
        self.doc = doc
        self.geometry = Geometry.from_json(doc)

    # ---- opening and creating -------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike, sync: bool = True) -> "Survey":
        """Open an existing survey folder; SurveyError names what is missing.

        A survey the importer left unsynced is refused if the machine restarted before its files reached the disk
        (module docstring); with ``sync`` those files are fsynced now and their markers dropped. Without it (the
        daemon's catalog, which must answer at once; the importer itself) they are only checked.
        """
        folder = Path(folder)
        meta = folder / "survey.json"
        if not meta.is_file():
            raise SurveyError(f"{folder} is not a survey: {meta.name} is missing (import a SEG-Y first)")
        try:
            doc = json.loads(meta.read_text())
        except json.JSONDecodeError as exc:
            raise SurveyError(f"{meta} is not valid JSON: {exc}") from exc
        if doc.get("format_version") != FORMAT_VERSION:
            raise SurveyError(f"{meta} has format_version {doc.get('format_version')!r}; this seisd reads "
                              f"{FORMAT_VERSION}")
        survey = cls(folder, doc)
        survey._settle(sync)
        return survey

    def _settle(self, sync: bool) -> None:
        """Refuse the survey for a marker of another boot; with ``sync``, fsync each file with a marker of this boot
        and drop the marker."""
        for marker in sorted(self.folder.glob("*" + UNSYNCED)):
            target = marker.with_name(marker.name[:-len(UNSYNCED)])
            try:
                mark = json.loads(marker.read_text() or "{}")
            except FileNotFoundError:  # another process settled it meanwhile
                continue
            except (OSError, json.JSONDecodeError):
                mark = {}
            same_boot = mark.get("boot_id") == boot_id()
            if not target.exists():  # an add_volume still writing (this boot), or one that never finished
                if not same_boot:
                    marker.unlink(missing_ok=True)
                continue
            if not same_boot:
                source = self.source.get("path", "the source SEG-Y")
                raise SurveyError(
                    f"survey {self.name!r}: {target.name} was still being written to disk when the machine "
                    f"restarted (written {mark.get('written', 'at an unknown time')}), so it may hold zeros where "
                    f"data should be; import it again (seisctl survey rm {self.name}, then seisctl survey import "
                    f"{source} --name {self.name})")
            if sync:
                _fsync_path(target)
                marker.unlink(missing_ok=True)

    @classmethod
    def create(cls, folder: str | os.PathLike, geometry: Geometry, name: str | None = None,
               source: dict[str, Any] | None = None) -> "Survey":
        """Create a new survey folder (which must not exist yet) with no volumes; add them with new_volume."""
        folder = Path(folder)
        if folder.exists():
            raise SurveyError(f"{folder} already exists; remove it or choose another survey folder")
        folder.mkdir(parents=True)
        doc = {"format_version": FORMAT_VERSION, "name": name or folder.name, **geometry.to_json(),
               "volumes": {}, "source": source or {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "has_geometry_h5": False}  # an importer adds geometry.h5 and sets it
        _write_json_atomic(folder / "survey.json", doc)
        return cls(folder, doc)

    # ---- volumes ----------------------------------------------------------------------------------------------
    def new_volume(self, name: str) -> np.memmap:
        """A writable, zero-filled (sparse) memmap for a volume not yet registered; call register_volume after."""
        _check_volume_name(name)
        path = self.folder / f"{name}.f32"
        with open(path, "wb") as fh:
            fh.truncate(int(np.prod(self.shape)) * 4)
        return np.memmap(path, dtype=np.float32, mode="r+", shape=self.shape)

    def register_volume(self, name: str, stats: dict[str, float], file: str | None = None) -> None:
        """Record a written volume and its statistics in survey.json."""
        self.doc["volumes"][name] = {"file": file or f"{name}.f32", "dtype": "float32", "stats": stats}
        _write_json_atomic(self.folder / "survey.json", self.doc)

    @property
    def volumes(self) -> list[str]:
        """Names of the volumes in the cache."""
        return list(self.doc["volumes"])

    def volume(self, name: str = "seismic") -> np.memmap:
        """Read-only memmap of a volume, [inline, crossline, sample] float32."""
        entry = self._entry(name)
        return np.memmap(self.folder / entry["file"], dtype=np.float32, mode="r", shape=self.shape)

    def stats(self, name: str = "seismic") -> dict[str, float]:
        """Normalisation statistics of a volume: mean, std, min, max, p01, p99, nan_count."""
        return dict(self._entry(name)["stats"])

    def _entry(self, name: str) -> dict[str, Any]:
        if name not in self.doc["volumes"]:
            raise SurveyError(f"survey {self.name!r} has no volume {name!r}; it has {self.volumes}")
        return self.doc["volumes"][name]

    # ---- geometry ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def inlines(self) -> np.ndarray:
        return np.asarray(self.geometry.inlines, dtype=np.int64)

    @property
    def crosslines(self) -> np.ndarray:
        return np.asarray(self.geometry.crosslines, dtype=np.int64)

    @property
    def samples(self) -> np.ndarray:
        return self.geometry.samples()

    @property
    def source(self) -> dict[str, Any]:
        return dict(self.doc.get("source", {}))

    def _h5(self, key: str) -> np.ndarray | None:
        path = self.folder / "geometry.h5"
        if not path.is_file():
            return None
        with h5py.File(path, "r") as h5:
            return h5[key][()] if key in h5 else None

    def dead_mask(self) -> np.ndarray:
        """[ni, nx] bool, True where the source had no trace (all False when the survey has no geometry.h5)."""
        dead = self._h5("dead")
        return np.zeros(self.shape[:2], dtype=bool) if dead is None else dead

    def cdp_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """(cdp_x, cdp_y), each [ni, nx] float64 with the coordinate scalar applied."""
        x, y = self._h5("cdp_x"), self._h5("cdp_y")
        if x is None or y is None:
            raise SurveyError(f"survey {self.name!r} has no coordinates (created without geometry.h5)")
        return x, y

    def geometry_arrays(self) -> GeometryArrays:
        """Everything in geometry.h5, trace headers included (as an array of [ni, nx, 240] uint8)."""
        path = self.folder / "geometry.h5"
        if not path.is_file():
            raise SurveyError(f"survey {self.name!r} has no geometry.h5 (it was not imported from SEG-Y)")
        with h5py.File(path, "r") as h5:
            return GeometryArrays(h5["cdp_x"][()], h5["cdp_y"][()], h5["dead"][()],
                                  [bytes(t) for t in h5["text_headers"][()]], h5["binary_header"][()].tobytes(),
                                  h5["trace_headers"][()] if "trace_headers" in h5 else None)

    def source_headers(self) -> tuple[list[bytes], bytes]:
        """(textual headers, 400-byte binary header) of the source SEG-Y, without the trace headers."""
        path = self.folder / "geometry.h5"
        if not path.is_file():
            raise SurveyError(f"survey {self.name!r} has no geometry.h5 (it was not imported from SEG-Y)")
        with h5py.File(path, "r") as h5:
            return [bytes(t) for t in h5["text_headers"][()]], h5["binary_header"][()].tobytes()

    def trace_headers_of_inline(self, i: int) -> np.ndarray:
        """Raw 240-byte headers of one inline, [nx, 240] uint8 (streaming access for the SEG-Y writer)."""
        with h5py.File(self.folder / "geometry.h5", "r") as h5:
            if "trace_headers" not in h5:
                raise SurveyError(f"survey {self.name!r} has no source trace headers")
            return h5["trace_headers"][i]

    def index_of(self, inline: int, crossline: int) -> tuple[int, int]:
        """Grid indices (i, x) of a real inline/crossline number; SurveyError if it is not on the grid."""
        return (_line_index(self.geometry.inlines, inline, "inline"),
                _line_index(self.geometry.crosslines, crossline, "crossline"))

    def sample_index(self, z: float, unit: str | None = None) -> int:
        """Nearest sample index of a depth/time value given in ``unit`` (default: the survey's own)."""
        unit = unit or self.geometry.sample_unit
        zz = _convert_z(float(z), unit, self.geometry.sample_unit)
        k = int(round((zz - self.geometry.sample_start) / self.geometry.sample_step))
        if not 0 <= k < self.geometry.sample_count:
            raise SurveyError(f"z={z} {unit} is outside the sample axis {self.samples[0]}..{self.samples[-1]} "
                              f"{self.geometry.sample_unit}")
        return k


def _convert_z(z: float, unit: str, to: str) -> float:
    if unit == to:
        return z
    if {unit, to} == {"ms", "s"}:
        return z * 1000.0 if unit == "s" else z / 1000.0
    raise SurveyError(f"cannot convert z from {unit!r} to the survey's {to!r}")


def _line_index(lines: tuple[int, ...], value: int, label: str) -> int:
    first, step = lines[0], _step(lines)
    k = (int(value) - first) // step if step else 0
    if 0 <= k < len(lines) and lines[k] == value:
        return k
    try:  # irregular numbering: fall back to a search
        return lines.index(int(value))
    except ValueError:
        raise SurveyError(f"{label} {value} is not in the survey ({_describe_lines(lines)})") from None


def _check_volume_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or name in ("survey", "geometry"):
        raise SurveyError(f"volume name {name!r} is not allowed: use a plain name like 'seismic' or 'labels'")
