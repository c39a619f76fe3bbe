"""The data side of a train job: picks split into training and validation, batch recipes, validation batches.

Patch classifiers learn one class per crop (PickSampler, crops centred on picks). Segmentation models learn from
sparse labels: crops centred on picks carry every labelled voxel they cover (-1 elsewhere), so the loss counts
labelled voxels only. The labels are the picks themselves (workers.sampling.PointLabels: one set for the training
picks, one for the validation picks), not label volumes as large as the survey.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from workers.augment import Augmentation
from workers.crops import CropSpec
from workers.picks import PickSet
from workers.sampling import BatchRecipe, LabelVolumeSampler, PickSampler, PointLabels, RawVolume
from workers.survey import Survey

from daemon.common.home import survey_folder
from daemon.kinds.train_split import split_picks
from daemon.kinds.train_spec import DataSection

VAL_SEED_OFFSET = 7919  # validation batches use their own seed, so they never repeat a training batch


@dataclass
class TrainData:
    """What the runner needs: the training recipe, validation batches in memory, and the model's input spec."""

    recipe: BatchRecipe
    val: list[tuple[torch.Tensor, torch.Tensor]]
    refit_recipe: Any  # the training recipe over every labelled point (validation and gap too), for train.refit
    classes: list[str]
    normalisation: dict[str, Any]
    split: dict[str, Any]
    preview_inline: int
    volumes: list[np.ndarray] = field(repr=False, default_factory=list)  # empty: no preview image
    trained_on: dict[str, Any] = field(default_factory=dict)  # the model file's record (ModelInfo.trained_on)


def _per_voxel_only(d: DataSection) -> list[str]:
    """The job's settings that teach only a model labelling every voxel of its crop, each with its reason."""
    settings = []
    if d.unlabelled:
        settings.append(f"data.unlabelled {d.unlabelled} (crops without picks)")
    if d.augment.p_roll:
        settings.append(f"data.augment.p_roll {d.augment.p_roll} (a roll moves the crop's centre sample)")
    return settings


def prepare_data(d: DataSection, home: Path, job_dir: Path, seed: int, per_voxel: bool) -> TrainData:
    """Recipe and validation batches for the job's data section: example sets, or a survey and its picks."""
    if not per_voxel and (settings := _per_voxel_only(d)):
        raise ValueError(f"{'; '.join(settings)}: only a model that labels every voxel of its crop (unet, or a user "
                         "model applied as 'fcn') can use this, not one class per crop")
    if d.from_sets:
        from daemon.executor.training.set_data import prepare_set_data

        return prepare_set_data(d, home, seed, per_voxel, seed + VAL_SEED_OFFSET, make_batch, TrainData)
    folder = survey_folder(home, d.survey)
    survey = Survey.open(folder)
    picks = PickSet.load(folder, d.picks)
    crop = CropSpec(tuple(d.crop.size), d.crop.orientation)
    points, labels = picks.positions(), picks.cls.astype(np.int64)
    split = split_picks(points, d, crop)
    stats = [survey.stats(v) for v in d.volumes]
    norm = tuple((float(s["mean"]), float(s["std"]) or 1.0) for s in stats)
    volumes = tuple(RawVolume(str(folder / survey.doc["volumes"][v]["file"]), survey.shape) for v in d.volumes)
    aug = Augmentation(**d.augment.model_dump())
    aug = aug if aug.enabled else None
    common = dict(volumes=volumes, crop=crop, batch_size=d.batch_size, context=d.context, norm=norm)
    if per_voxel:
        train_sampler = _label_sampler(survey.shape, points, labels, split.train, d.unlabelled)
        val_sampler = _label_sampler(survey.shape, points, labels, split.val)
        every = _label_sampler(survey.shape, points, labels, np.arange(len(points)), d.unlabelled)
    else:
        train_sampler = PickSampler(points[split.train], labels[split.train], balance=d.balance)
        val_sampler = PickSampler(points[split.val], labels[split.val], balance=False)
        every = PickSampler(points, labels, balance=d.balance)
    recipe = BatchRecipe(sampler=train_sampler, batches_per_epoch=d.batches_per_epoch, augment=aug, **common)
    val = []
    if d.val_batches:
        val_recipe = BatchRecipe(sampler=val_sampler, batches_per_epoch=d.val_batches, **common)
        val = [make_batch(val_recipe, seed + VAL_SEED_OFFSET, 0, k) for k in range(d.val_batches)]
    counts = np.bincount(points[:, 0])
    return TrainData(
        recipe=recipe, val=val, classes=list(picks.class_names),
        refit_recipe=BatchRecipe(sampler=every, batches_per_epoch=d.batches_per_epoch, augment=aug, **common),
        normalisation={"method": "standardise", "volumes": [
            {"name": v, "mean": m, "std": s, "stats": st} for v, (m, s), st in zip(d.volumes, norm, stats)]},
        split={"kind": d.split.kind, "train_points": int(len(split.train)), "val_points": int(len(split.val)),
               "dropped_points": int(len(points) - len(split.train) - len(split.val))},
        preview_inline=int(np.argmax(counts)), volumes=[survey.volume(v) for v in d.volumes],
        trained_on={"sets": [], "surveys": [{"name": d.survey, "picks": d.picks, "examples": int(len(points)),
                                             "volumes": [{"name": v, "mean": m, "std": s}
                                                         for v, (m, s) in zip(d.volumes, norm)]}]})


def _label_sampler(shape: tuple[int, int, int], points: np.ndarray, labels: np.ndarray,
                   chosen: np.ndarray, anywhere: float = 0.0) -> LabelVolumeSampler:
    """Crops centred on the chosen picks (and the `anywhere` share anywhere in the survey), labelled by the chosen
    picks they cover (-1 elsewhere)."""
    p = points[chosen]
    return LabelVolumeSampler(labels=PointLabels(shape, p, labels[chosen]), shape=shape, centres=p,
                              anywhere=anywhere)


def make_batch(recipe: BatchRecipe, seed: int, epoch: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch k of an epoch made in this process (validation, and jobs run with data.workers: 0)."""
    x = np.empty(recipe.x_shape, np.float32)
    y = np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(seed, epoch, k, x, y)
    return torch.from_numpy(x), torch.from_numpy(y)


def in_process_batches(recipe: BatchRecipe, seed: int):
    """A batch source (epoch, start) -> iterator that makes batches in the executor itself, no workers."""
    def epoch_batches(epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k in range(start, recipe.batches_per_epoch):
            yield make_batch(recipe, seed, epoch, k)
    return epoch_batches


def pool_batches(pool: Any):
    """A batch source over a WorkerPool; each slot goes back to the ring once the loop has taken its step."""
    def epoch_batches(epoch: int, start: int) -> Iterator[Any]:
        for batch in pool.epoch(epoch, start=start):
            with batch:
                yield batch
    return epoch_batches
