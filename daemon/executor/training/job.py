"""Runs a `train` job inside an executor: model, data pool, controls, the loop, and the model file.

NOTE [threads and processes]
  The runner runs on the executor's main thread, and the worker pool is created and iterated there: workers
  die with the thread that started them (PR_SET_PDEATHSIG), so a pool started from a short-lived thread would
  lose its workers when that thread ended. Control messages ("workers", "stop_after_epoch") arrive on the
  executor's I/O thread; their handlers only set flags or call pool.resize, which is thread-safe.

NOTE [restart]
  When the daemon restarts and requeues an interrupted job, ctx.resume is True: the run continues from
  job_dir/checkpoints/last.pt (weights, optimiser, schedule, step, epoch, batch index), and summary.h5 drops the
  rows written after that checkpoint, so step numbers and loss history continue without a gap or a repeat.
"""
from __future__ import annotations

import copy
import contextlib
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daemon.common.home import model_file, picks_file, resolve
from daemon.executor.context import JobCancelled
from daemon.executor.modelfile import ModelInfo, provenance, save_model_file
from daemon.executor.models import build_model
from daemon.executor.models.ensemble import members_of
from daemon.executor.training import distill, pretrain, refit
from daemon.executor.training.distributed import (RankGroup, RankJob, rank_device, rank_rows, rendezvous_file,
                                         resolve_backend, share_recipe)
from daemon.executor.training.job_data import TrainData, in_process_batches, pool_batches, prepare_data
from daemon.executor.training.loop import Progress, TrainControl, TrainResult, train
from daemon.executor.training.optim import run_config
from daemon.executor.training.preview import PreviewUnsupported, SliceInput, apply_kind_of, predict_inline
from daemon.kinds.limits import cpu_count, max_workers
from daemon.kinds.train_spec import DataSection, TrainSection, TrainSpec

METRICS_INTERVAL_S = 2.0
PREVIEW_STRIDE_PATCH = 2  # a patch model's preview evaluates every 2nd voxel per axis (4x fewer crops)


def resume_config(cfg: TrainSection, ctx: Any, finished: bool = False) -> TrainSection:
    """A requeued job continues from its own last checkpoint; a fresh one starts as its job file says. `finished`:
    an earlier attempt completed this run (a distilled job's teacher), so there is nothing to continue."""
    last = ctx.job_dir / "checkpoints" / "last.pt"
    if ctx.resume and last.is_file() and not finished:
        ctx.log.info("continuing from %s (interrupted attempt)", last)
        return cfg.model_copy(update={"mode": "resume", "init_from": str(last)})
    if cfg.init_from:
        return cfg.model_copy(update={"init_from": str(resolve(ctx.home, cfg.init_from))})
    return cfg


class RunState:
    """Flags and figures shared between the loop (main thread) and control handlers (I/O thread)."""

    def __init__(self, ctx: Any, pool: Any) -> None:
        self.ctx, self.pool = ctx, pool
        self.stop_after_epoch = threading.Event()
        self.workers_target = 0  # the last count asked for; data-parallel ranks follow it
        self.last_metrics = 0.0
        ctx.on_control("stop_after_epoch", self._on_stop_after_epoch)
        ctx.on_control("workers", self._on_workers)

    def _on_stop_after_epoch(self, args: dict[str, Any]) -> dict[str, Any]:
        self.stop_after_epoch.set()
        self.ctx.log.info("stop after the current epoch was requested")
        return {"stopping": True}

    def _on_workers(self, args: dict[str, Any]) -> dict[str, Any]:
        count = int(args.get("count", 0))
        if self.pool is None:
            raise ValueError("this job makes its batches in the executor (data.workers: 0); it has no pool to resize")
        if not 1 <= count <= max_workers():  # the submit-time limit (daemon/kinds/limits.py), on this machine
            raise ValueError(f"workers: count must be between 1 and {max_workers()} on this machine "
                             f"({cpu_count()} CPUs), got {count}")
        self.pool.resize(count)
        self.workers_target = count
        self.ctx.log.info("data workers: %d", count)
        return {"count": count}

    def flags(self) -> tuple[bool, bool, int]:
        """(cancelled, stop after epoch, workers wanted) as rank 0 relays them to the other ranks."""
        return self.ctx.cancelled.is_set(), self.stop_after_epoch.is_set(), self.workers_target

    def publish_pool_stats(self, force: bool = False) -> None:
        """The pool's figures as a job.metrics event, at most every METRICS_INTERVAL_S."""
        now = time.monotonic()
        if self.pool is None or (not force and now - self.last_metrics < METRICS_INTERVAL_S):
            return
        self.last_metrics = now
        s = self.pool.stats()
        self.ctx.metrics(pool_batches_per_s=s["batches_per_s"], consumer_wait_fraction=s["consumer_wait_fraction"],
                         worker_busy_fraction=s["worker_busy_fraction"], workers=s["n_workers"],
                         target_workers=s["target_workers"], worker_restarts=s["restarts"])


