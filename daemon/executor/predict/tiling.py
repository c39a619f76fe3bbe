"""Tile plans for whole-volume apply: overlapping tiles over [ni, nx, ns] and the blending window.

A fully convolutional model sees the volume through tiles. Neighbouring tiles overlap and each tile's output
is multiplied by a window that ramps down (raised cosine) inside the overlap but never reaches zero; the
weighted outputs and the weights are both summed, and the sum divided by the summed weight, so any overlap,
including the irregular one of the last tile along an axis, is normalised exactly and seams vanish.

Orientations for 2D models: "inline" tiles lie in the crossline x sample plane of one inline (volume extent
(1, a, s)), "crossline" tiles in the inline x sample plane of one crossline (extent (a, 1, s)); "both" lists
the two sets so their predictions are averaged, and so does "split" (where the engine runs each member of an
ensemble along one of the two only). 3D models get 3D tiles. The model input is always laid out in
the volume's C order with the slab axis removed: [lateral, sample] in 2D, [inline, crossline, sample] in 3D.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from daemon.kinds.predict import ORIENTATIONS_2D

TWO_WAYS = ("both", "split")  # the orientations that tile along inlines and crosslines


def slab_orientations(orientation: str, rank: int) -> tuple[str, ...]:
    """The slab orientations a model of this rank is run along: ("3d",) for a 3D model, inline and crossline for
    the two-way orientations, else the one named."""
    if rank == 3:
        return ("3d",)
    return ("inline", "crossline") if orientation in TWO_WAYS else (orientation,)

# The smallest blending weight; the ramp starts above it so every covered voxel has a positive weight.
MIN_WEIGHT = 1e-3


class TilingError(ValueError):
    """A tile or crop specification that cannot be used on this volume."""


@dataclass(frozen=True)
class Tile:
    """One tile: its id, first voxel and extent in the volume, and the model-input axes it feeds."""

    id: int
    start: tuple[int, int, int]
    size: tuple[int, int, int]
    orientation: str  # "inline", "crossline" or "3d"

    @property
    def stop(self) -> tuple[int, int, int]:
        """One past the last voxel along each volume axis."""
        return tuple(a + b for a, b in zip(self.start, self.size))  # type: ignore[return-value]

    def slices(self) -> tuple[slice, slice, slice]:
        """The tile's region of the volume as slices."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    def model_axes(self) -> tuple[int, ...]:
        """Volume axes that become the model input's spatial axes, in order."""
        return {"inline": (1, 2), "crossline": (0, 2), "3d": (0, 1, 2)}[self.orientation]


def axis_starts(n: int, tile: int, overlap: int) -> list[int]:
    """First indices of tiles of length `tile` covering [0, n) with at least `overlap` shared voxels.

    The last tile is moved back to end exactly at n (so it may overlap more); one tile when n <= tile.
    """
    if tile <= overlap:
        raise TilingError(f"overlap {overlap} must be smaller than the tile length {tile}")
    if n <= tile:
        return [0]
    starts = list(range(0, n - tile + 1, tile - overlap))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    return starts


def ramp_window(length: int, overlap: int, ramp_low: bool, ramp_high: bool) -> np.ndarray:
    """1D blending weights: 1 in the middle, a raised-cosine ramp over `overlap` voxels at the ramped ends.

    An end that touches the volume border is not ramped (no other tile shares it). Weights are never zero.
    """
    w = np.ones(length, dtype=np.float64)
    if overlap > 0:
        k = np.arange(length, dtype=np.float64)
        # (k + 0.5) keeps the first weight above zero; the ramp reaches 1 after `overlap` voxels.
        rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((k + 0.5) / overlap, 0.0, 1.0))
        if ramp_low:
            w = np.minimum(w, rise)
        if ramp_high:
            w = np.minimum(w, rise[::-1])
    return np.maximum(w, MIN_WEIGHT).astype(np.float32)


