"""Train/validation splits of labelled points (picks) in the inline-crossline plane.

Neighbouring crops overlap and are near-copies, so a random split puts a near-copy of every validation crop
in the training set and the validation score measures memory, not generalisation. The default split holds
out whole square blocks of the (inline, crossline) plane and drops training points closer than ``gap`` to a
held-out block, so no training crop overlaps a validation point when gap >= the crop half-width.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SplitError(ValueError):
    """Split settings that cannot work with the given points."""


@dataclass(frozen=True)
class Split:
    """Indices into the point array; points dropped by the gap are in neither."""

    train: np.ndarray
    val: np.ndarray


def _check(points: np.ndarray, val_fraction: float) -> np.ndarray:
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 2 or len(pts) == 0:
        raise SplitError(f"points must be a non-empty [N, 2 or 3] array (inline, crossline[, sample]), got {pts.shape}")
    if not 0.0 < val_fraction < 1.0:
        raise SplitError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    return pts[:, :2].astype(np.int64)


def block_split(points: np.ndarray, block: int, gap: int, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Hold out whole ``block`` x ``block`` squares; drop training points within ``gap`` of one (Chebyshev).

    Choose ``gap`` >= the crop half-width. Raises SplitError if the result has no training or no validation point.
    """
    pts = _check(points, val_fraction)
    if block < 1 or gap < 0:
        raise SplitError(f"block must be >= 1 and gap >= 0, got block={block}, gap={gap}")
    origin = pts.min(axis=0)
    ids = (pts - origin) // block
    blocks = np.unique(ids, axis=0)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(val_fraction * len(blocks))))
    held = {tuple(b) for b in blocks[rng.permutation(len(blocks))[:n_val]]}
    is_val = np.fromiter((tuple(b) in held for b in ids), bool, len(ids))
    near = _near_held(pts - origin, held, block, gap)
    train, val = np.flatnonzero(~is_val & ~near), np.flatnonzero(is_val)
    if len(train) == 0 or len(val) == 0:
        raise SplitError(f"block split left {len(train)} training and {len(val)} validation points; "
                         "use smaller blocks, a smaller gap, or another val_fraction")
    return Split(train, val)


def _near_held(rel: np.ndarray, held: set, block: int, gap: int) -> np.ndarray:
    """True for points whose (2*gap+1)^2 neighbourhood touches a held-out block."""
    lo = (rel - gap) // block
    hi = (rel + gap) // block
    near = np.zeros(len(rel), bool)
    span = int((hi - lo).max()) + 1
    for di in range(span):
        for dj in range(span):
            bi, bj = lo[:, 0] + di, lo[:, 1] + dj
            inside = (bi <= hi[:, 0]) & (bj <= hi[:, 1])
            hit = np.fromiter(((a, b) in held for a, b in zip(bi, bj)), bool, len(rel))
            near |= inside & hit
    return near


def random_split(points: np.ndarray, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Random point split, for comparison only: neighbouring near-copies land on both sides."""
    pts = _check(points, val_fraction)
    order = np.random.default_rng(seed).permutation(len(pts))
    n_val = max(1, int(round(val_fraction * len(pts))))
    return Split(np.sort(order[n_val:]), np.sort(order[:n_val]))