def _progress(ctx: Any, state: RunState, p: Progress, epochs: int, stage: str = "",
              share: tuple[float, float] = (0.0, 1.0)) -> None:
    fraction = p.step / p.total_steps if p.total_steps else 0.0
    where = f"epoch {p.epoch + 1}/{epochs}" if stage else f"epoch {p.epoch + 1}"
    extra = {"stage": stage.rstrip(": ")} if stage else {}
    ctx.progress(min(share[0] + (share[1] - share[0]) * fraction, 0.999), f"{stage}{where} step {p.step} "
                 f"loss {p.loss:.4f}", eta_s=p.eta_s, epoch=p.epoch + 1, step=p.step, loss=p.loss,
                 samples_per_s=p.samples_per_s, lr=p.lr, **extra)
    state.publish_pool_stats()


def _attach_logs(ctx: Any) -> tuple[logging.Logger, list[logging.Handler]]:
    """Send the seisd.training logger's records to the job's log file and log events."""
    logger = logging.getLogger("seisd.training")
    logger.setLevel(logging.INFO)
    handlers = list(ctx.log.handlers)
    for h in handlers:
        logger.addHandler(h)
    return logger, handlers


def run_train_job(spec: TrainSpec, ctx: Any) -> dict[str, Any]:
    """Train as the job file says; returns the figures for the job's result."""
    logger, handlers = _attach_logs(ctx)
    try:
        return _run(spec, ctx)
    finally:
        for h in handlers:
            logger.removeHandler(h)


def _run(spec: TrainSpec, ctx: Any) -> dict[str, Any]:
    teacher = distill.finished_teacher(ctx.job_dir) if spec.distill.enabled else None  # an earlier attempt's
    selection = refit.finished_selection(ctx.job_dir) if spec.train.refit else None  # an earlier attempt's
    start = spec.train  # the refit run starts where the selection started
    finished = teacher is not None or selection is not None
    spec = spec.model_copy(update={"train": resume_config(spec.train, ctx, finished=finished)})
    d, cfg = spec.data, spec.train
    n_classes = _n_classes(ctx.home, d)
    torch.manual_seed(cfg.seed)  # the model's initial weights are part of a reproducible run
    model = build_model(spec.model.name, d.channels, n_classes, list(d.crop.size), spec.model.params)
    kind = apply_kind_of(model, d.channels, d.crop.size)
    ctx.progress(0.0, "preparing data")
    data = prepare_data(d, ctx.home, ctx.job_dir, cfg.seed, per_voxel=kind == "fcn")
    ctx.log.info("split %s; classes %s", data.split, data.classes)
    n_workers = d.workers if d.workers is not None else int(ctx.settings.workers.default_count)
    how = SliceInput(kind, tuple(d.crop.size), d.crop.orientation,
                     tuple((v["mean"], v["std"]) for v in data.normalisation["volumes"]), d.context)
    spec, initial, learnt = pretrain.prepare(spec, ctx, model, data.recipe, start.mode, start.init_from)
    figures = _trained(spec, ctx, model, data, how, n_workers, teacher, selection, start, initial)
    if learnt is not None:
        figures["pretrain"] = learnt
        figures["train_seconds"] += learnt["seconds"]
    return figures


