"""Lateral smoothing of the class probabilities before the argmax: a model file's `smooth` (sigmas in inlines,
crosslines and samples; the train job's apply.smooth, a predict job's smooth).

Why: a 2D model labels each section on its own, and far from the picks its probabilities flicker from trace to
trace and from section to section where a facies body is continuous over tens of traces. A separable Gaussian
over the probabilities votes across neighbouring traces and sections. Measured with the default facies job's
models (docs/training.md, "Smoothing the probabilities"): sigmas [16, 16, 1] raised whole-cube pixel accuracy on the
three surveys they were chosen on (+0.04 to +0.07) but only by 0.012 in the mean of eight others, where mean class
accuracy fell by 0.016 (thin and small classes lose votes): an option, not the default. The volume's edges are
padded by repeating the edge section, trace or sample.

Whole volumes (predict_volume, sharded or not): once every chunk's raw probabilities are on disk
(probabilities.npy, always computed when smoothing), one pass over slabs of inlines, each read with the sigma's
halo of neighbours, writes the smoothed probabilities (probabilities_smoothed.npy, when they are asked for) and
labels and confidence from them (in place). smoothed.json, written last, marks the pass done; an interrupted
pass runs again from the raw probabilities, so the result is the same. A slab's numbers do not depend on the slab
size. Blocks in memory (apply_block: streams, previews) are smoothed within the block.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from daemon.executor.predict.spec import PredictError

SLAB_BYTES = 1 << 28  # float32 bytes of one slab's probabilities and halo, times a few working copies
DONE_FILE = "smoothed.json"
SMOOTHED_PROBABILITIES = "probabilities_smoothed.npy"


def check_sigma(sigma: Sequence[float] | None) -> tuple[float, float, float] | None:
    """(inlines, crosslines, samples) as floats, or None for no smoothing (absent or all zero)."""
    if sigma is None:
        return None
    values = tuple(float(s) for s in sigma)
    if len(values) != 3 or any(not math.isfinite(s) or s < 0 or s > 64 for s in values):
        raise PredictError(f"smooth must be three sigmas 0..64 (inlines, crosslines, samples), got {list(sigma)}")
    return values if any(values) else None


def _radius(sigma: float) -> int:
    return int(math.ceil(3 * sigma)) if sigma > 0 else 0


def _kernel(sigma: float) -> torch.Tensor:
    r = _radius(sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return (k / k.sum()).view(1, 1, -1)


def _along(t: torch.Tensor, axis: int, sigma: float, pad: tuple[int, int] | None = None) -> torch.Tensor:
    """Gaussian along `axis` of t; `pad` (before, after): the edge padding, default the kernel's radius on both
    sides (same length out); less where t already holds that many neighbours (a slab's halo: shorter out)."""
    if sigma <= 0:
        return t
    r = _radius(sigma)
    pad = pad if pad is not None else (r, r)
    moved = t.movedim(axis, -1)
    shape = moved.shape
    flat = moved.reshape(-1, 1, shape[-1])
    if any(pad):
        flat = F.pad(flat, pad, mode="replicate")
    out = F.conv1d(flat, _kernel(sigma))
    return out.reshape(*shape[:-1], out.shape[-1]).movedim(-1, axis)


def smooth_block(probs: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """[n_classes, ni, nx, ns] probabilities smoothed over the three spatial axes (the block's edges repeated)."""
    out = probs.float()
    for axis, s in enumerate(sigma, start=1):
        out = _along(out, axis, s)
    return out


def smooth_volume(out_dir: Path, sigma: Sequence[float], keep_probabilities: bool, finish: Callable,
                  progress: Callable[[str], None] | None = None, slab_inlines: int | None = None) -> Path | None:
    """The whole-volume pass over out_dir's raw probabilities.npy (see the module's note). `finish` turns
    [n_classes, ...] probabilities into (labels, confidence) (the engine's); slab_inlines: inlines per slab
    (default: as many as SLAB_BYTES holds). Returns the smoothed probabilities' path when kept."""
    out_dir = Path(out_dir)
    smoothed = out_dir / SMOOTHED_PROBABILITIES if keep_probabilities else None
    key = {"sigma": list(sigma), "probabilities": keep_probabilities}
    done = out_dir / DONE_FILE
    if done.is_file() and json.loads(done.read_text()) == key:
        return smoothed
    raw = np.load(out_dir / "probabilities.npy", mmap_mode="r")
    n_classes, ni, nx, ns = raw.shape
    labels = np.load(out_dir / "labels.npy", mmap_mode="r+")
    confidence = np.load(out_dir / "confidence.npy", mmap_mode="r+") if (out_dir / "confidence.npy").exists() \
        else None
    out = (np.lib.format.open_memmap(smoothed, mode="w+", dtype=np.float32, shape=raw.shape)
           if smoothed is not None else None)
    halo = _radius(sigma[0])
    per_inline = n_classes * nx * ns * 4 * 4
    slab = slab_inlines or max(1, SLAB_BYTES // per_inline - 2 * halo)
    for i0 in range(0, ni, slab):
        i1 = min(i0 + slab, ni)
        a, b = max(0, i0 - halo), min(ni, i1 + halo)
        part = torch.from_numpy(np.array(raw[:, a:b], dtype=np.float32))
        part = _along(part, 1, sigma[0], pad=(halo - (i0 - a), halo - (b - i1)))
        for axis in (2, 3):
            part = _along(part, axis, sigma[axis - 1])
        labels[i0:i1], conf = finish(part)
        if confidence is not None:
            confidence[i0:i1] = conf
        if out is not None:
            out[:, i0:i1] = part.numpy()
        if progress is not None:
            progress(f"smoothing the probabilities: inlines {i1}/{ni}")
    for array in (labels, confidence, out):
        if array is not None:
            array.flush()
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(key))
    os.replace(tmp, done)
    return smoothed
