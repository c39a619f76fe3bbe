"""Samplers and the batch recipe: what batch k of epoch e contains, as a pure function of (seed, e, k).

A ``BatchRecipe`` is a small picklable description (volume paths, crop spec, sampler, augmentation, batch
size) that travels to each worker once. The worker calls ``open()`` after it has started: memory maps and
HDF5 handles are per process and must not be inherited (an HDF5 handle shared over fork corrupts reads;
under spawn it cannot be pickled at all). ``make_batch`` then fills a ring slot in place.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np

from workers import augment as aug_ops
from workers.augment import Augmentation
from workers.crops import CropSpec, CropWindows


class SamplingError(ValueError):
    """A sampler or recipe that cannot produce batches."""


def batch_rngs(seed: int, epoch: int, k: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for sampling and augmentation; they depend only on (seed, epoch, k)."""
    s_sample, s_aug = np.random.SeedSequence([int(seed), int(epoch), int(k)]).spawn(2)
    return np.random.default_rng(s_sample), np.random.default_rng(s_aug)


@dataclass(frozen=True)
class RawVolume:
    """A raw C-order [inline, crossline, sample] file (the survey cache format), memory-mapped read-only."""

    path: str
    shape: tuple[int, int, int]
    dtype: str = "float32"
    offset: int = 0

    def open(self) -> np.ndarray:
        """Map the file; pages are read on demand and shared with the page cache, never copied."""
        if not os.path.isfile(self.path):
            raise SamplingError(f"volume file {self.path} does not exist (was the survey imported or moved?)")
        need = self.offset + int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        if os.path.getsize(self.path) < need:
            raise SamplingError(f"volume file {self.path} has {os.path.getsize(self.path)} bytes; shape "
                                f"{tuple(self.shape)} of {self.dtype} needs {need}")
        return np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", shape=tuple(self.shape),
                         offset=self.offset)


@dataclass(frozen=True)
class H5Volume:
    """A 3D dataset in an HDF5 file; opened in the worker after start (h5py handles do not survive fork)."""

    path: str
    dataset: str

    def open(self) -> np.ndarray:
        import h5py  # imported here: workers that read raw volumes never pay for it

        ds = h5py.File(self.path, "r")[self.dataset]
        if ds.ndim != 3:
            raise SamplingError(f"{self.path}:{self.dataset} has shape {ds.shape}; need 3D")
        return ds


VolumeSource = Union[RawVolume, H5Volume]