def _trained(spec: TrainSpec, ctx: Any, model: torch.nn.Module, data: TrainData, how: SliceInput, n_workers: int,
             teacher: dict | None, selection: TrainResult | None, start: TrainSection,
             initial: dict | None) -> dict[str, Any]:
    """The job's runs from the model's start: distilled, refitted, or one run."""
    if spec.distill.enabled:
        return _distilled(spec, ctx, model, data, how, n_workers, teacher)
    if spec.train.refit and refit.selects(spec):
        return _refitted(spec, ctx, model, data, how, n_workers, selection, start, initial)
    if spec.train.refit:  # early stopping off: no selection, one run on every labelled point
        data = refit.every_point(data)
        ctx.log.info("refit with early stopping off: nothing for a selection run to choose, so one run on all %d "
                     "labelled points (no held-out figures)", data.split["refit_points"])
    result, pool_stats = _train_stage(spec, ctx, model, data, how, n_workers)
    out = _write_model(spec, ctx, model.cpu(), data, how, result)
    figures = _result(spec, result, out, data, pool_stats, n_workers)
    if spec.train.refit:
        figures["refit"] = {"selection": False, "epochs": result.epoch, "points": data.split["refit_points"],
                            "stopped": result.stopped, "train_seconds": result.train_seconds}
    return figures


def _train_stage(spec: TrainSpec, ctx: Any, model: torch.nn.Module, data: TrainData, how: SliceInput,
                 n_workers: int, job_dir: Path | None = None, stage: str = "",
                 share: tuple[float, float] = (0.0, 1.0), reserve=None) -> tuple[TrainResult, dict | None]:
    """One training run of `model` on data.recipe as spec says, its files in job_dir (default: the job folder);
    progress messages start with `stage` and fill `share` of the progress bar; `reserve`: TrainControl's
    reserve_epochs. Raises JobCancelled on a cancel."""
    d, cfg = spec.data, spec.train
    world = cfg.distributed.world_size
    n_classes = len(data.classes)
    group = _rank_group(spec, ctx, data, n_classes, n_workers) if world > 1 else contextlib.nullcontext()
    with group:
        recipe = share_recipe(data.recipe, 0, world) if world > 1 else data.recipe
        pool = _make_pool(recipe, n_workers, cfg.seed, d.ring_slots, ctx) if n_workers > 0 else None
        state = RunState(ctx, pool)
        sync = group.sync(state.flags) if world > 1 else None
        device = rank_device(ctx.device, 0) if sync is not None else ctx.device
        if sync is not None:
            ctx.log.info("data-parallel: %d ranks (%s), %d rows of each batch per rank", world, group.job.backend,
                         recipe.rows_made)
            model = _rank0_model(model, sync, device)
        should_stop, stop_after_epoch = (sync.controls() if sync is not None
                                         else (ctx.cancelled.is_set, state.stop_after_epoch.is_set))
        control = TrainControl(
            should_stop=lambda: (state.publish_pool_stats(), should_stop())[1], stop_after_epoch=stop_after_epoch,
            on_progress=lambda p: _progress(ctx, state, p, cfg.epochs, stage, share),
            preview=_preview_hook(data, how, ctx), on_epoch=lambda e, s, f: _on_epoch(ctx, state, e, s, f, stage),
            class_names=data.classes, **({"reserve_epochs": reserve} if reserve else {}))
        source = pool_batches(pool) if pool is not None else in_process_batches(recipe, cfg.seed)
        try:
            result = train(model, source, job_dir or ctx.job_dir, optim=spec.optim, schedule=spec.schedule,
                           config=cfg, val_batches=data.val or None, control=control,
                           steps_per_epoch=d.batches_per_epoch, device=device, sync=sync)
            pool_stats = pool.stats() if pool is not None else None
        finally:
            if pool is not None:
                pool.close()
            ctx.flush_progress()  # the run's last progress goes out (a run without a stage field has no change to tell)
    if result.stopped == "cancelled":
        ctx.log.info("cancelled at step %d; %s holds the state", result.step,
                     Path(job_dir or ctx.job_dir) / "checkpoints" / "last.pt")
        raise JobCancelled(ctx.cancel_reason or "cancelled")
    return result, pool_stats


