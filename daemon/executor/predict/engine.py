"""The engine: a model run over the tiles (FCN) or crop grid (patch model) that touch a chunk of inlines, its
softmax blended into the chunk's accumulators; the shared mechanism of whole-volume and in-memory apply (apply.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from daemon.executor.models.ensemble import Ensemble
from daemon.executor.models.inference import inference_copy
from daemon.executor.predict.spec import ApplySpec, PredictError, make_spec, resolve_device, resolve_precision
from daemon.kinds.predict import SPLIT_NEEDS_MEMBERS
from daemon.executor.predict.tiling import TilePlan, TilingError, VolumeReader, nearest_grid, slab_orientations

@dataclass
class _Engine:
    """Runs a model over chunks of a volume; the shared mechanism of both apply paths."""

    model: torch.nn.Module
    spec: ApplySpec
    reader: VolumeReader
    device: torch.device
    batch_size: int = 1
    n_classes: int | None = None   # when known: every batch's class count is checked against it
    on_batch: Callable[[float], None] = lambda fraction: None
    memory_format: torch.memory_format | None = None
    # True: every forward pass returns one more channel after the classes, the mean entropy of the views (an
    # ensemble's members, or the model alone); it blends like the probabilities, so that at the end a voxel's
    # disagreement is the entropy of its blended probabilities minus that channel (disagreement()).
    views_entropy: bool = False
    _windows: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = self.reader.shape
        if self.spec.kind == "fcn":
            try:
                self.plan = TilePlan(shape, self.spec.tile, self.spec.overlap, self.spec.orientation)
            except TilingError as exc:
                raise PredictError(str(exc)) from exc

    @property
    def item_voxels(self) -> int:
        """Voxels of one model input."""
        return int(np.prod(self.spec.tile if self.spec.kind == "fcn" else self.spec.crop))

    def members(self, orientation: str | None) -> list[torch.nn.Module] | None:
        """The members of an ensemble that run on inputs of this orientation (all of them, or with orientation
        "split" the first half along inlines and the rest along crosslines); None for a single model."""
        if not isinstance(self.model, Ensemble):
            return None
        members = list(self.model.members)
        if self.spec.orientation != "split" or orientation is None:
            return members
        half = -(-len(members) // 2)
        return members[:half] if orientation == "inline" else members[half:]

    def passes(self, orientation: str | None) -> int:
        """Forward passes of one input of this orientation: the members that run on it, or 1."""
        members = self.members(orientation)
        return 1 if members is None else len(members)

    def forward(self, batch: np.ndarray | torch.Tensor, c_order: bool = True,
                orientation: str | None = None) -> torch.Tensor:
        """Softmax probabilities of a batch (of one orientation, which chooses the members with "split"), on the
        CPU, float32; in C order unless ``c_order`` is False (then in the model's layout, e.g. channels-last,
        saving a copy for a caller that only copies them out)."""
        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        if self.memory_format is not None and x.dim() in (4, 5):
            x = x.contiguous(memory_format=self.memory_format)
        # An ensemble's members are run here and their probabilities averaged: the ensemble's own forward
        # returns the log of that mean, which would only be turned back into it.
        members = self.members(orientation)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.spec.precision == "bfloat16"):
            member_logits = [m(x) for m in members] if members is not None else None
            logits = member_logits[0] if member_logits is not None else self.model(x)
        expected = (x.shape[0], None) + (tuple(x.shape[2:]) if self.spec.kind == "fcn" else ())
        if logits.dim() != len(expected) or logits.shape[0] != x.shape[0] or tuple(logits.shape[2:]) != expected[2:]:
            raise PredictError(
                f"a {self.spec.kind} model must return logits "
                f"{'[B, n_classes, *input spatial]' if self.spec.kind == 'fcn' else '[B, n_classes]'}"
                f" for input {tuple(x.shape)}, got {tuple(logits.shape)}; check kind ('fcn' or 'patch') and tile/crop")
        if logits.shape[1] < 2:
            raise PredictError(f"the model returns {logits.shape[1]} class channel; apply needs >= 2 classes "
                               "(softmax), e.g. background and target")
        if self.n_classes is not None and logits.shape[1] != self.n_classes:
            raise PredictError(f"the model returns {logits.shape[1]} class channels; its file names "
                               f"{self.n_classes} classes")
        if member_logits is not None:
            views = torch.stack([torch.softmax(v.float(), dim=1) for v in member_logits])
            probs = views.mean(dim=0)
        else:
            probs = torch.softmax(logits.float(), dim=1)
            views = probs[None]
        if self.views_entropy:
            probs = torch.cat([probs, entropy(views, dim=2).mean(dim=0).unsqueeze(1)], dim=1)
        # Back to plain C order: the blending slices tiles and strided views of a channels-last tensor are slow.
        return (probs.contiguous() if c_order else probs).cpu()

    def probe_classes(self, known: int | None = None) -> int:
        """Number of classes: ``known`` (the model file's, checked on every batch), else from one forward pass
        on the first tile or crop."""
        if known is not None:
            self.n_classes = int(known)
            return self.n_classes
        with torch.inference_mode():
            if self.spec.kind == "fcn":
                first = self.reader.tile_input(self.plan.tiles[0], self.plan.input_shape)
            else:
                first = np.zeros((self.reader.n_channels,) + self.spec.crop, dtype=np.float32)
            return int(self.forward(first[None]).shape[1]) - int(self.views_entropy)

    def chunk(self, i0: int, i1: int) -> torch.Tensor:
        """Blended probabilities [n_classes, i1 - i0, nx, ns] for inlines [i0, i1)."""
        with torch.inference_mode():
            return self._fcn_chunk(i0, i1) if self.spec.kind == "fcn" else self._patch_chunk(i0, i1)

    def _window(self, tile) -> torch.Tensor:
        key = (tile.orientation, tile.size, tuple(a > 0 for a in tile.start),
               tuple(b < n for b, n in zip(tile.stop, self.reader.shape)))
        if key not in self._windows:
            w = self.plan.window(tile)
            # None for an all-ones window (a tile with no overlapping neighbour, e.g. a whole section): plain adds
            self._windows[key] = None if bool((w == 1).all()) else torch.from_numpy(w)
        return self._windows[key]

    def _fcn_chunk(self, i0: int, i1: int) -> torch.Tensor:
        tiles = self.plan.tiles_touching(i0, i1)
        _, nx, ns = self.reader.shape
        # Tiles that cover each voxel of the chunk once (whole sections of one orientation, say) are copied into
        # place, with no weight sum and no division; any voxel under two tiles (overlaps, a last tile moved back to
        # fit, the two orientations of "both") makes it a weighted blend. The plan covers every voxel, so the
        # tiles' volumes adding up to the chunk's means no voxel is covered twice.
        blend = sum((min(t.stop[0], i1) - max(t.start[0], i0)) * (t.stop[1] - t.start[1]) * (t.stop[2] - t.start[2])
                    for t in tiles) > (i1 - i0) * nx * ns
        acc: torch.Tensor | None = None
        wsum = torch.zeros((i1 - i0, nx, ns), dtype=torch.float32) if blend else None
        # A batch holds tiles of one orientation (with "split" each runs its own members).
        groups = [[t for t in tiles if t.orientation == o] for o in self.plan.orientations]
        batches = [g[k:k + self.batch_size] for g in groups for k in range(0, len(g), self.batch_size)]
        # Progress counts forward passes: every input has the plan's shape, and with "split" a batch of inlines
        # runs more members than one of crosslines (2 against 1 for three members).
        passes = {o: self.passes(o) for o in self.plan.orientations}
        costs = np.cumsum([len(batch) * passes[batch[0].orientation] for batch in batches])
        for b, batch in enumerate(batches):
            inputs = np.stack([self.reader.tile_input(t, self.plan.input_shape) for t in batch])
            # copied straight into place when nothing blends
            probs = self.forward(inputs, c_order=blend, orientation=batch[0].orientation)
            if acc is None:
                acc = (torch.zeros if blend else torch.empty)((probs.shape[1], i1 - i0, nx, ns), dtype=torch.float32)
            for tile, p in zip(batch, probs):
                self._accumulate(acc, wsum, tile, p, i0, i1)
            self.on_batch(float(costs[b] / costs[-1]))
        return acc.div_(wsum) if blend else acc  # in place: no second chunk-sized tensor

    def _accumulate(self, acc: torch.Tensor, wsum: torch.Tensor | None, tile, p: torch.Tensor, i0: int,
                    i1: int) -> None:
        # Crop the padded model output back to the tile, restore the slab axis, keep the chunk's inlines.
        axes = tile.model_axes()
        valid = p[(slice(None),) + tuple(slice(0, tile.size[a]) for a in axes)]
        if tile.orientation == "inline":
            valid = valid[:, None]
        elif tile.orientation == "crossline":
            valid = valid[:, :, None]
        a, b = max(tile.start[0], i0), min(tile.stop[0], i1)
        region = (slice(a - i0, b - i0), slice(tile.start[1], tile.stop[1]), slice(tile.start[2], tile.stop[2]))
        valid = valid[:, a - tile.start[0]:b - tile.start[0]]
        w = self._window(tile)
        if wsum is None:  # no tile of the chunk overlaps another
            acc[(slice(None),) + region].copy_(valid)
        elif w is None:
            acc[(slice(None),) + region].add_(valid)
            wsum[region] += 1.0
        else:
            w = w[a - tile.start[0]:b - tile.start[0]]
            acc[(slice(None),) + region].addcmul_(valid, w)  # in place: no temporary of the tile's size
            wsum[region] += w

    def _patch_chunk(self, i0: int, i1: int) -> torch.Tensor:
        orientations = slab_orientations(self.spec.orientation, len(self.spec.crop))
        # each orientation's share of the progress: its forward passes (the same crops, its members)
        bounds = np.concatenate([[0.0], np.cumsum([self.passes(o) for o in orientations])])
        bounds /= bounds[-1]
        total = None
        for k, orientation in enumerate(orientations):
            probs = self._patch_orientation(i0, i1, orientation, (float(bounds[k]), float(bounds[k + 1])))
            total = probs if total is None else total.add_(probs)
        # in place: a chunk-sized copy here was a quarter of the executor's memory at F3's size
        return total if len(orientations) == 1 else total.div_(len(orientations))

    def _patch_orientation(self, i0: int, i1: int, orientation: str, share: tuple[float, float]) -> torch.Tensor:
        """The chunk's probabilities from the crops of one orientation; ``share``: the part of the chunk's
        progress that they make (from, to)."""
        crop, s = self.spec.crop, self.spec.stride
        extent = {"inline": (1,) + crop, "crossline": (crop[0], 1, crop[1]), "3d": crop}[orientation]
        grids = [nearest_grid(n, s) for n in self.reader.shape]
        g_lo, g_hi = int(grids[0][1][i0]), int(grids[0][1][i1 - 1])
        centres_i = grids[0][0][g_lo:g_hi + 1]
        lo = [int(centres_i[0]) - extent[0] // 2, -(extent[1] // 2), -(extent[2] // 2)]
        hi = [int(centres_i[-1]) - extent[0] // 2 + extent[0]] + [
            int(grids[a][0][-1]) - extent[a] // 2 + extent[a] for a in (1, 2)]
        # A crop one inline thick needs only the grid inlines, not every inline between them.
        rows = centres_i if extent[0] == 1 else None
        block = torch.from_numpy(self.reader.box(lo, hi, rows=rows))
        windows = block.unfold(1, extent[0], 1 if rows is not None else s).unfold(2, extent[1], s)
        windows = windows.unfold(3, extent[2], s).permute(1, 2, 3, 0, 4, 5, 6)
        n_grid = windows.shape[:3]
        count = int(np.prod(n_grid))
        model_shape = (self.reader.n_channels,) + tuple(crop)
        grid_probs: torch.Tensor | None = None
        n_batches = -(-count // self.batch_size)
        for b in range(n_batches):
            idx = torch.arange(b * self.batch_size, min(count, (b + 1) * self.batch_size))
            a_i, rest = idx // (n_grid[1] * n_grid[2]), idx % (n_grid[1] * n_grid[2])
            crops = windows[a_i, rest // n_grid[2], rest % n_grid[2]].reshape((len(idx),) + model_shape)
            probs = self.forward(crops, orientation=orientation)
            if grid_probs is None:
                grid_probs = torch.empty((probs.shape[1], count), dtype=torch.float32)
            grid_probs[:, idx] = probs.T
            self.on_batch(share[0] + (share[1] - share[0]) * (b + 1) / n_batches)
        grid_probs = grid_probs.reshape((-1,) + tuple(n_grid))
        if s == 1:
            return grid_probs  # a crop at every voxel: the grid is the chunk, nothing to fill (nor to copy)
        # Nearest-neighbour fill from the computed grid to every voxel of the chunk, smallest axis first.
        near_i = torch.from_numpy(grids[0][1][i0:i1] - g_lo)
        near_x, near_s = (torch.from_numpy(grids[a][1]) for a in (1, 2))
        return grid_probs[:, near_i][:, :, near_x][:, :, :, near_s]


def entropy(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """Shannon entropy (nats) of probabilities along `dim`."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=dim)


def disagreement(probs: torch.Tensor, views_entropy: torch.Tensor) -> np.ndarray:
    """How much the views of a voxel disagree, 0..1: the entropy of the blended class probabilities [n_classes,
    ...] minus the mean entropy of the views that were blended (the mutual information between the class and the
    view, the BALD measure of active learning), divided by log(n_classes). 0 where every view gives the same
    probabilities, however unsure; 1 where each view is certain of another class, classes shared evenly."""
    mutual = entropy(probs, dim=0).sub_(views_entropy)
    return mutual.div_(float(np.log(probs.shape[0]))).clamp_(0.0, 1.0).numpy()


def _finish(probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint8 argmax, the first class on a tie) and confidence (top-1 minus top-2 probability) of
    [n_classes, ...] probabilities.

    A running top-2 over the classes, in place (three element-wise passes per class): half the time of
    torch.topk along the class axis, which sorts a short strided axis for every voxel.
    """
    top1 = probs[0].clone()
    top2 = torch.full_like(top1, -torch.inf)
    labels = torch.zeros(top1.shape, dtype=torch.uint8)
    lower, above = torch.empty_like(top1), torch.empty(top1.shape, dtype=torch.bool)  # reused by every class
    for c in range(1, probs.shape[0]):
        p = probs[c]
        labels.masked_fill_(torch.gt(p, top1, out=above), c)
        torch.maximum(top2, torch.minimum(top1, p, out=lower), out=top2)
        torch.maximum(top1, p, out=top1)
    return labels.numpy(), top1.sub_(top2).numpy()


def _engine(model: torch.nn.Module, volumes: list[np.ndarray], device: str | torch.device, kind: str,
            normalisation, tile, overlap, orientation: str, crop, stride: int, context: int = 0,
            precision: str = "float32") -> _Engine:
    dev = resolve_device(device)
    spec = make_spec(kind, len(volumes), normalisation, tile, overlap, orientation, crop, stride, context,
                     resolve_precision(precision, dev))
    if spec.orientation == "split" and not isinstance(model, Ensemble):
        raise PredictError(f"orientation {SPLIT_NEEDS_MEMBERS}")
    model, layout = prepared(model, dev, len(spec.tile if spec.kind == "fcn" else spec.crop))
    return _Engine(model, spec, VolumeReader(volumes, spec.normalisation, spec.context), dev, memory_format=layout)


def prepared(model: torch.nn.Module, device: torch.device, rank: int) -> tuple[torch.nn.Module,
                                                                              torch.memory_format | None]:
    """The model as prediction runs it, and its input layout: an inference copy (batch norms folded, models/
    inference.py) on the device, channels-last where it has convolutions. The caller's model is left as it is;
    a model already prepared comes back as it is, so a stream prepares its model once."""
    ready = inference_copy(model).to(device)
    layout = fast_layout(ready, rank)
    if layout is not None:
        ready.to(memory_format=layout)
    return ready, layout


def fast_layout(model: torch.nn.Module, rank: int) -> torch.memory_format | None:
    """Channels-last layout for convolutional models: oneDNN (CPU) and cuDNN run convolutions several times
    faster in it (4x for the default unet on a 2-core CPU). None for models without convolutions."""
    if not any(isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) for m in model.modules()):
        return None
    return torch.channels_last if rank == 2 else torch.channels_last_3d
