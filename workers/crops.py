"""Crops out of a [inline, crossline, sample] volume: the one place that knows how a crop is laid out.

A crop is centred on integer grid indices. For an even size the window is ``[c - size // 2, c - size // 2 + size)``,
so the extra voxel falls on the low-index side of the centre (size 4 around 10 covers 8, 9, 10, 11). Parts of the
window outside the volume are zero-filled. Only the intersecting block of the volume is read (one vectorised slice
per crop), so a read-only np.memmap is never copied as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

ORIENTATIONS = ("inline", "crossline", "time", "3d")

# For each orientation: the volume axes the crop spans, in output order, and the fixed axis (None for 3D).
_AXES: dict[str, tuple[tuple[int, ...], int | None]] = {
    "inline": ((1, 2), 0),      # crossline x sample at a fixed inline
    "crossline": ((0, 2), 1),   # inline x sample at a fixed crossline
    "time": ((0, 1), 2),        # inline x crossline at a fixed sample
    "3d": ((0, 1, 2), None),
}


class CropError(ValueError):
    """A crop specification or output buffer that cannot be used."""


@dataclass(frozen=True)
class CropSpec:
    """Shape and orientation of a crop.

    ``size`` has 2 entries for the 2D orientations ("inline": crossline x sample, "crossline": inline x sample,
    "time": inline x crossline) and 3 for "3d" (inline x crossline x sample).
    """

    size: tuple[int, ...]
    orientation: str = "inline"

    def __post_init__(self) -> None:
        if self.orientation not in ORIENTATIONS:
            raise CropError(f"unknown crop orientation {self.orientation!r}; use one of {', '.join(ORIENTATIONS)}")
        # Accept lists from JSON/YAML but keep the frozen dataclass hashable.
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        want = len(_AXES[self.orientation][0])
        if len(self.size) != want:
            raise CropError(f"crop orientation {self.orientation!r} needs {want} sizes, got {list(self.size)}")
        if any(s < 1 for s in self.size):
            raise CropError(f"crop sizes must be >= 1, got {list(self.size)}")

    def out_shape(self) -> tuple[int, ...]:
        """Shape of one extracted crop (equal to ``size``)."""
        return self.size

    @property
    def volume_axes(self) -> tuple[int, ...]:
        """The volume axes (0 inline, 1 crossline, 2 sample) that the crop's axes follow, in order."""
        return _AXES[self.orientation][0]

    def to_dict(self) -> dict:
        """Plain form for JSON metadata."""
        return {"size": list(self.size), "orientation": self.orientation}

    @classmethod
    def from_dict(cls, d: dict) -> "CropSpec":
        """Inverse of ``to_dict``."""
        return cls(size=tuple(d["size"]), orientation=d.get("orientation", "inline"))


def _window(center: int, size: int, length: int) -> tuple[slice, slice]:
    """Slices (into the volume axis, into the crop axis) of the part of the window inside the volume."""
    start = center - size // 2
    lo, hi = max(start, 0), min(start + size, length)
    if hi <= lo:
        return slice(0, 0), slice(0, 0)
    return slice(lo, hi), slice(lo - start, hi - start)


def _check_out(out: np.ndarray, shape: tuple[int, ...]) -> None:
    if out.dtype != np.float32 or out.shape != shape:
        raise CropError(f"crop output buffer must be float32 with shape {shape}, got {out.dtype} {out.shape}")


