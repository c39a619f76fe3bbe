"""Batches from example sets (workers/examples.py): the recipe a train job with ``data.examples`` hands the pool.

``ExampleRecipe`` has the interface of ``workers.sampling.BatchRecipe`` (x_shape, y_shape, rows, make_batch), so
the worker pool, its shared-memory ring, data-parallel shares and the in-process path take it unchanged. Batch k of
epoch e is, as there, a pure function of (seed, e, k): the rows are drawn by the same ``PickSampler`` (class
balance included) over the examples instead of the picks, and every row's augmentation plan by the same
``augment.draw_plan``.

What differs: the crops are already cut. Each example is read from its set (HDF5, opened in the worker after
start), normalised with its own source survey's (mean, std) per channel, then augmented: flips, the transpose
swap of time and 3D crops, stretch, scaling, polarity and noise exactly as from a survey; the vertical shift
moves the stored crop along its sample axis, the cells it uncovers are zero (as past a survey's edge). The
inline/crossline swap of a vertical crop needs the other section through the example, which a set does not hold:
with ``sections`` (each source survey's volumes, still in the home) a swapped row is cut from its survey like a
row of BatchRecipe (shifted centre, crossline section); without them the train job's check refuses the swap.

Segmentation labels are made as job_data makes them from picks: the recipe's own examples of each survey are that
survey's PointLabels (a set's examples are its picks), so a crop carries every example of its survey it covers and
training crops see training examples only, never a validation one (the set's stored ``labels`` crops, which hold
every pick, are its record, for viewers and export; training does not read them).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from workers import augment as aug_ops
from workers.augment import Augmentation
from workers.crops import CropSpec, extract_crop
from workers.sampling import BatchShapes, PickSampler, PointLabels, RawVolume, SamplingError, batch_rngs


@dataclass
class ExampleRecipe(BatchShapes):
    """Batches [B, C, *crop] from the rows ``rows_of`` of the set files ``files``.

    ``set_of``/``row_of`` [M]: which file and row each drawable example is; ``norm`` [M, C, 2]: its (mean, std)
    per channel; ``sampler`` draws among the M (its labels are the job's class ids, its picks the examples' grid
    positions); ``survey_of`` [M] the source survey of each (for per-voxel labels and the swap).
    """

    files: tuple[str, ...]
    set_of: np.ndarray
    row_of: np.ndarray
    norm: np.ndarray
    sampler: PickSampler
    crop: CropSpec
    batch_size: int
    batches_per_epoch: int
    per_voxel: bool = False
    augment: Augmentation | None = None
    rows: tuple[int, int] | None = None
    context: int = 0  # sets hold their channels as cut: no context slices
    survey_of: np.ndarray | None = None  # [M] source survey index: with sections, for the swap
    sections: tuple[tuple[RawVolume, ...], ...] | None = None  # per source survey: its volumes (one per channel)
    _opened: list = field(default_factory=list, repr=False, compare=False)
    _surveys: list = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = len(self.set_of)
        if self.per_voxel and self.survey_of is None:
            raise SamplingError("per-voxel labels need survey_of: the source survey of each example")
        if self.per_voxel and (np.asarray(self.sampler.picks) < 0).any():
            raise SamplingError("per-voxel labels need the examples' grid positions; a set imported from OpendTect "
                                "has none")
        if not (len(self.row_of) == m == len(self.norm) == len(self.sampler.labels)):
            raise SamplingError("example recipe: set_of, row_of, norm and the sampler need one entry per example")
        if self.batch_size < 1 or self.batches_per_epoch < 1:
            raise SamplingError("batch_size and batches_per_epoch must be >= 1")
        if self.rows is not None and not 0 <= self.rows[0] < self.rows[1] <= self.batch_size:
            raise SamplingError(f"rows {self.rows} must be a non-empty range inside the batch of {self.batch_size}")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_opened"], state["_surveys"] = [], []  # HDF5 handles and maps never travel: each opens its own
        state.pop("_labels_cache", None)
        return state

    @property
    def channels(self) -> int:
        return int(self.norm.shape[1])

    @property
    def per_voxel_labels(self) -> bool:
        return self.per_voxel

    def open(self) -> None:
        """Open the set files in this process (idempotent)."""
        if not self._opened:
            import h5py

            self._opened.extend(h5py.File(f, "r") for f in self.files)
        if self.sections is not None and not self._surveys:
            self._surveys.extend([v.open() for v in vols] for vols in self.sections)

    def make_batch(self, seed: int, epoch: int, k: int, x: np.ndarray, y: np.ndarray) -> None:
        """Fill ``x`` and ``y`` with batch ``k`` of ``epoch``; depends only on (seed, epoch, k)."""
        self.open()
        rng_sample, rng_aug = batch_rngs(seed, epoch, k)
        idx = self.sampler.draw_index(rng_sample, self.batch_size)
        first, stop = self.rows or (0, self.batch_size)
        plans = _plans(self.augment, self.crop, rng_aug, stop)[first:]
        idx = idx[first:stop]
        self._read(idx, x, y)
        cut = self._cut_swapped(idx, plans, x, y)
        mean, std = self.norm[idx, :, 0], self.norm[idx, :, 1]
        x -= mean.reshape(mean.shape + (1,) * len(self.crop.size)).astype(np.float32)
        x *= (1.0 / std).reshape(std.shape + (1,) * len(self.crop.size)).astype(np.float32)
        if not self.per_voxel:
            y[:] = self.sampler.labels[idx]
        if self.augment is None:
            return
        for i, plan in enumerate(plans):
            if plan.shift and i not in cut:
                _shift(x[i], self.crop, plan.shift, lead=1, fill=0)
                if self.per_voxel:
                    _shift(y[i], self.crop, plan.shift, lead=0, fill=-1)
            aug_ops.apply_geometry(x[i], self.crop, plan, lead=1)
            aug_ops.apply_amplitude(x[i], plan, self.augment)
            if self.per_voxel:
                aug_ops.apply_geometry(y[i], self.crop, plan, lead=0)

    def _read(self, idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """Raw crops (and label crops) of examples ``idx`` into x (and y), one sorted read per set file."""
        sets, rows = self.set_of[idx], self.row_of[idx]
        for s in np.unique(sets):
            mine = np.flatnonzero(sets == s)
            wanted, back = np.unique(rows[mine], return_inverse=True)  # h5py reads increasing, distinct rows
            h5 = self._opened[int(s)]
            x[mine] = h5["x"][wanted][back]
        if self.per_voxel:
            for s in np.unique(self.survey_of[idx]):
                mine = np.flatnonzero(self.survey_of[idx] == s)
                y[mine] = self._point_labels(int(s)).crops(self.sampler.picks[idx[mine]], self.crop)


    def _cut_swapped(self, idx: np.ndarray, plans: list[aug_ops.AugmentPlan], x: np.ndarray,
                     y: np.ndarray) -> set[int]:
        """Rows whose plan swaps a vertical crop, cut raw from their survey's other section; returns those rows."""
        if self.crop.orientation not in ("inline", "crossline"):
            return set()
        rows = {i for i, p in enumerate(plans) if p.swap}
        if rows and not self._surveys:
            raise SamplingError("the inline/crossline swap needs the source surveys' volumes (sections), which this "
                                "recipe was not given")
        for i in rows:
            r, plan = int(idx[i]), plans[i]
            s = int(self.survey_of[r])
            spec = aug_ops.cut_spec(self.crop, plan)
            centre = aug_ops.shifted_center(tuple(self.sampler.picks[r]), plan)
            for c, vol in enumerate(self._surveys[s]):
                extract_crop(vol, centre, spec, out=x[i, c])
            if self.per_voxel:
                y[i] = self._point_labels(s).crops(np.asarray([centre]), spec)[0]
        return rows

    def _point_labels(self, s: int) -> PointLabels:
        """This recipe's own examples of survey ``s`` as point labels (training rows see training labels only)."""
        cache = self.__dict__.setdefault("_labels_cache", {})
        if s not in cache:
            mine = self.survey_of == s
            points = self.sampler.picks[mine]
            # the grid the points lie in: the survey's when its volumes are open, else as far as the points reach
            # (cells past them hold no label either way)
            shape = self._surveys[s][0].shape if self._surveys else tuple(int(n) + 1 for n in points.max(axis=0))
            cache[s] = PointLabels(shape, points, self.sampler.labels[mine])
        return cache[s]


def _plans(aug: Augmentation | None, crop: CropSpec, rng: np.random.Generator,
           n: int) -> list[aug_ops.AugmentPlan]:
    if aug is None:
        return [aug_ops.draw_plan(None, crop, rng)] * n
    return [aug_ops.draw_plan(aug, crop, rng) for _ in range(n)]


def _shift(a: np.ndarray, crop: CropSpec, shift: int, lead: int, fill: float) -> None:
    """Move a cut crop by ``shift`` samples as the shifted centre would have cut it (uncovered cells: ``fill``)."""
    axis = lead + crop.volume_axes.index(2) if 2 in crop.volume_axes else None
    if axis is None:
        return  # a time slice's shift moves it to another sample, which a set does not hold
    n = a.shape[axis]
    moved = np.full_like(a, fill)
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if shift > 0:  # the centre moves down: the crop shows later samples
        src[axis], dst[axis] = slice(shift, n), slice(0, max(n - shift, 0))
    else:
        src[axis], dst[axis] = slice(0, max(n + shift, 0)), slice(-shift, n)
    moved[tuple(dst)] = a[tuple(src)]
    a[...] = moved