class TilePlan:
    """A deterministic list of overlapping tiles over a [ni, nx, ns] volume, with their blending windows."""

    def __init__(self, shape: Sequence[int], tile: Sequence[int], overlap: Sequence[int] | int,
                 orientation: str = "inline") -> None:
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise TilingError(f"volume shape must be [ni, nx, ns] with every size >= 1, got {self.shape}")
        self.tile = tuple(int(t) for t in tile)
        if len(self.tile) not in (2, 3) or min(self.tile) < 1:
            raise TilingError(f"tile must be 2 sizes (2D model) or 3 sizes (3D model), all >= 1, got {self.tile}")
        ov = (overlap,) * len(self.tile) if isinstance(overlap, int) else tuple(int(o) for o in overlap)
        if len(ov) != len(self.tile) or min(ov) < 0:
            raise TilingError(f"overlap must be one size >= 0 or one per tile axis, got {overlap}")
        self.overlap = ov
        if len(self.tile) == 2 and orientation not in ORIENTATIONS_2D:
            raise TilingError(f"orientation must be one of {ORIENTATIONS_2D}, got {orientation!r}")
        self.orientations = slab_orientations(orientation, len(self.tile))
        self.tiles: list[Tile] = list(self._make_tiles())

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Spatial shape of every model input (a tile larger than the volume is padded up to it)."""
        return self.tile

    def _axis_plan(self, orientation: str) -> list[tuple[int, int]]:
        """(tile length, overlap) per volume axis; the slab axis of a 2D orientation has length 1."""
        if orientation == "3d":
            return list(zip(self.tile, self.overlap))
        lateral = (self.tile[0], self.overlap[0])
        along = (self.tile[1], self.overlap[1])
        return [(1, 0), lateral, along] if orientation == "inline" else [lateral, (1, 0), along]

    def _make_tiles(self) -> Iterator[Tile]:
        next_id = 0
        for orientation in self.orientations:
            per_axis = self._axis_plan(orientation)
            starts = [axis_starts(n, t, o) if t > 1 else list(range(n))
                      for n, (t, o) in zip(self.shape, per_axis)]
            for i in starts[0]:
                for x in starts[1]:
                    for s in starts[2]:
                        start = (i, x, s)
                        size = tuple(min(t, n - a) for a, (t, _), n in zip(start, per_axis, self.shape))
                        yield Tile(next_id, start, size, orientation)  # type: ignore[arg-type]
                        next_id += 1

    def window(self, tile: Tile) -> np.ndarray:
        """Blending weights with the tile's volume extent (shape tile.size)."""
        per_axis = self._axis_plan(tile.orientation)
        parts = []
        for a, (length, (_, ov), n) in enumerate(zip(tile.size, per_axis, self.shape)):
            parts.append(ramp_window(length, min(ov, length // 2), tile.start[a] > 0, tile.stop[a] < n))
        return parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]

    def tiles_touching(self, i0: int, i1: int) -> list[Tile]:
        """Tiles that cover at least one inline of [i0, i1), in plan order."""
        return [t for t in self.tiles if t.start[0] < i1 and t.stop[0] > i0]


def nearest_grid(n: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid positions (every stride-th index) and, for each of the n indices, the index of its nearest one."""
    grid = np.arange(0, n, stride)
    nearest = np.minimum((np.arange(n) + stride // 2) // stride, len(grid) - 1)
    return grid, nearest


class VolumeReader:
    """Reads normalised boxes of one or more [ni, nx, ns] volumes (channels), mirrored past the borders.

    With ``context`` c a 2D tile's input holds, for each volume, the 2c + 1 sections from c below to c above the
    tile's along the section's normal (inline sections: inlines; crossline sections: crosslines), in that order:
    the channels of a train job's crops with ``data.context`` (workers/sampling.py, BatchRecipe). Past the volume's
    edge they are mirrored like the rest of a box (a training crop there reads zeros, but crops centred on picks
    seldom reach an edge).
    """

    def __init__(self, volumes: Sequence[np.ndarray], normalisation: Sequence[tuple[float, float]],
                 context: int = 0) -> None:
        self.volumes = list(volumes)
        self.shape = tuple(self.volumes[0].shape)
        self.mean = np.asarray([m for m, _ in normalisation], dtype=np.float32)
        self.scale = np.asarray([1.0 / s for _, s in normalisation], dtype=np.float32)
        self.context = int(context)

    @property
    def n_channels(self) -> int:
        """Number of model input channels: the volumes, times 2 * context + 1."""
        return len(self.volumes) * (2 * self.context + 1)

    def box(self, lo: Sequence[int], hi: Sequence[int], rows: np.ndarray | None = None) -> np.ndarray:
        """Normalised float32 [V, *extent] (V volumes) for voxels lo..hi (hi exclusive), mirrored outside the
        volume.

        With `rows`, axis 0 takes exactly those inline indices (all inside the volume) instead of lo[0]..hi[0].
        """
        valid = [(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, self.shape)]
        pads = [(v0 - a, b - v1) for (a, b), (v0, v1) in zip(zip(lo, hi), valid)]
        first = rows if rows is not None else slice(*valid[0])
        if rows is not None:
            pads[0] = (0, 0)
        region = (first, slice(*valid[1]), slice(*valid[2]))
        out = np.empty((len(self.volumes),) + tuple(
            (len(rows) if (rows is not None and a == 0) else v1 - v0) for a, (v0, v1) in enumerate(valid)),
            dtype=np.float32)
        for c, vol in enumerate(self.volumes):
            out[c] = vol[region]
        # Normalise in place before padding: mirroring commutes with a per-channel affine map.
        out -= self.mean[:, None, None, None]
        out *= self.scale[:, None, None, None]
        if any(p != (0, 0) for p in pads):
            out = np.pad(out, [(0, 0)] + pads, mode="symmetric")
        return out

    def tile_input(self, tile: Tile, input_shape: Sequence[int]) -> np.ndarray:
        """Model input [C, *input_shape] for a tile: the slab axis dropped (or, with context, its 2c + 1 sections
        made channels), padded by mirroring when needed."""
        lo = list(tile.start)
        hi = [a + 1 for a in tile.start]
        for axis, length in zip(tile.model_axes(), input_shape):
            hi[axis] = lo[axis] + length
        if tile.orientation == "3d":
            return self.box(lo, hi)
        slab = 0 if tile.orientation == "inline" else 1
        lo[slab] -= self.context
        hi[slab] += self.context
        data = np.moveaxis(self.box(lo, hi), slab + 1, 1)  # [V, 2c + 1, lateral, samples]
        return data.reshape((-1,) + data.shape[2:]) if self.context else data[:, 0]