def extract_crop(volume: np.ndarray, center: tuple[int, int, int], spec: CropSpec,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Copy the crop of ``volume`` around ``center`` into ``out`` (allocated when None) and return it.

    ``volume`` is [inline, crossline, sample]; ``center`` gives integer indices on all three axes (the fixed axis
    of a 2D orientation picks the slice). Values are cast to float32; outside the volume the crop is zero.
    """
    if volume.ndim != 3:
        raise CropError(f"volume must be 3D [inline, crossline, sample], got shape {volume.shape}")
    if len(center) != 3:
        raise CropError(f"crop centre needs 3 indices (inline, crossline, sample), got {center!r}")
    shape = spec.out_shape()
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    else:
        _check_out(out, shape)
    axes, fixed = _AXES[spec.orientation]
    src: list[slice | int] = [slice(None)] * 3
    dst: list[slice] = []
    covered = True
    if fixed is not None:
        c = int(center[fixed])
        if not 0 <= c < volume.shape[fixed]:
            out.fill(0.0)
            return out
        src[fixed] = c
    for size, axis in zip(spec.size, axes):
        vs, cs = _window(int(center[axis]), size, volume.shape[axis])
        if cs.stop - cs.start != size:
            covered = False
        src[axis] = vs
        dst.append(cs)
    if not covered:
        out.fill(0.0)
    # Integer index on the fixed axis drops it, so the source block already has the crop's axis order.
    out[tuple(dst)] = volume[tuple(src)]
    return out


# Crops of at most this many cells are gathered from a flat view of the volume; bigger ones (64^3) are cut with
# one slice per crop, which copies whole rows and beats any index array at that size.
_GATHER_MAX_CELLS = 16384


class CropWindows:
    """Where ``n`` crops of one spec lie in volumes of one shape: worked out once, then cut from each volume.

    ``cut(volume)`` gives the same values as ``extract_crop`` for every centre (same centring, zero outside),
    but for small crops it costs one gather per volume instead of one slice per crop, so a batch's Python work
    grows with its channels, not with crops x channels.

    The gather takes whole rows (the crop's last axis) through a strided window view of the flat volume, one
    index per row rather than per cell: a row is kept inside the volume by clipping its start, and the crops
    whose rows were moved get their cells shifted back. Cells outside the volume are then zeroed. A crop
    longer than the volume along its last axis has no such row; it is gathered cell by cell.
    """

    def __init__(self, shape: tuple[int, ...], centers: np.ndarray, spec: CropSpec) -> None:
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise CropError(f"volume must be 3D [inline, crossline, sample], got shape {self.shape}")
        centers = np.asarray(centers, dtype=np.int64)
        if centers.ndim != 2 or centers.shape[1] != 3:
            raise CropError(f"crop centres must be an [n, 3] array of indices, got shape {centers.shape}")
        self.centers, self.spec = centers, spec
        self._full = (len(centers), *spec.size)
        self._strides = (self.shape[1] * self.shape[2], self.shape[2], 1)  # C order, in elements
        last_axis = spec.volume_axes[-1]
        if int(np.prod(spec.size)) > _GATHER_MAX_CELLS:
            self.mode = "slices"
        else:
            self.mode = "rows" if spec.size[-1] <= self.shape[last_axis] else "cells"
        self._index: np.ndarray | None = None
        self._outside: np.ndarray | None = None     # flat positions in [n, *size] of the cells outside
        self._moved: tuple[np.ndarray, np.ndarray] | None = None  # (to, from): cells of rows moved inside
        if self.mode != "slices":
            self._plan_gather()

    def _axis_terms(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Offset of the fixed axis [n, 1..], clipped offsets per crop axis (broadcastable), inside mask."""
        axes, fixed = _AXES[self.spec.orientation]
        n, dims = len(self.centers), len(axes)
        base = np.zeros((n,) + (1,) * dims, dtype=np.intp)
        inside = np.ones((n,) + (1,) * dims, dtype=bool)
        if fixed is not None:
            c = self.centers[:, fixed].reshape(base.shape)
            inside = inside & (c >= 0) & (c < self.shape[fixed])
            base = base + np.clip(c, 0, self.shape[fixed] - 1) * self._strides[fixed]
        terms = []
        for d, (size, axis) in enumerate(zip(self.spec.size, axes)):
            bshape = [n] + [1] * dims
            bshape[1 + d] = size
            pos = (self.centers[:, axis, None] - size // 2 + np.arange(size)).reshape(bshape)
            # broadcasting the per-axis offsets and masks builds the [n, *size] grids
            inside = inside & (pos >= 0) & (pos < self.shape[axis])
            terms.append(np.clip(pos, 0, self.shape[axis] - 1) * self._strides[axis])
        return base, terms, np.broadcast_to(inside, self._full)

    def _plan_gather(self) -> None:
        base, terms, inside = self._axis_terms()
        if not inside.all():
            self._outside = np.flatnonzero(~inside)
        if self.mode == "cells":
            self._index = base + sum(terms)
            return
        size, axis = self.spec.size[-1], self.spec.volume_axes[-1]
        start = self.centers[:, axis] - size // 2
        first = np.clip(start, 0, self.shape[axis] - size)  # the row's first cell, moved inside the axis
        lead = base + sum(terms[:-1], np.zeros((), np.intp)) + (first * self._strides[axis]).reshape(base.shape)
        self._index = np.broadcast_to(lead, (*self._full[:-1], 1)).reshape(-1)
        shift = start - first
        moved = np.flatnonzero(shift)
        if moved.size:
            # cell j of a moved crop's row is cell j + shift of the row as read (clipped: those lie outside)
            row_len = int(np.prod(self._full[1:]))
            col = np.arange(size)
            cols = np.clip(col + shift[moved, None], 0, size - 1)                  # [m, size]
            rows0 = (moved * row_len)[:, None] + np.arange(0, row_len, size)[None, :]  # [m, rows]: row starts
            self._moved = ((rows0[..., None] + col).reshape(-1), (rows0[..., None] + cols[:, None, :]).reshape(-1))

    @property
    def inside(self) -> np.ndarray:
        """Boolean [n, *size]: the crop cells that lie inside the volume."""
        if self.mode == "slices":
            return self._axis_terms()[2].copy()
        inside = np.ones(self._full, dtype=bool)
        if self._outside is not None:
            inside.reshape(-1)[self._outside] = False
        return inside

    def cut(self, volume: np.ndarray, out: np.ndarray | None = None,
            transform: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """Crops [n, *size] float32 of ``volume`` into ``out`` (allocated when None; any strided view will do).

        ``transform`` (e.g. normalisation) is applied in place to the float32 crops, zeroed cells included,
        before they are written to ``out``: on a gathered batch that happens in a private contiguous buffer,
        so ``out`` (a shared-memory slot) is written once.
        """
        if tuple(volume.shape) != self.shape:
            raise CropError(f"volume shape {tuple(volume.shape)} differs from the planned {self.shape}")
        if out is None:
            out = np.empty(self._full, dtype=np.float32)
        else:
            _check_out(out, self._full)
        # A gather needs a flat view: a C-ordered ndarray (np.memmap included). HDF5 datasets and strided
        # arrays are cut crop by crop, like big crops.
        if self.mode == "slices" or not isinstance(volume, np.ndarray) or not volume.flags.c_contiguous:
            for i, c in enumerate(self.centers):
                extract_crop(volume, (int(c[0]), int(c[1]), int(c[2])), self.spec, out=out[i])
            if transform is not None:
                transform(out)
            return out
        flat = np.asarray(volume).reshape(-1)
        if self.mode == "cells":
            cells = np.take(flat, self._index).reshape(-1)
        else:
            size, step = self.spec.size[-1], self._strides[self.spec.volume_axes[-1]]
            # row r of this view is flat[r], flat[r + step], ..., flat[r + (size - 1) * step]: no copy
            rows = as_strided(flat, shape=(flat.size - (size - 1) * step, size),
                              strides=(flat.itemsize, step * flat.itemsize), writeable=False)
            cells = rows[self._index].reshape(-1)
            if self._moved is not None:
                cells[self._moved[0]] = cells[self._moved[1]]
        if self._outside is not None:
            cells[self._outside] = 0
        cells = cells.reshape(self._full)
        if transform is not None:
            cells = cells.astype(np.float32, copy=False)  # the cast extract_crop makes, before the transform
            transform(cells)
        out[...] = cells  # the assignment casts to float32, as extract_crop does
        return out


def extract_crops(volume: np.ndarray, centers: np.ndarray, spec: CropSpec,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Crops [n, *size] around ``centers`` [n, 3]; equal to ``extract_crop`` per centre, in one pass.

    To cut the same centres from several volumes of one shape, build ``CropWindows`` once and call ``cut``.
    """
    if volume.ndim != 3:
        raise CropError(f"volume must be 3D [inline, crossline, sample], got shape {volume.shape}")
    return CropWindows(volume.shape, centers, spec).cut(volume, out)


_AXIS_NAMES = ("inlines", "crosslines", "samples")


def crop_fit_problem(spec: CropSpec, shape: tuple[int, ...], survey: str) -> str | None:
    """None when a crop fits survey ``shape`` [inline, crossline, sample] along every axis it spans, else the one
    message that extract and train both give (workers/examples.py, daemon/kinds/train.py).

    A crop may reach past the survey's edge around a pick near it (those cells are zero), but a crop larger than
    the survey itself would be mostly padding everywhere: that is refused, whoever asks.
    """
    have = [int(shape[a]) for a in spec.volume_axes]
    if all(n <= h for n, h in zip(spec.size, have)):
        return None
    names = " x ".join(_AXIS_NAMES[a] for a in spec.volume_axes)
    return (f"crop {list(spec.size)} ({spec.orientation}) is larger than survey {survey!r}, which has {have} "
            f"({names}); use a crop of at most {have}")