def _distilled(spec: TrainSpec, ctx: Any, teacher: torch.nn.Module, data: TrainData, how: SliceInput,
               n_workers: int, teacher_figures: dict[str, Any] | None) -> dict[str, Any]:
    """The teacher's run (or the one an earlier attempt finished: `teacher_figures`), its prediction of the survey
    as pseudo labels, and the student's run on them; the student is the job's model
    (daemon/executor/training/distill.py)."""
    if teacher_figures is not None:
        ctx.log.info("distilling: the teacher was trained by an earlier attempt (%s); not trained again",
                     distill.teacher_file(ctx.job_dir))
    else:
        ctx.log.info("distilling: training the teacher")
        result, pool_stats = _train_stage(spec, ctx, teacher, data, how, n_workers, stage="teacher: ",
                                          share=(0.0, 0.5))
        # the teacher labels the survey with all its passes: there its accuracy counts, not its speed
        path = _write_model(spec, ctx, teacher.cpu(), data, how, result, distill.teacher_file(ctx.job_dir),
                            orientation=_apply_orientation(spec.data))
        teacher_figures = _result(spec, result, path, data, pool_stats, n_workers)
        distill.record_teacher(ctx.job_dir, teacher_figures)
    ctx.progress(0.5, "distilling: predicting the survey", stage="predict")
    pseudo = distill.pseudo_labels(spec, ctx, data.recipe.sampler.labels)
    student_spec = distill.student_spec(spec, ctx)
    student = distill.student_model(spec, student_spec, ctx.job_dir, data.recipe.channels, len(data.classes))
    student_data = dataclasses.replace(data, recipe=distill.student_recipe(
        data.recipe, pseudo, student_spec.data.batches_per_epoch))
    ctx.log.info("distilling: training the student (%d members, %d epochs of %d batches, from %s weights)",
                 spec.distill.members, spec.distill.epochs, student_spec.data.batches_per_epoch, spec.distill.init)
    result, pool_stats = _train_stage(student_spec, ctx, student, student_data, how, n_workers,
                                      job_dir=distill.folder(ctx.job_dir), stage="distilling: ", share=(0.6, 1.0))
    out = _write_model(student_spec, ctx, student.cpu(), student_data, how, result,
                       orientation=student_spec.data.crop.orientation)
    figures = _result(student_spec, result, out, student_data, pool_stats, n_workers)
    student_seconds = figures["train_seconds"]
    figures["train_seconds"] = teacher_figures["train_seconds"] + pseudo["predict_seconds"] + student_seconds
    figures["distill"] = {"teacher": teacher_figures, "pseudo_labels": pseudo, "student_train_seconds":
                          student_seconds, "student_epoch": result.epoch, "student_stopped": result.stopped}
    return figures


def _refitted(spec: TrainSpec, ctx: Any, model: torch.nn.Module, data: TrainData, how: SliceInput, n_workers: int,
              selection: TrainResult | None, start: TrainSection, initial: dict | None = None) -> dict[str, Any]:
    """The selection run (or the one an earlier attempt finished), then the refit run on every labelled point for
    the epochs the selection kept; the refit's model is the job's (daemon/executor/training/refit.py). Both start
    from the same weights: the seeded initial ones, or `initial` (pretrained)."""
    if selection is not None:
        ctx.log.info("refit: the selection run was finished by an earlier attempt (%s); not run again",
                     refit.folder(ctx.job_dir) / "selection.json")
    else:
        selection, pool_stats = _train_stage(spec, ctx, model, data, how, n_workers, stage="selecting: ",
                                             share=(0.0, 0.6), reserve=refit.reserve(spec))
        if selection.stopped == "stop_after_epoch":  # the user asked the job to end: no second run
            ctx.log.info("refit: not run, the selection was stopped by request (stop_after_epoch); its model is "
                         "the job's")
            out = _write_model(spec, ctx, model.cpu(), data, how, selection)
            return {**_result(spec, selection, out, data, pool_stats, n_workers), "refit": {"skipped": True}}
        refit.record_selection(ctx.job_dir, selection)
    epochs = refit.kept_epochs(spec, selection.epoch, selection.best_epoch)
    refit_spec = refit.refit_spec(spec.model_copy(update={"train": resume_config(start, ctx, finished=True)}),
                                  ctx, epochs)
    torch.manual_seed(spec.train.seed)  # the selection's initial weights
    fresh = build_model(spec.model.name, data.recipe.channels, len(data.classes), list(spec.data.crop.size),
                        spec.model.params)
    if initial is not None:
        fresh.load_state_dict(initial)
    every = refit.every_point(data, epochs)
    ctx.log.info("refit: training again on all %d labelled points for %d epochs (the selection kept epoch %s of %d; "
                 "it stopped: %s)", every.split["refit_points"], epochs, selection.best_epoch, selection.epoch,
                 selection.stopped)
    result, pool_stats = _train_stage(refit_spec, ctx, fresh, every, how, n_workers,
                                      job_dir=refit.folder(ctx.job_dir), stage="refit: ", share=(0.6, 1.0))
    both = refit.merged(selection, result)
    out = _write_model(spec, ctx, fresh.cpu(), every, how, both)
    figures = _result(spec, both, out, every, pool_stats, n_workers)
    figures["train_seconds"] = selection.train_seconds + result.train_seconds
    figures["refit"] = {"epochs": epochs, "points": every.split["refit_points"], "stopped": result.stopped,
                        "train_seconds": result.train_seconds, "selection_epochs": selection.epoch,
                        "selection_stopped": selection.stopped, "selection_train_seconds": selection.train_seconds}
    return figures


