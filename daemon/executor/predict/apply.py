"""Whole-volume and in-memory apply of a trained model: tiles for FCNs, crops for patch models.

Both paths run chunk by chunk along the inline axis. For each chunk [i0, i1) the engine evaluates every tile
(or crop grid point) that touches it, blends the softmax probabilities into the chunk's accumulators, and
hands normalised probabilities, labels (argmax, uint8) and confidence (top-1 minus top-2) to a sink. The
whole-volume sink writes them into .npy memmaps under out_dir and only then records the chunk as done in
progress.json (atomic), so an interrupted job resumes at the next chunk; the in-memory sink (apply_block, used
for streaming) fills arrays. A chunk's numbers depend only on the chunk, the settings and the batch size, so a
resumed run and apply_block give the same output as one uninterrupted run.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import psutil
import torch

from daemon.executor.predict.outputs import ProgressRecord, done_chunks, model_fingerprint
from daemon.executor.predict.tiling import TilePlan, TilingError, VolumeReader, nearest_grid
from daemon.kinds.predict import OUTPUT_NAMES

ProgressCallback = Callable[[float, float | None, str], None]
StopCallback = Callable[[], bool]

# Rough float32 feature-map values a U-Net keeps per input voxel during a forward pass; sizes "auto" batches.
ACTIVATION_FLOATS_PER_VOXEL = 96
BATCH_CAPS = {("fcn", "cpu"): 8, ("fcn", "cuda"): 64, ("patch", "cpu"): 256, ("patch", "cuda"): 2048}
CHUNK_BYTES_MAX = 1 << 30
CPU_BATCH_VOXELS = 1 << 20


class PredictError(ValueError):
    """Bad settings, input or model for a prediction; the message names the problem and the fix."""


class _Stopped(Exception):
    """Raised inside the chunk loop when should_stop() says so; the current chunk is discarded."""


@dataclass(frozen=True)
class ApplySpec:
    """Validated apply settings shared by predict_volume and apply_block."""

    kind: str
    normalisation: tuple[tuple[float, float], ...]
    tile: tuple[int, ...] | None = None
    overlap: tuple[int, ...] | None = None
    orientation: str = "inline"
    crop: tuple[int, ...] | None = None
    stride: int = 1

    def settings(self) -> dict:
        """JSON-able form, part of the resume key."""
        return {"kind": self.kind, "normalisation": [list(p) for p in self.normalisation],
                "tile": self.tile, "overlap": self.overlap, "orientation": self.orientation,
                "crop": self.crop, "stride": self.stride}


def make_spec(kind: str, n_channels: int, normalisation, tile, overlap, orientation: str, crop,
              stride: int) -> ApplySpec:
    """Check the apply options together and return an ApplySpec, or raise PredictError naming each problem."""
    if kind not in ("fcn", "patch"):
        raise PredictError(f"kind must be 'fcn' (tiled, fully convolutional) or 'patch' (one crop per voxel), "
                           f"got {kind!r}")
    norm = _normalisation(normalisation, n_channels)
    if orientation not in ("inline", "crossline", "both"):
        raise PredictError(f"orientation must be 'inline', 'crossline' or 'both', got {orientation!r}")
    if kind == "fcn":
        if tile is None:
            raise PredictError("kind 'fcn' needs tile=(lateral, samples) for a 2D model or (il, xl, samples) for 3D")
        tile_t = tuple(int(t) for t in tile)
        ov = tuple(t // 4 for t in tile_t) if overlap is None else (
            (int(overlap),) * len(tile_t) if isinstance(overlap, int) else tuple(int(o) for o in overlap))
        return ApplySpec("fcn", norm, tile=tile_t, overlap=ov, orientation=orientation)
    if crop is None or len(crop) not in (2, 3) or min(crop) < 1:
        raise PredictError(f"kind 'patch' needs crop=(h, w) for a 2D model or (d, h, w) for 3D, got {crop!r}")
    if int(stride) < 1:
        raise PredictError(f"stride must be >= 1 (1 = every voxel; n = every n-th voxel, filled), got {stride}")
    return ApplySpec("patch", norm, crop=tuple(int(c) for c in crop), orientation=orientation,
                     stride=int(stride))


def _normalisation(normalisation, n_channels: int) -> tuple[tuple[float, float], ...]:
    if normalisation is None:
        return ((0.0, 1.0),) * n_channels
    pairs = [normalisation] if len(normalisation) == 2 and np.isscalar(normalisation[0]) else list(normalisation)
    if len(pairs) != n_channels:
        raise PredictError(f"normalisation needs one (mean, std) per input volume: {n_channels} volumes, "
                           f"{len(pairs)} pairs")
    out = tuple((float(m), float(s)) for m, s in pairs)
    if any(not s > 0 for _, s in out):
        raise PredictError(f"every std in normalisation must be > 0, got {out}")
    return out


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' means the job's GPU when there is one, the CPU otherwise."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"device {device!r} asked for but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def auto_batch_size(kind: str, device: torch.device, item_voxels: int, n_channels: int) -> int:
    """Items per batch that fit a quarter of the device's free memory, capped (bigger helps little on CPU)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = psutil.virtual_memory().available
    per_item = item_voxels * 4 * (n_channels + ACTIVATION_FLOATS_PER_VOXEL)
    cap = BATCH_CAPS[(kind, "cuda" if device.type == "cuda" else "cpu")]
    if device.type == "cpu" and kind == "fcn":
        # On a CPU a batch beyond ~1 M voxels only adds memory traffic: large tiles come one or two at a time.
        cap = min(cap, max(1, CPU_BATCH_VOXELS // item_voxels))
    return int(max(1, min(cap, free // 4 // per_item)))


def _auto_chunk(shape: Sequence[int], n_classes: int, n_channels: int, min_inlines: int) -> int:
    """Inlines per chunk: accumulators within min(1 GiB, 10 % of free RAM), but at least one tile deep."""
    per_inline = shape[1] * shape[2] * 4 * (2 * n_classes + n_channels + 2)
    budget = min(CHUNK_BYTES_MAX, psutil.virtual_memory().available // 10)
    return int(max(1, min(shape[0], max(min_inlines, budget // per_inline))))


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

    def forward(self, batch: np.ndarray | torch.Tensor, c_order: bool = True) -> torch.Tensor:
        """Softmax probabilities of a batch, on the CPU, float32; in C order unless ``c_order`` is False (then
        in the model's layout, e.g. channels-last, saving a copy for a caller that only copies them out)."""
        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        if self.memory_format is not None and x.dim() in (4, 5):
            x = x.contiguous(memory_format=self.memory_format)
        logits = self.model(x)
        expected = (x.shape[0], None) + (tuple(x.shape[2:]) if self.spec.kind == "fcn" else ())
        if logits.dim() != len(expected) or logits.shape[0] != x.shape[0] or tuple(logits.shape[2:]) != expected[2:]:
            raise PredictError(
                f"a {self.spec.kind} model must return logits {'[B, n_classes, *input spatial]' if self.spec.kind == 'fcn' else '[B, n_classes]'}"
                f" for input {tuple(x.shape)}, got {tuple(logits.shape)}; check kind ('fcn' or 'patch') and tile/crop")
        if logits.shape[1] < 2:
            raise PredictError(f"the model returns {logits.shape[1]} class channel; apply needs >= 2 classes "
                               "(softmax), e.g. background and target")
        if self.n_classes is not None and logits.shape[1] != self.n_classes:
            raise PredictError(f"the model returns {logits.shape[1]} class channels; its file names "
                               f"{self.n_classes} classes")
        probs = torch.softmax(logits.float(), dim=1)
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
            return int(self.forward(first[None]).shape[1])

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
        n_batches = -(-len(tiles) // self.batch_size)
        for b in range(n_batches):
            batch = tiles[b * self.batch_size:(b + 1) * self.batch_size]
            inputs = np.stack([self.reader.tile_input(t, self.plan.input_shape) for t in batch])
            probs = self.forward(inputs, c_order=blend)  # copied straight into place when nothing blends
            if acc is None:
                acc = (torch.zeros if blend else torch.empty)((probs.shape[1], i1 - i0, nx, ns), dtype=torch.float32)
            for tile, p in zip(batch, probs):
                self._accumulate(acc, wsum, tile, p, i0, i1)
            self.on_batch((b + 1) / n_batches)
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
        orientations = ("inline", "crossline") if self.spec.orientation == "both" else (self.spec.orientation,)
        if len(self.spec.crop) == 3:
            orientations = ("3d",)
        total = None
        for k, orientation in enumerate(orientations):
            probs = self._patch_orientation(i0, i1, orientation, k, len(orientations))
            total = probs if total is None else total + probs
        return total / len(orientations)

    def _patch_orientation(self, i0: int, i1: int, orientation: str, part: int, n_parts: int) -> torch.Tensor:
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
            probs = self.forward(crops)
            if grid_probs is None:
                grid_probs = torch.empty((probs.shape[1], count), dtype=torch.float32)
            grid_probs[:, idx] = probs.T
            self.on_batch((part + (b + 1) / n_batches) / n_parts)
        grid_probs = grid_probs.reshape((-1,) + tuple(n_grid))
        # Nearest-neighbour fill from the computed grid to every voxel of the chunk.
        near_i = torch.from_numpy(grids[0][1][i0:i1] - g_lo)
        near_x, near_s = (torch.from_numpy(grids[a][1]) for a in (1, 2))
        return grid_probs[:, near_i][:, :, near_x][:, :, :, near_s]


def _finish(probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Labels (uint8 argmax, the first class on a tie) and confidence (top-1 minus top-2 probability) of
    [n_classes, ...] probabilities.

    A running top-2 over the classes, in place (three element-wise passes per class): half the time of
    torch.topk along the class axis, which sorts a short strided axis for every voxel.
    """
    top1 = probs[0].clone()
    top2 = torch.full_like(top1, -torch.inf)
    labels = torch.zeros(top1.shape, dtype=torch.uint8)
    for c in range(1, probs.shape[0]):
        p = probs[c]
        labels.masked_fill_(p > top1, c)
        torch.maximum(top2, torch.minimum(top1, p), out=top2)
        torch.maximum(top1, p, out=top1)
    return labels.numpy(), top1.sub_(top2).numpy()


class _ProgressClock:
    """Turns chunk and batch progress into throttled progress(fraction, eta_s, message) calls."""

    def __init__(self, callback: ProgressCallback | None, n_inlines: int, first_inline: int) -> None:
        self.callback, self.n, self.first = callback, n_inlines, first_inline
        self.t0 = time.monotonic()
        self.last = 0.0

    def report(self, inlines_done: float, message: str, force: bool = False) -> None:
        """Report progress; the ETA extrapolates this run's own rate (resumed work is not counted)."""
        now = time.monotonic()
        if self.callback is None or (not force and now - self.last < 0.5):
            return
        self.last = now
        fraction = inlines_done / self.n
        ran = inlines_done - self.first
        eta = (now - self.t0) * (self.n - inlines_done) / ran if ran > 0 else None
        self.callback(fraction, eta, message)


def _as_volumes(volume) -> list[np.ndarray]:
    volumes = [volume] if isinstance(volume, np.ndarray) and volume.ndim == 3 else list(volume)
    if not volumes or any(getattr(v, "ndim", 0) != 3 for v in volumes):
        raise PredictError("volume must be one [ni, nx, ns] array (e.g. a survey memmap) or a list of them "
                           "(one per input channel)")
    if len({tuple(v.shape) for v in volumes}) != 1:
        raise PredictError(f"input volumes differ in shape: {[tuple(v.shape) for v in volumes]}; "
                           "channels must share the survey grid")
    return volumes


def _check_outputs(outputs: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(o for o in OUTPUT_NAMES if o in set(outputs))
    unknown = set(outputs) - set(OUTPUT_NAMES)
    if unknown or not chosen:
        raise PredictError(f"outputs must be a non-empty subset of {OUTPUT_NAMES}, got {sorted(outputs)}")
    return chosen


def _engine(model: torch.nn.Module, volumes: list[np.ndarray], device: str | torch.device, kind: str,
            normalisation, tile, overlap, orientation: str, crop, stride: int) -> _Engine:
    spec = make_spec(kind, len(volumes), normalisation, tile, overlap, orientation, crop, stride)
    dev = resolve_device(device)
    model.to(dev).eval()
    layout = fast_layout(model, len(spec.tile if spec.kind == "fcn" else spec.crop))
    if layout is not None:
        model.to(memory_format=layout)
    return _Engine(model, spec, VolumeReader(volumes, spec.normalisation), dev, memory_format=layout)


def fast_layout(model: torch.nn.Module, rank: int) -> torch.memory_format | None:
    """Channels-last layout for convolutional models: oneDNN (CPU) and cuDNN run convolutions several times
    faster in it (4x for the default unet on a 2-core CPU). None for models without convolutions."""
    if not any(isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) for m in model.modules()):
        return None
    return torch.channels_last if rank == 2 else torch.channels_last_3d


def _layout_mark(model: torch.nn.Module) -> tuple | None:
    """Strides of the first convolution's weight: tells whether apply changed the caller's model layout."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)):
            return tuple(m.weight.stride())
    return None


def _sizes(engine: _Engine, n_classes: int, batch_size: int | str, chunk_inlines: int | None) -> tuple[int, int]:
    if batch_size == "auto":
        batch = auto_batch_size(engine.spec.kind, engine.device, engine.item_voxels, engine.reader.n_channels)
    elif isinstance(batch_size, int) and batch_size >= 1:
        batch = batch_size
    else:
        raise PredictError(f"batch_size must be 'auto' or an integer >= 1, got {batch_size!r}")
    if chunk_inlines is None:
        # Tiles deep along the inline axis are re-run for every chunk they touch: keep chunks a few tiles deep.
        spec = engine.spec
        deep = spec.kind == "fcn" and (len(spec.tile) == 3 or spec.orientation != "inline")
        depth = spec.tile[0] if deep else 1
        chunk_inlines = _auto_chunk(engine.reader.shape, n_classes, engine.reader.n_channels, 2 * depth)
    if int(chunk_inlines) < 1:
        raise PredictError(f"chunk_inlines must be >= 1, got {chunk_inlines}")
    return batch, int(chunk_inlines)


def _open_outputs(out_dir: Path, outputs: tuple[str, ...], shape: tuple[int, ...], n_classes: int,
                  fresh: bool) -> dict[str, np.memmap]:
    """The output memmaps: labels uint8 [ni,nx,ns], probabilities float32 [n_classes,ni,nx,ns], confidence."""
    layout = {"labels": (np.uint8, shape), "probabilities": (np.float32, (n_classes,) + shape),
              "confidence": (np.float32, shape)}
    arrays = {}
    for name in outputs:
        dtype, full = layout[name]
        arrays[name] = np.lib.format.open_memmap(out_dir / f"{name}.npy", mode="w+" if fresh else "r+",
                                                 dtype=dtype, shape=full)
    return arrays


def _write_chunk(arrays: dict, probs: torch.Tensor, i0: int, i1: int) -> None:
    labels, confidence = _finish(probs)
    if "probabilities" in arrays:
        arrays["probabilities"][:, i0:i1] = probs.numpy()
    if "labels" in arrays:
        arrays["labels"][i0:i1] = labels
    if "confidence" in arrays:
        arrays["confidence"][i0:i1] = confidence


def predict_volume(model: torch.nn.Module, volume, *, out_dir: str | Path, kind: str = "fcn",
                   normalisation=None, outputs: Sequence[str] = OUTPUT_NAMES, tile: Sequence[int] | None = None,
                   overlap: int | Sequence[int] | None = None, orientation: str = "inline",
                   crop: Sequence[int] | None = None, stride: int = 1, batch_size: int | str = "auto",
                   device: str | torch.device = "auto", chunk_inlines: int | None = None,
                   progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
                   resume: bool = True, chunks: Sequence[int] | None = None, n_classes: int | None = None) -> dict:
    """Apply a model to a whole volume and write the chosen outputs as .npy memmaps under out_dir.

    volume: one [ni, nx, ns] array (a survey memmap) or a list of them as input channels; normalisation:
    (mean, std) or one pair per channel. kind "fcn" tiles with `tile` (2 or 3 sizes) and `overlap` (default a
    quarter of the tile); kind "patch" evaluates a `crop` centred on every stride-th voxel per axis and fills
    between by nearest neighbour. The model is moved to `device` ('auto': CUDA when available) and set to eval.
    With resume=True an earlier interrupted run in out_dir with the same settings and weights continues from its
    last finished chunk. Returns status ('complete' or 'stopped'), paths, n_classes, shape, timing figures.

    chunks: only these chunk indices (one shard of a sharded job, daemon.executor.predict.sharding); several processes may
    run disjoint chunk lists into the same out_dir at once. A shard needs the outputs and the progress record to
    exist: make them first with chunks=[] (which plans and runs nothing; the result's `done` lists finished chunks).
    n_classes, when known (the model file says it), saves the probing forward pass.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    volumes = _as_volumes(volume)
    chosen = _check_outputs(outputs)
    engine = _engine(model, volumes, device, kind, normalisation, tile, overlap, orientation, crop, stride)
    n_classes = engine.probe_classes(n_classes)
    shape = engine.reader.shape
    key = {"shape": list(shape), "n_classes": n_classes, "outputs": list(chosen),
           "spec": engine.spec.settings(), "model": model_fingerprint(model)}
    key = json.loads(json.dumps(key))  # the form it has when read back from progress.json (lists, not tuples)
    record = ProgressRecord(out_dir / "progress.json")
    state = record.load() if resume else None
    if state is not None and not all((out_dir / f"{o}.npy").exists() for o in chosen):
        state = None  # outputs were removed: nothing to resume from
    if state is not None and state["key"] != key:
        raise PredictError(f"{out_dir} holds a partial prediction made with other settings or weights; "
                           "choose another out_dir, or pass resume=False to start it over")
    if state is None:
        if chunks:
            raise PredictError(f"{out_dir} has no progress record: a shard's outputs must be made first "
                               "(predict_volume with chunks=[])")
        batch, chunk = _sizes(engine, n_classes, batch_size, chunk_inlines)
        state = {"key": key, "batch_size": batch, "chunk_inlines": chunk, "chunks_done": 0, "done": []}
        arrays = _open_outputs(out_dir, chosen, shape, n_classes, fresh=True)
        record.save(state)
    else:
        arrays = _open_outputs(out_dir, chosen, shape, n_classes, fresh=False)
    engine.batch_size, chunk = state["batch_size"], state["chunk_inlines"]
    bounds = [(i, min(i + chunk, shape[0])) for i in range(0, shape[0], chunk)]
    scope = list(range(len(bounds))) if chunks is None else [int(k) for k in chunks]
    if any(not 0 <= k < len(bounds) for k in scope):
        raise PredictError(f"chunks {scope} outside 0..{len(bounds) - 1}")
    done_before = set(done_chunks(state))
    todo = [k for k in scope if k not in done_before]
    inlines = lambda ks: sum(bounds[k][1] - bounds[k][0] for k in ks)  # noqa: E731
    base = inlines([k for k in scope if k in done_before])
    clock = _ProgressClock(progress, max(inlines(scope), 1), base)
    t0 = time.monotonic()
    status, ran = "complete", []
    try:
        for k in todo:
            i0, i1 = bounds[k]
            engine.on_batch = _batch_hook(clock, should_stop, base, i1 - i0, k, len(bounds))
            _write_chunk(arrays, engine.chunk(i0, i1), i0, i1)
            for a in arrays.values():
                a.flush()
            # Recorded only after the chunk's outputs are on disk: a crash before this line redoes the chunk.
            state = record.mark_done(k)
            ran.append(k)
            base += i1 - i0
            clock.report(base, f"chunk {k + 1}/{len(bounds)} written (inlines {i0}-{i1 - 1})", force=True)
    except _Stopped:
        status = "stopped"
    seconds = time.monotonic() - t0
    done_voxels = inlines(ran) * shape[1] * shape[2]
    return {"status": status, "out_dir": str(out_dir), "paths": {o: str(out_dir / f"{o}.npy") for o in chosen},
            "shape": list(shape), "n_classes": n_classes, "chunks_done": len(done_chunks(state)),
            "done": done_chunks(state), "n_chunks": len(bounds), "resumed_from_chunk": len(done_before),
            "batch_size": engine.batch_size, "chunk_inlines": chunk, "device": str(engine.device),
            "seconds": seconds, "voxels_per_s": done_voxels / seconds if seconds > 0 else None}


def _batch_hook(clock: _ProgressClock, should_stop: StopCallback | None, base: int, depth: int, k: int,
                n_chunks: int) -> Callable[[float], None]:
    def hook(fraction: float) -> None:
        if should_stop is not None and should_stop():
            raise _Stopped()
        clock.report(base + fraction * depth, f"chunk {k + 1}/{n_chunks}: {fraction:.0%}")
    return hook


def apply_block(model: torch.nn.Module, block, *, kind: str = "fcn", normalisation=None,
                outputs: Sequence[str] = OUTPUT_NAMES, tile: Sequence[int] | None = None,
                overlap: int | Sequence[int] | None = None, orientation: str = "inline",
                crop: Sequence[int] | None = None, stride: int = 1, batch_size: int | str = "auto",
                device: str | torch.device = "auto", chunk_inlines: int | None = None,
                n_classes: int | None = None) -> dict[str, np.ndarray]:
    """Apply a model to an in-memory block [ni, nx, ns] (or a list of them as channels) and return arrays.

    Same options and same code path as predict_volume, so on the same data the numbers are the same;
    for streaming predict, where the model stays warm in the executor. Returns the chosen outputs by name.
    n_classes, when known (the model file says it), saves the probing forward pass.
    """
    volumes = _as_volumes(block)
    chosen = _check_outputs(outputs)
    mark = _layout_mark(model)
    engine = _engine(model, volumes, device, kind, normalisation, tile, overlap, orientation, crop, stride)
    n_classes = engine.probe_classes(n_classes)
    engine.batch_size, chunk = _sizes(engine, n_classes, batch_size, chunk_inlines)
    shape = engine.reader.shape
    arrays = {"labels": np.empty(shape, np.uint8), "probabilities": np.empty((n_classes,) + shape, np.float32),
              "confidence": np.empty(shape, np.float32)}
    arrays = {name: arrays[name] for name in chosen}
    for i0 in range(0, shape[0], chunk):
        i1 = min(i0 + chunk, shape[0])
        _write_chunk(arrays, engine.chunk(i0, i1), i0, i1)
    if _layout_mark(model) != mark:
        # A caller's model (e.g. one being trained, previewed between epochs) gets its own layout back.
        model.to(memory_format=torch.contiguous_format)
    return arrays
