"""Whole-volume and in-memory apply of a trained model: tiles for FCNs, crops for patch models.

Both paths run chunk by chunk along the inline axis. For each chunk [i0, i1) the engine evaluates every tile
(or crop grid point) that touches it, blends the softmax probabilities into the chunk's accumulators, and
hands normalised probabilities, labels (argmax, uint8), confidence (top-1 minus top-2) and, when asked,
disagreement (between the views blended: ensemble members, orientations, overlapping tiles) to a sink. The
whole-volume sink writes them into .npy memmaps under out_dir and only then records the chunk as done in
progress.json (atomic), so an interrupted job resumes at the next chunk; the in-memory sink (apply_block, used
for streaming) fills arrays. A chunk's numbers depend only on the chunk, the settings and the batch size, so a
resumed run and apply_block give the same output as one uninterrupted run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from daemon.executor.predict import smoothing
from daemon.executor.predict.outputs import ProgressRecord, done_chunks, model_fingerprint
from daemon.executor.predict.engine import (_Engine, _engine, _finish, disagreement,  # noqa: F401
                                            prepared)
from daemon.executor.predict.spec import (ApplySpec, PredictError, auto_batch_size, make_spec,  # noqa: F401
                                          resolve_device, _auto_chunk)
from daemon.kinds.predict import OUTPUT_NAMES, PLAIN_OUTPUTS

FINISH_VOXELS = 1 << 22  # voxels turned into labels and confidence at a time (a few F3 inlines)

ProgressCallback = Callable[[float, float | None, str], None]
StopCallback = Callable[[], bool]

class _Stopped(Exception):
    """Raised inside the chunk loop when should_stop() says so; the current chunk is discarded."""


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
        chunk_inlines = _auto_chunk(engine.reader.shape, n_classes + int(engine.views_entropy),
                                    engine.reader.n_channels, 2 * depth)
    if int(chunk_inlines) < 1:
        raise PredictError(f"chunk_inlines must be >= 1, got {chunk_inlines}")
    return batch, int(chunk_inlines)


def _layout(shape: tuple[int, ...], n_classes: int) -> dict[str, tuple[type, tuple[int, ...]]]:
    """dtype and shape of each output: labels uint8 [ni,nx,ns], probabilities float32 [n_classes,ni,nx,ns],
    confidence and disagreement float32 [ni,nx,ns]."""
    return {"labels": (np.uint8, shape), "probabilities": (np.float32, (n_classes,) + shape),
            "confidence": (np.float32, shape), "disagreement": (np.float32, shape)}


def _open_outputs(out_dir: Path, outputs: tuple[str, ...], shape: tuple[int, ...], n_classes: int,
                  fresh: bool) -> dict[str, np.memmap]:
    """The output memmaps (_layout)."""
    layout = _layout(shape, n_classes)
    arrays = {}
    for name in outputs:
        dtype, full = layout[name]
        arrays[name] = np.lib.format.open_memmap(out_dir / f"{name}.npy", mode="w+" if fresh else "r+",
                                                 dtype=dtype, shape=full)
    return arrays


def _write_chunk(arrays: dict, probs: torch.Tensor, i0: int, i1: int) -> None:
    # With a disagreement output the engine's last channel is the views' mean entropy (engine.views_entropy).
    views_entropy = probs[-1] if "disagreement" in arrays else None
    probs = probs[:-1] if views_entropy is not None else probs
    if "probabilities" in arrays:
        arrays["probabilities"][:, i0:i1] = probs.numpy()
    # Labels and confidence a few inlines at a time: _finish's working arrays (four of one class's size) then stay
    # small however large the chunk (they were as large as the chunk's accumulator).
    step = max(1, FINISH_VOXELS // max(1, probs.shape[2] * probs.shape[3]))
    finish = "labels" in arrays or "confidence" in arrays  # not made here when smoothing makes them later
    for j in range(0, i1 - i0, step):
        k = min(j + step, i1 - i0)
        if finish:
            labels, confidence = _finish(probs[:, j:k])
            if "labels" in arrays:
                arrays["labels"][i0 + j:i0 + k] = labels
            if "confidence" in arrays:
                arrays["confidence"][i0 + j:i0 + k] = confidence
        if views_entropy is not None:
            arrays["disagreement"][i0 + j:i0 + k] = disagreement(probs[:, j:k], views_entropy[j:k])


def predict_volume(model: torch.nn.Module, volume, *, out_dir: str | Path, kind: str = "fcn",
                   normalisation=None, outputs: Sequence[str] = PLAIN_OUTPUTS, tile: Sequence[int] | None = None,
                   overlap: int | Sequence[int] | None = None, orientation: str = "inline",
                   crop: Sequence[int] | None = None, stride: int = 1, batch_size: int | str = "auto",
                   device: str | torch.device = "auto", chunk_inlines: int | None = None,
                   progress: ProgressCallback | None = None, should_stop: StopCallback | None = None,
                   resume: bool = True, chunks: Sequence[int] | None = None, n_classes: int | None = None,
                   context: int = 0, smooth: Sequence[float] | None = None, precision: str = "float32") -> dict:
    """Apply a model to a whole volume and write the chosen outputs as .npy memmaps under out_dir.

    volume: one [ni, nx, ns] array (a survey memmap) or a list of them as input channels; normalisation:
    (mean, std) or one pair per channel. kind "fcn" tiles with `tile` (2 or 3 sizes) and `overlap` (default a
    quarter of the tile); kind "patch" evaluates a `crop` centred on every stride-th voxel per axis and fills
    between by nearest neighbour. The model runs on `device` ('auto': CUDA when available) as an eval-mode copy
    made for prediction (engine.prepared); the caller's model is not changed.
    With resume=True an earlier interrupted run in out_dir with the same settings and weights continues from its
    last finished chunk. Returns status ('complete' or 'stopped'), paths, n_classes, shape, timing figures.

    chunks: only these chunk indices (one shard of a sharded job, daemon.executor.predict.sharding); several
    processes may run disjoint chunk lists into the same out_dir at once. A shard needs the outputs and the
    progress record to exist: make them first with chunks=[] (which plans and runs nothing; the result's `done`
    lists finished chunks).
    n_classes, when known (the model file says it), saves the probing forward pass. context: a 2D fcn model's
    neighbouring sections on each side as extra channels (a train job's data.context; tiling.VolumeReader).
    smooth: Gaussian sigmas (inlines, crosslines, samples) over the probabilities before labels and confidence are
    made (daemon/executor/predict/smoothing.py): the chunks then write the raw probabilities only (and
    disagreement), and the smoothing pass, run once every chunk is done (not in a shard's call), makes the rest.
    precision: the forward pass's number format, 'float32', 'bfloat16' or 'auto' (bfloat16 where the device
    computes it natively: spec.resolve_precision); float32 here, exact for callers that compare numbers, while jobs
    and streams pass their recipe's ('auto' unless the job says otherwise). The result's `precision` says which ran.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    volumes = _as_volumes(volume)
    wanted = _check_outputs(outputs)
    smooth = smoothing.check_sigma(smooth)
    chosen = _chunk_outputs(wanted, smooth)
    engine = _engine(model, volumes, device, kind, normalisation, tile, overlap, orientation, crop, stride, context,
                     precision)
    engine.views_entropy = "disagreement" in chosen
    n_classes = engine.probe_classes(n_classes)
    shape = engine.reader.shape
    key = {"shape": list(shape), "n_classes": n_classes, "outputs": list(chosen),
           "spec": engine.spec.settings(), "model": model_fingerprint(model)} | ({"smooth": smooth} if smooth else {})
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
    paths = {o: str(out_dir / f"{o}.npy") for o in wanted}
    if smooth and chunks is None and status == "complete":
        paths = smoothed_outputs(out_dir, smooth, paths, progress)
    seconds = time.monotonic() - t0
    done_voxels = inlines(ran) * shape[1] * shape[2]
    return {"status": status, "out_dir": str(out_dir), "paths": paths, "shape": list(shape), "n_classes": n_classes,
            "chunks_done": len(done_chunks(state)),
            "done": done_chunks(state), "n_chunks": len(bounds), "resumed_from_chunk": len(done_before),
            "batch_size": engine.batch_size, "chunk_inlines": chunk, "device": str(engine.device),
            "precision": engine.spec.precision,
            "seconds": seconds, "voxels_per_s": done_voxels / seconds if seconds > 0 else None}


def smoothed_outputs(out_dir: Path, smooth: Sequence[float], paths: dict[str, str],
                     progress: ProgressCallback | None = None) -> dict[str, str]:
    """The smoothing pass over a finished prediction in out_dir (smoothing.smooth_volume); returns `paths` with
    the probabilities' pointing at the smoothed ones."""
    say = (lambda message: progress(1.0, None, message)) if progress is not None else None
    kept = smoothing.smooth_volume(Path(out_dir), smooth, set(paths), _finish, say)
    return paths | ({"probabilities": str(kept)} if kept is not None else {})


def _chunk_outputs(wanted: tuple[str, ...], smooth: tuple[float, float, float] | None) -> tuple[str, ...]:
    """What the chunks write: the outputs asked for, or with smoothing the raw probabilities in place of labels
    and confidence (made from the smoothed ones afterwards)."""
    return _check_outputs((set(wanted) - {"labels", "confidence"}) | {"probabilities"}) if smooth else wanted


def _batch_hook(clock: _ProgressClock, should_stop: StopCallback | None, base: int, depth: int, k: int,
                n_chunks: int) -> Callable[[float], None]:
    def hook(fraction: float) -> None:
        if should_stop is not None and should_stop():
            raise _Stopped()
        clock.report(base + fraction * depth, f"chunk {k + 1}/{n_chunks}: {fraction:.0%}")
    return hook


def apply_block(model: torch.nn.Module, block, *, kind: str = "fcn", normalisation=None,
                outputs: Sequence[str] = PLAIN_OUTPUTS, tile: Sequence[int] | None = None,
                overlap: int | Sequence[int] | None = None, orientation: str = "inline",
                crop: Sequence[int] | None = None, stride: int = 1, batch_size: int | str = "auto",
                device: str | torch.device = "auto", chunk_inlines: int | None = None,
                n_classes: int | None = None, context: int = 0,
                smooth: Sequence[float] | None = None, precision: str = "float32") -> dict[str, np.ndarray]:
    """Apply a model to an in-memory block [ni, nx, ns] (or a list of them as channels) and return arrays.

    Same options and same code path as predict_volume, so on the same data the numbers are the same;
    for streaming predict, where the model stays warm in the executor. Returns the chosen outputs by name.
    n_classes, when known (the model file says it), saves the probing forward pass. With ``context`` the block's
    own first and last sections are mirrored past its edges: send the sections around the ones wanted. With
    ``smooth`` the probabilities are smoothed within the block (its edges repeated past it).
    """
    volumes = _as_volumes(block)
    wanted = _check_outputs(outputs)
    smooth = smoothing.check_sigma(smooth)
    chosen = _chunk_outputs(wanted, smooth)
    engine = _engine(model, volumes, device, kind, normalisation, tile, overlap, orientation, crop, stride, context,
                     precision)
    engine.views_entropy = "disagreement" in chosen
    n_classes = engine.probe_classes(n_classes)
    engine.batch_size, chunk = _sizes(engine, n_classes, batch_size, chunk_inlines)
    shape = engine.reader.shape
    layout = _layout(shape, n_classes)
    arrays = {name: np.empty(layout[name][1], layout[name][0]) for name in chosen}
    for i0 in range(0, shape[0], chunk):
        i1 = min(i0 + chunk, shape[0])
        _write_chunk(arrays, engine.chunk(i0, i1), i0, i1)
    if smooth:
        probs = smoothing.smooth_block(torch.from_numpy(arrays["probabilities"]), smooth)
        arrays["labels"], arrays["confidence"] = _finish(probs) if {"labels", "confidence"} & set(wanted) else (
            None, None)
        arrays["probabilities"] = probs.numpy()
        arrays = {name: arrays[name] for name in wanted}
    return arrays
