"""Distilling a train job's model (the teacher) into one fast network (the student) over the whole survey.

The stages, each in the job folder's distill/ and each found done by a resumed attempt:

    teacher.h5 + teacher.json   the teacher's model file and its figures (written by job.py after its training;
                                teacher.json last, so its presence says the teacher is done and is never trained again)
    teacher_prediction/         labels and confidence of the whole training survey (predict_volume, chunk-resumable);
                                removed once the pseudo labels are written (they hold what the student needs of it)
    pseudo_labels.i8            int8 [inline, crossline, sample]: the teacher's class where its confidence reaches
                                distill.min_confidence, else -1; the training picks' own labels written over it
                                (the validation picks are not: the student's validation stays on unseen labels)
    checkpoints/, summary.h5    the student's run (the training loop's files, as the teacher's are in the job folder)

The student is trained by the same loop and worker pool as the teacher, on crops centred anywhere in the survey
(workers.sampling.LabelVolumeSampler over the pseudo-label volume), with the teacher's crop, augmentation and
validation batches. It becomes the job's model file, applied along its crop's orientation only.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daemon.common.home import survey_folder
from daemon.executor.modelfile import load_model_file
from daemon.executor.models import build_model
from daemon.executor.predict.apply import predict_volume
from daemon.executor.predict.recipe import recipe_of
from daemon.kinds.train_spec import TrainSpec
from workers.sampling import BatchRecipe, LabelVolumeSampler, PointLabels, RawVolume
from workers.survey import Survey

PSEUDO_FILE = "pseudo_labels.i8"
WRITE_INLINES = 16  # pseudo labels are written this many inlines at a time


def folder(job_dir: Path) -> Path:
    """The job's distill/ folder (made on first use)."""
    out = Path(job_dir) / "distill"
    out.mkdir(parents=True, exist_ok=True)
    return out


def teacher_file(job_dir: Path) -> Path:
    return folder(job_dir) / "teacher.h5"


def finished_teacher(job_dir: Path) -> dict[str, Any] | None:
    """The figures of a teacher trained by an earlier attempt of this job, or None when it has to be trained."""
    record = folder(job_dir) / "teacher.json"
    if record.is_file() and teacher_file(job_dir).is_file():
        return json.loads(record.read_text())
    return None


def record_teacher(job_dir: Path, figures: dict[str, Any]) -> None:
    """Mark the teacher done (after its model file is written): a resumed attempt goes straight to the student."""
    record = folder(job_dir) / "teacher.json"
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(figures, default=str))
    os.replace(tmp, record)


def pseudo_labels(spec: TrainSpec, ctx: Any, train_picks: PointLabels) -> dict[str, Any]:
    """Predict the survey with the teacher's model file (as a predict job applies it) and write the pseudo-label
    volume; returns its path, shape and figures. Done once: a resumed attempt finds the volume written."""
    out = folder(ctx.job_dir)
    path = out / PSEUDO_FILE
    meta_path = out / "pseudo_labels.json"
    if path.is_file() and meta_path.is_file():
        ctx.log.info("distilling: pseudo labels written by an earlier attempt (%s)", path)
        _drop_teacher_prediction(out, ctx.log)  # an attempt killed between the two steps left it
        return json.loads(meta_path.read_text())
    survey = Survey.open(survey_folder(ctx.home, spec.data.survey))
    ctx.log.info("distilling: predicting the survey %s %s with the teacher", spec.data.survey, survey.shape)
    report = lambda f, eta, msg: ctx.progress(0.5 + 0.1 * f, f"distilling: predicting the survey ({msg})",  # noqa: E731
                                              eta_s=eta, stage="predict")
    run = teacher_prediction(teacher_file(ctx.job_dir), survey, out / "teacher_prediction", device=ctx.device,
                             resume=True, should_stop=ctx.cancelled.is_set, progress=report)
    if run["status"] != "complete":
        ctx.check_cancel()
        raise RuntimeError(f"the teacher's prediction stopped at chunk {run['chunks_done']} of {run['n_chunks']}")
    labels = np.load(run["paths"]["labels"], mmap_mode="r")
    confidence = np.load(run["paths"]["confidence"], mmap_mode="r")
    meta = _write_pseudo(path, labels, confidence, spec.distill.min_confidence, train_picks)
    meta |= {"path": str(path), "shape": list(survey.shape), "predict_seconds": run["seconds"],
             "predict_voxels_per_s": run["voxels_per_s"], "min_confidence": spec.distill.min_confidence}
    tmp = meta_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, meta_path)
    ctx.log.info("distilling: %.1f%% of the survey's voxels labelled (confidence >= %g), %d training picks over "
                 "them", 100 * meta["labelled_fraction"], spec.distill.min_confidence, meta["picks"])
    _drop_teacher_prediction(out, ctx.log)
    return meta


