"""Crops out of a [inline, crossline, sample] volume: the one place that knows how a crop is laid out.

A crop is centred on integer grid indices. For an even size the window is ``[c - size // 2, c - size // 2 + size)``,
so the extra voxel falls on the low-index side of the centre (size 4 around 10 covers 8, 9, 10, 11). Parts of the
window outside the volume are zero-filled. Only the intersecting block of the volume is read (one vectorised slice
per crop), so a read-only np.memmap is never copied as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


# Crops of at most this many cells are gathered with one fancy index per volume; bigger ones (64^3) are cut
# with one slice per crop, which copies whole rows and beats any index array at that size.
_GATHER_MAX_CELLS = 16384


class CropWindows:
    """Where ``n`` crops of one spec lie in volumes of one shape: worked out once, then cut from each volume.

    ``cut(volume)`` gives the same values as ``extract_crop`` for every centre (same centring, zero outside),
    but for small crops it costs one gather per volume instead of one slice per crop, so a batch's Python work
    grows with its channels, not with crops x channels. The flat indices are clipped into the volume and the
    cells outside it are zeroed afterwards.
    """

    def __init__(self, shape: tuple[int, ...], centers: np.ndarray, spec: CropSpec) -> None:
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) != 3:
            raise CropError(f"volume must be 3D [inline, crossline, sample], got shape {self.shape}")
        centers = np.asarray(centers, dtype=np.int64)
        if centers.ndim != 2 or centers.shape[1] != 3:
            raise CropError(f"crop centres must be an [n, 3] array of indices, got shape {centers.shape}")
        self.centers, self.spec = centers, spec
        self._index: np.ndarray | None = None
        self._outside: np.ndarray | None = None
        if int(np.prod(spec.size)) <= _GATHER_MAX_CELLS:
            self._index, inside = self._grids(with_index=True)
            if not inside.all():
                self._outside = ~inside

    def _grids(self, with_index: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """Flat indices (clipped into the volume) and the inside mask, both broadcast to [n, *size]."""
        axes, fixed = _AXES[self.spec.orientation]
        n, dims = len(self.centers), len(axes)
        strides = (self.shape[1] * self.shape[2], self.shape[2], 1)  # C order, in elements
        index = np.zeros((n,) + (1,) * dims, dtype=np.intp)
        inside = np.ones((n,) + (1,) * dims, dtype=bool)
        if fixed is not None:
            c = self.centers[:, fixed].reshape(index.shape)
            inside = inside & (c >= 0) & (c < self.shape[fixed])
            index = index + np.clip(c, 0, self.shape[fixed] - 1) * strides[fixed]
        for d, (size, axis) in enumerate(zip(self.spec.size, axes)):
            bshape = [n] + [1] * dims
            bshape[1 + d] = size
            pos = (self.centers[:, axis, None] - size // 2 + np.arange(size)).reshape(bshape)
            # broadcasting the per-axis offsets and masks builds the [n, *size] grids
            inside = inside & (pos >= 0) & (pos < self.shape[axis])
            if with_index:
                index = index + np.clip(pos, 0, self.shape[axis] - 1) * strides[axis]
        return (index if with_index else None), np.broadcast_to(inside, (n, *self.spec.size))

    @property
    def inside(self) -> np.ndarray:
        """Boolean [n, *size]: the crop cells that lie inside the volume."""
        if self._index is None:
            return self._grids(with_index=False)[1].copy()
        if self._outside is None:
            return np.ones((len(self.centers), *self.spec.size), dtype=bool)
        return ~self._outside

    def cut(self, volume: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Crops [n, *size] float32 of ``volume`` into ``out`` (allocated when None; any strided view will do)."""
        if tuple(volume.shape) != self.shape:
            raise CropError(f"volume shape {tuple(volume.shape)} differs from the planned {self.shape}")
        full = (len(self.centers), *self.spec.size)
        if out is None:
            out = np.empty(full, dtype=np.float32)
        else:
            _check_out(out, full)
        # A gather needs a flat view: a C-ordered ndarray (np.memmap included). HDF5 datasets and strided
        # arrays are cut crop by crop, like big crops.
        if self._index is None or not isinstance(volume, np.ndarray) or not volume.flags.c_contiguous:
            for i, c in enumerate(self.centers):
                extract_crop(volume, (int(c[0]), int(c[1]), int(c[2])), self.spec, out=out[i])
            return out
        # the assignment casts to float32, as extract_crop does
        out[...] = np.take(np.asarray(volume).reshape(-1), self._index)
        if self._outside is not None:
            np.copyto(out, 0.0, where=self._outside)
        return out


def extract_crops(volume: np.ndarray, centers: np.ndarray, spec: CropSpec,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Crops [n, *size] around ``centers`` [n, 3]; equal to ``extract_crop`` per centre, in one pass.

    To cut the same centres from several volumes of one shape, build ``CropWindows`` once and call ``cut``.
    """
    if volume.ndim != 3:
        raise CropError(f"volume must be 3D [inline, crossline, sample], got shape {volume.shape}")
    return CropWindows(volume.shape, centers, spec).cut(volume, out)
