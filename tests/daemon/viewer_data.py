"""A tiny home for the viewer tests: a survey with a volume and picks, example sets, a prediction, event files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from workers.crops import CropSpec
from workers.examples import extract_examples
from workers.picks import from_labelled_slice
from workers.survey import Geometry, Survey

SHAPE = (24, 32, 40)  # inlines, crosslines, samples
CLASSES = ["sand", "shale", "salt"]


def make_survey(home: Path, name: str = "tiny") -> Survey:
    """A survey whose seismic is layered sinusoids (visible structure), with a labelled inline as picks."""
    geo = Geometry.regular((100, 100 + SHAPE[0] - 1, 1), (300, 300 + SHAPE[1] - 1, 1), (0, 4 * (SHAPE[2] - 1), 4))
    survey = Survey.create(home / "surveys" / name, geo)
    vol = survey.new_volume("seismic")
    i, x, s = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    vol[:] = np.sin(s / 2.5 + 0.2 * i + 0.1 * x) * (1 + s / SHAPE[2])
    vol.flush()
    survey.register_volume("seismic", {"mean": float(vol.mean()), "std": float(vol.std()), "min": float(vol.min()),
                                       "max": float(vol.max()), "p01": -1.5, "p99": 1.5, "nan_count": 0})
    labels = np.full(SHAPE[1:], -1, np.int32)
    # picks away from the edges, so crops hold data rather than edge padding
    labels[4:-4:3, 6:-6:4] = (np.arange(SHAPE[2])[6:-6:4] * len(CLASSES) // SHAPE[2])[None, :]
    from_labelled_slice(survey, 100 + SHAPE[0] // 2, labels, CLASSES).save(survey.folder, "facies")
    return Survey.open(survey.folder)


def make_example_sets(home: Path, survey: Survey) -> None:
    """`cubes` (3D crops 8x10x12) and `images` (inline crops 16x16) from the survey's picks."""
    from workers.picks import PickSet
    picks = PickSet.load(survey.folder, "facies")
    (home / "examples").mkdir(parents=True, exist_ok=True)
    extract_examples([(survey, picks, ["seismic"])], CropSpec((8, 10, 12), "3d"), home / "examples" / "cubes.h5")
    extract_examples([(survey, picks, ["seismic"])], CropSpec((16, 16), "inline"), home / "examples" / "images.h5")


def make_prediction(home: Path, name: str = "facies-pred") -> Path:
    """<home>/predictions/<name>/labels.npy: class ids by depth band, as a predict job writes them."""
    folder = home / "predictions" / name
    folder.mkdir(parents=True)
    labels = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.int8, shape=SHAPE)
    labels[:] = (np.arange(SHAPE[2]) * len(CLASSES) // SHAPE[2]).astype(np.int8)[None, None, :]
    labels.flush()
    return folder


def make_event_files(home: Path, job_ids: tuple[int, ...]) -> None:
    """Scalars train/loss under <home>/jobs/<id>/tensorboard, as a finished training job leaves them."""
    from torch.utils.tensorboard import SummaryWriter
    for j in job_ids:
        w = SummaryWriter(str(home / "jobs" / str(j) / "tensorboard"))
        for step in range(5):
            w.add_scalar("train/loss", 1.0 / (step + 1) + j, step)
        w.close()