def _n_classes(home: Path, d: DataSection) -> int:
    if d.from_sets:
        from daemon.kinds.train_sets import set_classes

        return len(set_classes(d, home))
    with np.load(picks_file(home, d.survey, d.picks)) as z:
        return len(z["class_names"])


def _rank_group(spec: TrainSpec, ctx: Any, data: TrainData, n_classes: int, n_workers: int) -> RankGroup:
    """Ranks 1..N-1 of a data-parallel run, spawned on this machine; this process joins as rank 0."""
    job = RankJob(spec=spec, n_classes=n_classes, recipe=data.recipe, val=data.val, n_workers=n_workers,
                  worker_nice=ctx.settings.workers.nice, job_dir=str(ctx.job_dir), owner_pid=ctx.daemon_pid,
                  device=str(ctx.device), backend=resolve_backend(spec.train.distributed.backend, str(ctx.device)),
                  init_file=rendezvous_file(ctx.job_dir))
    rank_rows(spec.data.batch_size, 0, job.world)  # refuse an uneven split before spawning anything
    return RankGroup(job)


def _rank0_model(model: torch.nn.Module, sync: Any, device: str) -> torch.nn.Module:
    """Rank 0's model, on its device, SyncBatchNorm on CUDA, its weights broadcast to every rank."""
    if device.startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    sync.broadcast_parameters(model)
    return model


def _make_pool(recipe: Any, n_workers: int, seed: int, ring_slots: int, ctx: Any) -> Any:
    from workers.pool import WorkerPool

    device = ctx.device if str(ctx.device).startswith("cuda") else None
    return WorkerPool(recipe, n_workers=n_workers, seed=seed, ring_slots=ring_slots, owner_pid=ctx.daemon_pid,
                      device=device, nice=ctx.settings.workers.nice)


