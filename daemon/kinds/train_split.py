"""A train job's split of its points into training and validation: blocked (whole blocks of the inline-crossline
plane held out, with a gap) or random; for example sets, made in each source survey's own grid.

Torch-free and numpy only, so the submit check (daemon/kinds/train.py, daemon/kinds/train_sets.py) tries the same
split the executor makes (daemon/executor/training/job_data.py, set_data.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from daemon.kinds.data import CropSection


def default_gap(crop: CropSection) -> int:
    """Half the crop's extent in the inline-crossline plane: no training crop then covers a validation point."""
    lateral = {"inline": crop.size[:1], "crossline": crop.size[:1], "time": crop.size, "3d": crop.size[:2]}
    return max(lateral[crop.orientation]) // 2


def split_picks(points: np.ndarray, d: Any, crop: Any) -> Any:
    """The job's split of pick points: blocked (default) or random."""
    from workers.split import block_split, random_split

    s = d.split
    if s.kind == "random":
        return random_split(points, s.val_fraction, s.seed)
    gap = default_gap(crop) if s.gap is None else s.gap
    return block_split(points, s.block, gap, s.val_fraction, s.seed)


def split_by_source(points: np.ndarray, source: np.ndarray, names: list[str], d: Any, crop: Any) -> Any:
    """The job's split done in each source survey's own grid (points of different surveys share no blocks), so no
    validation example lies next to a training example of its survey; SplitError names the survey."""
    from workers.split import Split, SplitError

    train, val = [], []
    for s in np.unique(source):
        idx = np.flatnonzero(source == s)
        if getattr(d.split, "kind", "block") == "block" and (points[idx, :2] < 0).any():
            raise SplitError(f"survey {names[int(s)]!r}: its examples have no grid positions (a set imported from "
                             "OpendTect keeps none), so no block of its grid can be held out; use data.split.kind: "
                             "random")
        try:
            part = split_picks(points[idx], d, crop)
        except SplitError as exc:
            raise SplitError(f"survey {names[int(s)]!r} ({len(idx)} examples): {exc}") from None
        train.append(idx[part.train])
        val.append(idx[part.val])
    return Split(np.sort(np.concatenate(train)), np.sort(np.concatenate(val)))
