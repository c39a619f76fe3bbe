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
(probabilities.npy, always computed when smoothing), a pass smooths them along the inlines in blocks of
crosslines (every inline at once), then along the crosslines and samples in slabs of inlines, making labels and
confidence from the result. The smoothed probabilities go to probabilities_smoothed.npy when they are
an output, else to a working file removed at the end. smoothed.json, written last, marks the pass done; an
interrupted pass runs again from the raw probabilities, so the result is the same, and it does not depend on the
block sizes. Blocks in memory (apply_block: streams) are smoothed within the block.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Collection, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from daemon.executor.predict.spec import PredictError
from daemon.kinds.predict import SIGMA_MAX

BLOCK_BYTES = 1 << 27  # float32 probabilities read at a time (the working copies take a few times as much)
DONE_FILE = "smoothed.json"
SMOOTHED_PROBABILITIES = "probabilities_smoothed.npy"
WORKING_FILE = "probabilities_smoothing.npy"  # the smoothed probabilities while they are not an output


def check_sigma(sigma: Sequence[float] | None) -> tuple[float, float, float] | None:
    """(inlines, crosslines, samples) as floats, or None for no smoothing (absent or all zero)."""
    if sigma is None:
        return None
    values = tuple(float(s) for s in sigma)
    if len(values) != 3 or any(not math.isfinite(s) or s < 0 or s > SIGMA_MAX for s in values):
        raise PredictError(f"smooth must be three sigmas 0..{SIGMA_MAX} (inlines, crosslines, samples), got "
                           f"{list(sigma)}")
    return values if any(values) else None


def _radius(sigma: float) -> int:
    return int(math.ceil(3 * sigma)) if sigma > 0 else 0


def _kernel(sigma: float) -> torch.Tensor:
    r = _radius(sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return (k / k.sum()).view(1, 1, -1)


def _along(t: torch.Tensor, axis: int, sigma: float) -> torch.Tensor:
    """Gaussian along `axis` of t, the edges repeated past it (same length out)."""
    if sigma <= 0:
        return t
    r = _radius(sigma)
    moved = t.movedim(axis, -1)
    shape = moved.shape
    flat = F.pad(moved.reshape(-1, 1, shape[-1]), (r, r), mode="replicate")
    return F.conv1d(flat, _kernel(sigma)).reshape(shape).movedim(-1, axis)


def smooth_block(probs: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """[n_classes, ni, nx, ns] probabilities smoothed over the three spatial axes (the block's edges repeated)."""
    out = probs.float()
    for axis, s in enumerate(sigma, start=1):
        out = _along(out, axis, s)
    return out


def smooth_volume(out_dir: Path, sigma: Sequence[float], outputs: Collection[str], finish: Callable,
                  progress: Callable[[str], None] | None = None, block_bytes: int = BLOCK_BYTES) -> Path | None:
    """The whole-volume pass over out_dir's raw probabilities.npy (see the module's note), writing those of
    `outputs` it makes: labels, confidence (`finish` turns [n_classes, ...] probabilities into both: the engine's)
    and the smoothed probabilities. block_bytes: the float32 bytes read at a time. Returns the smoothed
    probabilities' path when kept."""
    out_dir = Path(out_dir)
    keep_probabilities = "probabilities" in outputs
    key = {"sigma": list(sigma), "outputs": sorted(set(outputs) & {"labels", "confidence", "probabilities"})}
    done = out_dir / DONE_FILE
    target = out_dir / (SMOOTHED_PROBABILITIES if keep_probabilities else WORKING_FILE)
    if done.is_file() and json.loads(done.read_text()) == key:
        return target if keep_probabilities else None
    raw = np.load(out_dir / "probabilities.npy", mmap_mode="r")
    n_classes, ni, nx, ns = raw.shape
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32, shape=raw.shape)
    # along the inlines: blocks of crosslines, every inline at once (no halo to read twice)
    step = max(1, block_bytes // (n_classes * ni * ns * 4))
    for x0 in range(0, nx, step):
        out[:, :, x0:x0 + step] = _along(torch.from_numpy(np.array(raw[:, :, x0:x0 + step])), 1, sigma[0]).numpy()
        if progress is not None:
            progress(f"smoothing the probabilities along the inlines: crosslines {min(x0 + step, nx)}/{nx}")
    # along the crosslines and samples: slabs of whole inlines, then labels and confidence
    labels, confidence = (np.lib.format.open_memmap(out_dir / f"{name}.npy", mode="w+", dtype=dtype,
                                                    shape=(ni, nx, ns)) if name in outputs else None
                          for name, dtype in (("labels", np.uint8), ("confidence", np.float32)))
    step = max(1, block_bytes // (n_classes * nx * ns * 4))
    for i0 in range(0, ni, step):
        i1 = min(i0 + step, ni)
        part = _along(_along(torch.from_numpy(np.array(out[:, i0:i1])), 2, sigma[1]), 3, sigma[2])
        if labels is not None or confidence is not None:
            made = finish(part)
            for array, values in zip((labels, confidence), made):
                if array is not None:
                    array[i0:i1] = values
        if keep_probabilities:
            out[:, i0:i1] = part.numpy()
        if progress is not None:
            progress(f"smoothing the probabilities: inlines {i1}/{ni}")
    for array in (labels, confidence, out):
        if array is not None:
            array.flush()
    del out
    if not keep_probabilities:
        target.unlink()
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(key))
    os.replace(tmp, done)
    return target if keep_probabilities else None