@dataclass(frozen=True)
class PickSampler:
    """Crops centred on picks [N, 3] (inline, crossline, sample indices) with one class label each.

    With ``balance`` each crop first draws a class uniformly and then a pick of that class, so rare facies are
    seen as often as common ones; without it picks are drawn uniformly.
    """

    picks: np.ndarray
    labels: np.ndarray
    balance: bool = True

    def __post_init__(self) -> None:
        picks = np.asarray(self.picks, dtype=np.int64)
        labels = np.asarray(self.labels, dtype=np.int64)
        if picks.ndim != 2 or picks.shape[1] != 3 or len(picks) == 0:
            raise SamplingError(f"picks must be a non-empty [N, 3] array of indices, got shape {picks.shape}")
        if labels.shape != (len(picks),):
            raise SamplingError(f"labels must have one entry per pick ({len(picks)}), got shape {labels.shape}")
        object.__setattr__(self, "picks", picks)
        object.__setattr__(self, "labels", labels)

    @property
    def per_voxel_labels(self) -> bool:
        return False

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` centres [n, 3] and their labels [n]."""
        idx = self.draw_index(rng, n)
        return self.picks[idx], self.labels[idx]

    def draw_index(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Which picks ``n`` crops take (indices into ``picks``); example-set recipes draw rows this way."""
        if self.balance:
            classes, inverse = np.unique(self.labels, return_inverse=True)
            chosen = rng.integers(len(classes), size=n)
            u = rng.random(n)
            idx = np.empty(n, dtype=np.int64)
            for c in range(len(classes)):
                members = np.flatnonzero(inverse == c)
                sel = chosen == c
                idx[sel] = members[(u[sel] * len(members)).astype(np.int64)]
        else:
            idx = rng.integers(len(self.picks), size=n)
        return idx


@dataclass(frozen=True)
class LabelVolumeSampler:
    """Crops at random centres with per-voxel labels cut from a label volume (-1 = unlabelled), or from
    PointLabels (picks, the same crops without the volume).

    ``slices`` restricts centres to some indices along one axis, e.g. ``(0, (339,))`` for one labelled inline.
    ``centres`` [N, 3] instead draws each centre from these points (e.g. the picks), so that sparse labels
    fall inside every crop; it takes precedence over ``slices``. ``anywhere`` (with ``centres``): the share of
    each batch's crops, its last rows, centred anywhere in the volume instead (mostly unlabelled: the unlabelled
    cube a consistency loss learns from, daemon/executor/training/consistency.py).
    """

    labels: "VolumeSource | PointLabels"
    shape: tuple[int, int, int]
    slices: tuple[int, tuple[int, ...]] | None = None
    centres: np.ndarray | None = None
    anywhere: float = 0.0

    def __post_init__(self) -> None:
        if self.centres is not None:
            c = np.asarray(self.centres, dtype=np.int64)
            if c.ndim != 2 or c.shape[1] != 3 or len(c) == 0:
                raise SamplingError(f"centres must be a non-empty [N, 3] array of indices, got shape {c.shape}")
            object.__setattr__(self, "centres", c)
        if not 0.0 <= self.anywhere < 1.0:
            raise SamplingError(f"anywhere must be a share in [0, 1), got {self.anywhere}")

    @property
    def per_voxel_labels(self) -> bool:
        return True

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
        if self.centres is not None:
            free = int(round(n * self.anywhere))
            picked = self.centres[rng.integers(len(self.centres), size=n - free)]
            if not free:
                return picked, None
            return np.concatenate([picked, self._anywhere(rng.random((free, 3)))]), None
        u = rng.random((n, 3))
        centers = self._anywhere(u)
        if self.slices is not None:
            axis, indices = self.slices
            if not indices:
                raise SamplingError("label sampler slices list is empty")
            centers[:, axis] = np.asarray(indices, dtype=np.int64)[(u[:, axis] * len(indices)).astype(np.int64)]
        return centers, None

    def _anywhere(self, u: np.ndarray) -> np.ndarray:
        """Centres [n, 3] anywhere in the volume from uniform draws u [n, 3] in [0, 1)."""
        return (u * np.asarray(self.shape)).astype(np.int64)


@dataclass(frozen=True)
class PointLabels:
    """Per-voxel labels held as points, -1 everywhere else: a label volume of sparse picks, without the volume.

    A label source of LabelVolumeSampler, like a RawVolume: `crops` gives exactly what cropping that volume would
    (the same centring, -1 for no pick and outside the volume), so a job's labels cost memory and disk in
    proportion to its picks, not to its survey (a float32 label volume of F3 is 1.1 GB, written before training).
    Points are kept sorted along each axis, so a crop looks only at the points of its inlines (or crosslines, or
    samples) on the axis its crop is one slice thick, or spans.
    """

    shape: tuple[int, int, int]
    points: np.ndarray                  # [N, 3] int64: inline, crossline, sample indices inside the volume
    labels: np.ndarray                  # [N] class ids
    _order: tuple = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        p = np.asarray(self.points, dtype=np.int64).reshape(-1, 3)
        if len(p) != len(self.labels):
            raise SamplingError(f"point labels need one label per point ({len(p)}), got {len(self.labels)}")
        if len(p) and ((p < 0).any() or (p >= np.asarray(self.shape)).any()):
            raise SamplingError(f"point labels must lie inside the volume {tuple(self.shape)}")
        order = tuple(np.argsort(p[:, a], kind="stable") for a in range(3))
        object.__setattr__(self, "points", p)
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.float32))
        object.__setattr__(self, "_order", tuple((o, p[o, a]) for a, o in enumerate(order)))

    def open(self) -> "PointLabels":
        """Nothing to map: the points travel with the recipe."""
        return self

    def crops(self, centers: np.ndarray, spec: CropSpec) -> np.ndarray:
        """Labels of crops [n, *spec.size] around `centers`, as cut from the label volume the points make."""
        axes = spec.volume_axes
        fixed = next((ax for ax in range(3) if ax not in axes), None)
        out = np.full((len(centers), *spec.size), -1.0, dtype=np.float32)
        lead = fixed if fixed is not None else axes[0]
        span = 1 if fixed is not None else spec.size[0]
        order, keys = self._order[lead]
        c = np.asarray(centers, dtype=np.int64).reshape(-1, 3)
        lo = c[:, lead] - (0 if fixed is not None else span // 2)
        first, stop = np.searchsorted(keys, lo), np.searchsorted(keys, lo + span)
        counts = stop - first
        if not counts.sum():
            return out
        # every (crop, point of its slab) pair at once: crop ids, and the points' places in the sorted order
        crop = np.repeat(np.arange(len(c)), counts)
        near = order[np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)]
        pts = self.points[near]
        cells = [pts[:, a] - (c[crop, a] - size // 2) for a, size in zip(axes, spec.size)]
        keep = np.logical_and.reduce([(k >= 0) & (k < size) for k, size in zip(cells, spec.size)])
        out[(crop[keep], *(k[keep] for k in cells))] = self.labels[near][keep]  # a point picked twice: the last
        return out


Sampler = Union[PickSampler, LabelVolumeSampler]


class BatchShapes:
    """The shapes of the batches a recipe makes (BatchRecipe here, workers.example_batches.ExampleRecipe): from its
    batch_size, rows (this recipe's share of the batch, or None), channels, crop and per_voxel_labels."""

    @property
    def rows_made(self) -> int:
        """Rows per made batch: the whole batch, or this recipe's share of it."""
        return self.rows[1] - self.rows[0] if self.rows else self.batch_size  # type: ignore[attr-defined]

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.rows_made, self.channels, *self.crop.size)  # type: ignore[attr-defined]

    @property
    def y_shape(self) -> tuple[int, ...]:
        if self.per_voxel_labels:  # type: ignore[attr-defined]
            return (self.rows_made, *self.crop.size)  # type: ignore[attr-defined]
        return (self.rows_made,)


@dataclass
class BatchRecipe(BatchShapes):
    """Everything a worker needs to make batch (e, k): x float32 [B, C, *crop], y int64 [B] or [B, *crop].

    Channels: for each volume, the crop itself, or with ``context`` > 0 (2D crops only) the 2*context + 1
    neighbouring slices along the crop's normal, ordered from lower to higher index.
    """

    volumes: tuple[VolumeSource, ...]
    crop: CropSpec
    sampler: Sampler
    batch_size: int
    batches_per_epoch: int
    context: int = 0
    norm: tuple[tuple[float, float], ...] | None = None   # (mean, std) per volume
    augment: Augmentation | None = None
    rows: tuple[int, int] | None = None  # make only rows [a, b) of each batch (one rank's share, data-parallel)
    _opened: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.volumes = tuple(self.volumes)
        if not self.volumes:
            raise SamplingError("a recipe needs at least one input volume")
        if self.batch_size < 1 or self.batches_per_epoch < 1:
            raise SamplingError("batch_size and batches_per_epoch must be >= 1")
        if self.context and self.crop.orientation == "3d":
            raise SamplingError("neighbour context channels apply to 2D crops only; use context=0 for 3d")
        if self.norm is not None and len(self.norm) != len(self.volumes):
            raise SamplingError(f"norm needs one (mean, std) per volume ({len(self.volumes)}), got {len(self.norm)}")
        if self.rows is not None and not 0 <= self.rows[0] < self.rows[1] <= self.batch_size:
            raise SamplingError(f"rows {self.rows} must be a non-empty range inside the batch of {self.batch_size}")

    def __getstate__(self) -> dict:
        # Open maps never travel: each process opens its own after it starts.
        state = dict(self.__dict__)
        state["_opened"] = []
        return state

    @property
    def channels(self) -> int:
        return len(self.volumes) * (2 * self.context + 1)

    @property
    def per_voxel_labels(self) -> bool:
        return self.sampler.per_voxel_labels

    def open(self) -> None:
        """Map the volumes in this process (idempotent)."""
        if not self._opened:
            vols = [v.open() for v in self.volumes]
            if isinstance(self.sampler, LabelVolumeSampler):
                vols.append(self.sampler.labels.open())
            self._opened.extend(vols)

    def make_batch(self, seed: int, epoch: int, k: int, x: np.ndarray, y: np.ndarray) -> None:
        """Fill ``x`` and ``y`` (slot views) with batch ``k`` of ``epoch``; depends only on (seed, epoch, k)."""
        self.open()
        rng_sample, rng_aug = batch_rngs(seed, epoch, k)
        centers, labels = self.sampler.draw(rng_sample, self.batch_size)
        first, stop = self.rows or (0, self.batch_size)
        # Rows before `first` still draw their plans: row i's augmentation is the same in every share.
        plans = self._draw_plans(rng_aug, stop)[first:]
        self._fill_rows(centers[first:stop], plans, x, y, None if labels is None else labels[first:stop])

    def _draw_plans(self, rng: np.random.Generator, n: int) -> list[aug_ops.AugmentPlan]:
        """The augmentation plans of the first ``n`` rows, in row order."""
        if self.augment is None:
            # Without augmentation every plan is the identity, whatever the generator, and rng_aug feeds
            # nothing else: one plan for all rows changes no batch and saves a draw per crop.
            return [aug_ops.draw_plan(None, self.crop, rng)] * n
        return [aug_ops.draw_plan(self.augment, self.crop, rng) for _ in range(n)]

    def _fill_rows(self, centers: np.ndarray, plans: list[aug_ops.AugmentPlan], x: np.ndarray, y: np.ndarray,
                   labels: np.ndarray | None) -> None:
        """Rows ``x[i]``, ``y[i]``: crop ``i`` around ``centers[i]`` with ``plans[i]``.

        Crops are cut a whole group at a time (a group shares a cut spec: without augmentation the whole
        batch, with the inline/crossline swap at most two groups), so the Python work per batch grows with
        the channels; only geometry and amplitude, which differ per crop, are applied crop by crop.
        """
        if self.augment is None:
            specs, cuts = [self.crop] * len(plans), np.asarray(centers, dtype=np.int64)
        else:
            specs = [aug_ops.cut_spec(self.crop, p) for p in plans]
            cuts = np.array([aug_ops.shifted_center(tuple(c), p) for c, p in zip(centers, plans)], dtype=np.int64)
        lab_vol = None if labels is not None else self._opened[-1]
        for spec in dict.fromkeys(specs):
            rows = [i for i, s in enumerate(specs) if s == spec]
            whole = len(rows) == len(specs)
            sel = slice(None) if whole else np.asarray(rows)
            xs = x if whole else np.empty((len(rows), *x.shape[1:]), dtype=np.float32)
            self._cut_channels(cuts[sel], spec, xs)
            if not whole:
                x[sel] = xs
            if isinstance(lab_vol, PointLabels):
                y[sel] = lab_vol.crops(cuts[sel], spec)
            elif lab_vol is not None:
                windows = CropWindows(lab_vol.shape, cuts[sel], spec)
                # labels are read through float32 like the inputs, then -1 where the crop leaves the volume
                y[sel] = np.where(windows.inside, windows.cut(lab_vol), -1)
        if labels is not None:
            y[:] = labels
        if self.augment is None:
            return
        for i, plan in enumerate(plans):
            aug_ops.apply_geometry(x[i], self.crop, plan, lead=1)
            aug_ops.apply_amplitude(x[i], plan, self.augment)
            if lab_vol is not None:
                aug_ops.apply_geometry(y[i], self.crop, plan, lead=0)

    def _cut_channels(self, centers: np.ndarray, spec: CropSpec, x: np.ndarray) -> None:
        """Channels of crops [n, C, *crop] around ``centers``: one CropWindows per (volume shape, context offset)."""
        fixed = next((ax for ax in range(3) if ax not in spec.volume_axes), None)
        windows: dict[tuple, CropWindows] = {}
        ch = 0
        for v, vol in enumerate(self._opened[: len(self.volumes)]):
            for d in range(-self.context, self.context + 1):
                key = (tuple(vol.shape), d)
                if key not in windows:
                    shifted = centers.copy()
                    if fixed is not None:
                        shifted[:, fixed] += d
                    windows[key] = CropWindows(vol.shape, shifted, spec)
                windows[key].cut(vol, out=x[:, ch], transform=self._normaliser(v))
                ch += 1

    def _normaliser(self, v: int) -> Callable[[np.ndarray], None] | None:
        """Normalisation of volume ``v``'s crops with the survey's statistics, in place (None without norm)."""
        if self.norm is None:
            return None
        mean, std = self.norm[v]
        return lambda crops: aug_ops.normalise(crops, mean, std)
