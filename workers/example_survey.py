"""An example set laid out as a survey with a pick at each example's centre, so that a train job can learn from it.

seisd's train job reads a survey's volumes and a pick set (it cuts its crops around the picks as it goes); an
example set holds crops already cut (an OpendTect training set, workers/odt_examples.py, is one). This module puts
each crop back into a volume of its own, side by side along the crop's fixed axis, and a pick of the example's
class at its centre, so the train job with the set's crop size cuts exactly the stored examples:

    inline crops [xl, z]      volume [N, xl, z]       example k is inline k
    crossline crops [il, z]   volume [il, N, z]       example k is crossline k
    time crops [il, xl]       volume [il, xl, N]      example k is sample k
    3d crops [il, xl, z]      volume [N * il, xl, z]  example k holds inlines k*il .. (k+1)*il - 1

One volume per channel (the set's volume names). The grid is numbered from 1 and sampled every 4 ms from 0 (the
examples keep no geometry). A volume's mean and std are those of the set's normalisation (first source), so a
model trained here normalises as it will when applied to the survey the examples came from. What this layout
cannot give (docs/opendtect.md): neighbouring slices (data.context must stay 0), and positions for a blocked split
(use data.split.kind: random).
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from workers.crops import CropSpec
from workers.examples import BATCH, ExtractCancelled, info
from workers.picks import PickSet
from workers.survey import Geometry, Survey

PICKS = "examples"   # the pick set made in the survey
SAMPLE_STEP_MS = 4.0


def example_survey_shape(crop: CropSpec, n: int) -> tuple[int, int, int]:
    """The volume shape that holds `n` examples of `crop` side by side."""
    if crop.orientation == "3d":
        il, xl, z = crop.size
        return (n * il, xl, z)
    shape = [0, 0, 0]
    for size, axis in zip(crop.size, crop.volume_axes):
        shape[axis] = size
    fixed = ({0, 1, 2} - set(crop.volume_axes)).pop()
    shape[fixed] = n
    return tuple(shape)  # type: ignore[return-value]


def example_centres(crop: CropSpec, n: int) -> np.ndarray:
    """[n, 3] grid indices of each example's centre in that volume (a crop of size s around c starts at c - s//2)."""
    k = np.arange(n, dtype=np.int64)
    centres = np.zeros((n, 3), np.int64)
    if crop.orientation == "3d":
        centres[:, 0] = k * crop.size[0] + crop.size[0] // 2
        centres[:, 1], centres[:, 2] = crop.size[1] // 2, crop.size[2] // 2
        return centres
    for size, axis in zip(crop.size, crop.volume_axes):
        centres[:, axis] = size // 2
    centres[:, ({0, 1, 2} - set(crop.volume_axes)).pop()] = k
    return centres


def survey_of_examples(set_path: str | os.PathLike, folder: str | os.PathLike, name: str,
                       cancel=None) -> tuple[Survey, PickSet]:
    """Write the example set at `set_path` as survey `name` in `folder` (which must not exist) with pick set
    PICKS; returns both. On failure the half-made folder is removed."""
    s, folder = info(set_path), Path(folder)
    crop = CropSpec.from_dict(s.meta["crop"])
    shape = example_survey_shape(crop, s.count)
    geometry = Geometry(tuple(range(1, shape[0] + 1)), tuple(range(1, shape[1] + 1)), 0.0, SAMPLE_STEP_MS,
                        shape[2], "ms")
    survey = Survey.create(folder, geometry, name=name, source={"kind": "examples", "examples": s.name,
                                                               "file": str(s.path)})
    try:
        with h5py.File(s.path, "r") as h5:
            y = h5["y"][()]
            for c, volume in enumerate(s.meta["volumes"]):
                vol = survey.new_volume(volume)
                for a in range(0, s.count, BATCH):
                    if cancel is not None and cancel():
                        raise ExtractCancelled("cancelled while the examples were laid out as a survey")
                    b = min(a + BATCH, s.count)
                    _place(vol, crop, h5["x"][a:b, c], a)
                vol.flush()
                survey.register_volume(volume, _stats(np.asarray(vol), s.meta, volume))
                del vol
        picks = PickSet(*example_centres(crop, s.count).T, y.astype(np.int64), list(s.meta["class_names"]),
                        notes={"examples": s.name})
        picks.save(folder, PICKS)
    except BaseException:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Survey.open(folder), picks


def _place(vol: np.ndarray, crop: CropSpec, x: np.ndarray, first: int) -> None:
    """Examples first .. first + len(x) - 1 (one channel, [n, *crop]) into their places in the volume."""
    n = len(x)
    if crop.orientation == "3d":
        il = crop.size[0]
        vol[first * il:(first + n) * il] = x.reshape(n * il, *crop.size[1:])
    elif crop.orientation == "inline":
        vol[first:first + n] = x
    elif crop.orientation == "crossline":
        vol[:, first:first + n] = x.transpose(1, 0, 2)
    else:  # time: [il, xl] crops at samples first ..
        vol[:, :, first:first + n] = x.transpose(1, 2, 0)


def _stats(data: np.ndarray, meta: dict, volume: str) -> dict[str, float]:
    """Survey statistics of a volume: mean and std from the set's normalisation (first source) when it has them,
    the rest measured (on a sample of at most a million values)."""
    flat = data.reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)].astype(np.float64)
    stored = ((meta.get("normalisation") or [{}])[0] or {}).get(volume) or {}
    mean = float(stored.get("mean", sample.mean()))
    std = float(stored.get("std", sample.std())) or 1.0
    p01, p99 = np.percentile(sample, [1, 99])
    return {"mean": mean, "std": std, "min": float(flat.min()), "max": float(flat.max()), "p01": float(p01),
            "p99": float(p99), "nan_count": 0}