def _preview_hook(data: TrainData, how: SliceInput, ctx: Any):
    """(image, prediction) of the labelled inline with the current model, for TensorBoard; None when unsupported."""
    if how.orientation == "time":
        ctx.log.info("no preview image: the apply engine does not take time slices yet")
        return None
    if not data.volumes:
        ctx.log.info("no preview image: the example sets' first survey is not in this home")
        return None
    stride = PREVIEW_STRIDE_PATCH if how.kind == "patch" else 1

    def preview(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(data.volumes[0][data.preview_inline], dtype=np.float32)
        try:
            pred = predict_inline(model, data.volumes, data.preview_inline, how, stride=stride, device=ctx.device)
        except PreviewUnsupported as exc:
            ctx.log.info("no preview image: %s", exc)
            pred = np.zeros(image.shape, np.uint8)
        return image, pred
    return preview


def _on_epoch(ctx: Any, state: RunState, epoch: int, step: int, figures: dict[str, float] | None,
              stage: str = "") -> None:
    named = {k if k.startswith("val_") else f"val_{k}": v for k, v in (figures or {}).items()}
    ctx.metrics(epoch=epoch, step=step, **named, **({"stage": stage.rstrip(": ")} if stage else {}))
    state.publish_pool_stats(force=True)
    ctx.log.info("%sepoch %d done at step %d%s", stage, epoch, step, f": {figures}" if figures else "")


def _apply_orientation(d: DataSection, members: int = 1) -> str:
    """How a whole volume is best applied: a 2D model that trained on inline and crossline sections (the swap
    augmentation) predicts both ways and averages (daemon/executor/predict), an ensemble of them with each member
    along one way only ("split": half the forward passes, so twice the speed, for 0.007 of pixel accuracy in the
    mean of eight surveys, docs/prediction.md), else along its training orientation."""
    if d.crop.orientation in ("inline", "crossline") and d.augment.p_swap > 0:
        return "split" if members > 1 else "both"
    return d.crop.orientation


def _write_model(spec: TrainSpec, ctx: Any, model: torch.nn.Module, data: TrainData, how: SliceInput,
                 result: Any, path: Path | None = None, orientation: str | None = None) -> Path:
    """models/<output>.h5 (or `path`) with everything needed to apply it (along `orientation`, default
    _apply_orientation's), and the final preview (for checks) in the job."""
    training, metrics = training_record(result, spec.optim, spec.schedule, spec.train)
    d = spec.data
    info = ModelInfo(
        name=spec.model.name, params=dict(spec.model.params), in_channels=data.recipe.channels,
        n_classes=len(data.classes), input_shape=list(d.crop.size), classes=data.classes,
        input_spec={"channels": data.recipe.channels, "crop": list(d.crop.size), "orientation": d.crop.orientation,
                    "apply_orientation": orientation or _apply_orientation(
                        d, len(members_of(model))),
                    "volumes": list(d.volumes),
                    "context": d.context, "smooth": list(spec.apply.smooth) if spec.apply.smooth else None,
                    "apply_kind": how.kind, "survey": d.survey, "picks": d.picks,
                    "examples": [s["name"] for s in data.trained_on.get("sets", [])]},
        normalisation=data.normalisation, training={**training, "split": data.split},
        metrics=metrics, provenance=provenance(str(ctx.job_id)), trained_on=data.trained_on)
    path = save_model_file(path or model_file(ctx.home, spec.output), model, info)
    ctx.log.info("model written to %s", path)
    if data.volumes:
        stride = PREVIEW_STRIDE_PATCH if how.kind == "patch" else 1
        try:
            final = predict_inline(model, data.volumes, data.preview_inline, how, stride=stride)
        except PreviewUnsupported as exc:  # the same reasons as the TensorBoard previews (_preview_hook)
            ctx.log.info("no final preview: %s", exc)
        else:
            np.save(ctx.job_dir / "preview_final.npy", final)
    return path


def _result(spec: TrainSpec, result: Any, out: Path, data: TrainData, pool_stats: dict | None,
            n_workers: int) -> dict[str, Any]:
    rate = result.samples / result.train_seconds if result.train_seconds > 0 else None
    figures = result.history[-1] if result.history else {}
    return {"model": spec.output, "file": str(out), "stopped": result.stopped, "step": result.step,
            "epoch": result.epoch, "best_value": result.best_value, "best_epoch": result.best_epoch,
            "validation": figures, "samples": result.samples, "train_seconds": result.train_seconds,
            "samples_per_s": rate, "epoch_samples_per_s": [round(r, 2) for r in result.epoch_rates],
            "workers": n_workers, "split": data.split,
            "data_wait_fraction": pool_stats["consumer_wait_fraction"] if pool_stats else None,
            "data_startup_s": pool_stats["startup_wait_s"] if pool_stats else None,
            "preview_inline": data.preview_inline, "trained_on": data.trained_on}


def training_record(result: TrainResult, optim: Any, schedule: Any,
                    config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training, metrics) dicts for a ModelInfo: configs and counters, and the last validation report."""
    training = {**run_config(optim, schedule, config), "step": result.step, "epoch": result.epoch,
                "stopped": result.stopped}
    figures = dict(result.history[-1]) if result.history else {}
    return training, {"best_value": result.best_value, "best_epoch": result.best_epoch, "last": figures,
                      "report": copy.deepcopy(result.report)}
