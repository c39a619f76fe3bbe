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


JOB_FILES = {1: "kind: train\nname: first try\noutput: unet-a\n", 2: "kind: train\noutput: unet-f3\n"}


def make_event_files(home: Path, job_ids: tuple[int, ...]) -> None:
    """Scalars train/loss under <home>/jobs/<id>/tensorboard, as a finished training job leaves them, beside its
    job.yaml (job 1 has a name, job 2 only its model's)."""
    from torch.utils.tensorboard import SummaryWriter
    for j in job_ids:
        (home / "jobs" / str(j)).mkdir(parents=True, exist_ok=True)
        (home / "jobs" / str(j) / "job.yaml").write_text(JOB_FILES.get(j, "kind: train\n"))
        w = SummaryWriter(str(home / "jobs" / str(j) / "tensorboard"))
        for step in range(5):
            w.add_scalar("train/loss", 1.0 / (step + 1) + j, step)
        w.close()


# -- a survey imported from SEG-Y, with a SEG-Y prediction as a predict job leaves it ---------------------------------

SEGY_SHAPE = (32, 40, 48)     # inlines 1000.., crosslines 2000.., samples 400 ms step 4 ms (tools/synth.py)
PICKED_INLINE = 5             # an inline index far from the middle one, as an interpreter's picks often are
PICKED_CROSSLINES = (22, 34)  # crossline indices [a, b) picked on it, also away from the middle


def make_segy_survey(home: Path, name: str = "synth") -> dict:
    """A survey imported from synthetic SEG-Y, its true facies as label volume `truth`, and a pick set `facies`
    on part of inline index PICKED_INLINE: {survey, labels, classes, src}."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    import synth
    from workers.segy_import import add_volume, import_segy

    s = synth.generate(SEGY_SHAPE, seed=0, n_classes=6)
    src = home.parent / f"src-{name}"
    synth.write(s, src)
    folder = home / "surveys" / name
    survey = import_segy(src / "seismic.sgy", folder, name=name)
    add_volume(src / "labels.sgy", folder, "truth")
    picked = np.full(SEGY_SHAPE[1:], -1, np.int64)
    a, b = PICKED_CROSSLINES
    picked[a:b, ::2] = s.labels[PICKED_INLINE, a:b, ::2]
    from_labelled_slice(survey, int(survey.inlines[PICKED_INLINE]), picked, list(s.class_names)).save(folder,
                                                                                                      "facies")
    return {"survey": Survey.open(folder), "labels": s.labels, "classes": list(s.class_names), "src": src}


def make_segy_prediction(home: Path, survey: Survey, labels: np.ndarray, classes: list[str], name: str,
                         outputs: tuple[str, ...] = ("labels", "confidence")) -> Path:
    """predictions/<name>/ as `seisctl predict` leaves it by default (format segy): labels.sgy and confidence.sgy
    written by the job's own SEG-Y writer with the survey's geometry and headers, and summary.json."""
    import json
    from workers.segy_write import write_like_survey

    folder = home / "predictions" / name
    folder.mkdir(parents=True)
    if "labels" in outputs:
        write_like_survey(survey, folder / "labels.sgy", labels.astype(np.int8), "int8")
    if "confidence" in outputs:
        write_like_survey(survey, folder / "confidence.sgy", np.full(labels.shape, 0.5, np.float32), "float32")
    (folder / "summary.json").write_text(json.dumps({"survey": survey.name, "classes": classes,
                                                     "shape": list(labels.shape)}))
    return folder
