"""The data side of a train job that reads example sets (data.examples, or the default set).

The same TrainData as daemon/executor/training/job_data.py gives for a survey and its picks, made from the sets:
the split is the blocked (or random) split of job_data's path done in each source survey's own grid
(daemon.kinds.train_split.split_by_source), the batches come from workers.example_batches.ExampleRecipe through the
same worker pool, and each example is normalised with its own source survey's statistics. A patch classifier
learns the centre class of each example (y), a segmentation model every example of its survey that the crop
covers, -1 elsewhere: PointLabels of the recipe's own examples, as job_data makes them of its picks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workers.augment import Augmentation
from workers.crops import CropSpec
from workers.example_batches import ExampleRecipe
from workers.example_index import SetIndex, read_sets
from workers.sampling import PickSampler, RawVolume
from workers.survey import Survey

from daemon.common.home import survey_folder
from daemon.kinds.train_split import split_by_source
from daemon.kinds.train_sets import job_sets, needs_sections, section_problem
from daemon.kinds.train_spec import DataSection


def read_job_sets(d: DataSection, home: Path) -> SetIndex:
    """The job's sets, joined (ExampleSetError / NoTrainingData name what is wrong)."""
    return read_sets(job_sets(d, home), CropSpec(tuple(d.crop.size), d.crop.orientation), len(d.volumes))


def prepare_set_data(d: DataSection, home: Path, seed: int, per_voxel: bool, val_seed: int,
                     make_batch: Any, train_data: Any) -> Any:
    """TrainData for a job that trains from example sets (job_data.prepare_data hands over here)."""
    index = read_job_sets(d, home)
    crop = CropSpec(tuple(d.crop.size), d.crop.orientation)
    names = [s["name"] for s in index.surveys]
    split = split_by_source(index.positions, index.survey_of, names, d, crop)
    aug = Augmentation(**d.augment.model_dump())
    aug = aug if aug.enabled else None
    sections = _sections(index, home, d) if aug is not None and needs_sections(d) else None

    def recipe(chosen: np.ndarray, balance: bool, batches: int, augment: Any) -> ExampleRecipe:
        sampler = PickSampler(index.positions[chosen], index.labels[chosen], balance=balance)
        return ExampleRecipe(files=tuple(index.files), set_of=index.set_of[chosen], row_of=index.row_of[chosen],
                             norm=index.norm[chosen], sampler=sampler, crop=crop,
                             batch_size=d.batch_size, batches_per_epoch=batches, per_voxel=per_voxel,
                             augment=augment, survey_of=index.survey_of[chosen],
                             sections=sections if augment is not None else None)

    # class balance is for patch models (data.balance); segmentation centres are drawn uniformly, as from picks
    train = recipe(split.train, d.balance and not per_voxel, d.batches_per_epoch, aug)
    val = []
    if d.val_batches and len(split.val):
        val_recipe = recipe(split.val, False, d.val_batches, None)
        val = [make_batch(val_recipe, val_seed, 0, k) for k in range(d.val_batches)]
    per_survey = {n: {"train_points": int((index.survey_of[split.train] == k).sum()),
                      "val_points": int((index.survey_of[split.val] == k).sum())} for k, n in enumerate(names)}
    volumes, preview_inline = _preview_survey(index, home, d)
    first = index.surveys[0]["volumes"]
    return train_data(
        recipe=train, val=val, classes=list(index.classes),
        refit_recipe=recipe(np.arange(len(index.labels)), d.balance and not per_voxel, d.batches_per_epoch, aug),
        normalisation={"method": "per_survey", "volumes": [dict(v) for v in first],
                       "sources": index.trained_on()["surveys"]},
        split={"kind": d.split.kind, "train_points": int(len(split.train)), "val_points": int(len(split.val)),
               "dropped_points": int(len(index.labels) - len(split.train) - len(split.val)),
               "per_survey": per_survey},
        preview_inline=preview_inline, volumes=volumes, trained_on=index.trained_on())


def _sections(index: SetIndex, home: Path, d: DataSection) -> tuple[tuple[RawVolume, ...], ...]:
    """Each source survey's volumes, for the inline/crossline swap (checked at submit; checked again here)."""
    out = []
    for s in index.surveys:
        if (why := section_problem(home, s["name"], d.volumes)):
            raise ValueError(f"data.augment.p_swap: the swap cuts the other section from the source survey, and {why}")
        survey = Survey.open(survey_folder(home, s["name"]))
        out.append(tuple(RawVolume(str(survey.folder / survey.doc["volumes"][v]["file"]), survey.shape)
                         for v in d.volumes))
    return tuple(out)


def _preview_survey(index: SetIndex, home: Path, d: DataSection) -> tuple[list[np.ndarray], int]:
    """The first source survey's volumes and its inline with the most examples, for the preview image (none when
    that survey is no longer in this home)."""
    folder = survey_folder(home, index.surveys[0]["name"])
    if not (folder / "survey.json").is_file():
        return [], 0
    survey = Survey.open(folder)
    if any(v not in survey.volumes for v in d.volumes):
        return [], 0
    mine = index.positions[index.survey_of == 0]
    return [survey.volume(v) for v in d.volumes], int(np.argmax(np.bincount(mine[:, 0])))