def teacher_prediction(teacher: Path, survey: Survey, out_dir: Path, **run: Any) -> dict[str, Any]:
    """Labels and confidence of the whole survey from the teacher's model file, applied as a predict job applies it
    (its recipe's volumes, orientation and tiles); `run`: predict_volume's device, resume, progress, should_stop."""
    model, info = load_model_file(teacher)
    recipe = recipe_of(info)
    volumes = [survey.volume(v) for v in recipe.volumes]
    return predict_volume(model, volumes if len(volumes) > 1 else volumes[0], out_dir=out_dir,
                          outputs=["labels", "confidence"], **run, **recipe.apply_kwargs(survey.shape))


def _drop_teacher_prediction(out: Path, log: Any) -> None:
    """The teacher's labels and confidence of the whole survey (5 bytes a voxel) are not kept in the job folder once
    the pseudo-label volume (1 byte a voxel) holds what the student reads of them."""
    prediction = out / "teacher_prediction"
    if prediction.is_dir():
        shutil.rmtree(prediction)
        log.info("distilling: the teacher's prediction removed (%s); pseudo_labels.i8 keeps its confident labels",
                 prediction)


def _write_pseudo(path: Path, labels: np.ndarray, confidence: np.ndarray, min_confidence: float,
                  picks: PointLabels) -> dict[str, Any]:
    """int8 labels (-1 below min_confidence), the picks' labels over them, written to a temporary file and renamed."""
    tmp = path.with_suffix(".tmp")
    out = np.memmap(tmp, dtype=np.int8, mode="w+", shape=labels.shape)
    labelled = 0
    for i0 in range(0, labels.shape[0], WRITE_INLINES):
        sl = slice(i0, i0 + WRITE_INLINES)
        block = np.where(np.asarray(confidence[sl]) >= min_confidence, np.asarray(labels[sl]).astype(np.int8), -1)
        out[sl] = block
        labelled += int((block >= 0).sum())
    p = picks.points
    agree = float(np.mean(np.asarray(labels)[p[:, 0], p[:, 1], p[:, 2]] == picks.labels)) if len(p) else None
    out[p[:, 0], p[:, 1], p[:, 2]] = picks.labels.astype(np.int8)
    out.flush()
    del out
    os.replace(tmp, path)
    return {"labelled_fraction": labelled / float(np.prod(labels.shape)), "picks": int(len(p)),
            "teacher_agrees_at_picks": agree}


def student_recipe(recipe: BatchRecipe, meta: dict[str, Any], batches_per_epoch: int) -> BatchRecipe:
    """The teacher's recipe (volumes, crop, augmentation, batch size) with crops centred anywhere in the survey,
    labelled by the pseudo-label volume."""
    shape = tuple(meta["shape"])
    sampler = LabelVolumeSampler(labels=RawVolume(meta["path"], shape, dtype="int8"), shape=shape)
    return dataclasses.replace(recipe, sampler=sampler, batches_per_epoch=batches_per_epoch, _opened=[])


def student_spec(spec: TrainSpec, ctx: Any) -> TrainSpec:
    """The job file as the student's run reads it: its model (members of distill.members), its length and budget,
    a fresh start (or its own last checkpoint after a requeue); optimiser, schedule, data as the teacher's."""
    dist, cfg = spec.distill, spec.train
    last = folder(ctx.job_dir) / "checkpoints" / "last.pt"
    start = {"mode": "resume", "init_from": str(last)} if ctx.resume and last.is_file() else \
        {"mode": "new", "init_from": None}
    half = dist.epochs // 2  # the student's early stop and budget wait at most half its epochs
    early = cfg.early_stop.model_copy(update={"min_epochs": min(cfg.early_stop.min_epochs, half)})
    train = cfg.model_copy(update={**start, "epochs": dist.epochs, "max_minutes": dist.max_minutes,
                                   "budget_min_epochs": min(cfg.budget_min_epochs, half),
                                   "max_steps": None, "early_stop": early})
    data = spec.data.model_copy(update={"batches_per_epoch": dist.batches_per_epoch or spec.data.batches_per_epoch})
    model = spec.model.model_copy(update={"params": {**spec.model.params, "members": dist.members}})
    return spec.model_copy(update={"train": train, "data": data, "model": model})


def student_model(spec: TrainSpec, student: TrainSpec, job_dir: Path, channels: int,
                  n_classes: int) -> torch.nn.Module:
    """The student, with the teacher's first members' weights (distill.init: teacher) or fresh ones."""
    torch.manual_seed(spec.train.seed + 1)
    model = build_model(student.model.name, channels, n_classes, list(student.data.crop.size), student.model.params)
    if spec.distill.init == "teacher":
        teacher, _ = load_model_file(teacher_file(job_dir))
        model.load_state_dict(first_members(teacher.state_dict(), spec.distill.members,
                                            int(spec.model.params.get("members", 1))))
    return model


def first_members(state: dict[str, torch.Tensor], members: int, teacher_members: int) -> dict[str, torch.Tensor]:
    """The teacher's weights of its first `members` members, keyed as a model of that many members keys them."""
    if teacher_members == 1:
        return dict(state)
    if members == 1:
        prefix = "members.0."
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    keep = tuple(f"members.{i}." for i in range(members))
    return {k: v for k, v in state.items() if k.startswith(keep)}
