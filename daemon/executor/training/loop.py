"""The training loop: any iterable of (x, y) batches in, checkpoints, summaries and a model file out.

x is float32 [B, C, *crop]; y is int64 [B] (one class per crop) or [B, *crop] (segmentation), -1 = unlabelled
and ignored by the loss and the metrics. Batches may also be objects with .x and .y (the worker pool's).

A batch source is either an iterable, iterated once per epoch, or a callable (epoch, start_batch) -> iterable
giving that epoch's batches from index start_batch on. Resume uses the second form to continue the data stream
exactly where it stopped; with a plain iterable, the first start_batch batches of the epoch are read and dropped.
"""
from __future__ import annotations

import itertools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from daemon.executor.training import consistency, metrics
from daemon.executor.training.checkpoint import atomic_write, save_checkpoint
from daemon.executor.training.control import Progress, TrainControl, TrainResult
from daemon.executor.training.modes import (freeze_for_transfer, load_matching, load_resumed, read_start_state,
                                            set_train_mode)
from daemon.executor.training.optim import LRSchedule, build_optimizer, run_config
from daemon.executor.training.summary import (SilentSummary, SilentTensorBoard, SummaryFile, TensorBoardLog,
                                              log_interval)
from daemon.kinds.train_spec import OptimSection, ScheduleSection, TrainSection

log = logging.getLogger("seisd.training")

BatchSource = Iterable[Any] | Callable[[int, int], Iterable[Any]]


def _unpack(batch: Any, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = (batch.x, batch.y) if hasattr(batch, "x") else batch
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True).long()


def sparse_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, labelled: int) -> torch.Tensor:
    """Cross-entropy summed over the labelled samples (y != -1) / their count: their mean, and 0-safe.

    Logits with one axis more than a single model's, [M, B, n_classes, ...], are an ensemble's members in training
    mode (daemon/executor/models/ensemble.py): each member is trained on its own loss, and the loss is their mean."""
    if logits.dim() == y.dim() + 2:
        return sum(sparse_loss(member, y, weight, labelled) for member in logits) / logits.shape[0]
    return F.cross_entropy(logits.float(), y, weight=weight, ignore_index=-1, reduction="sum") / labelled


def budget_seconds(clock: str) -> float:
    """Seconds on train.budget_clock `clock`: the wall's, or this process's CPU seconds per torch thread (slower
    than the wall on a machine shared with other work, so the budget buys the epochs it buys on an idle one)."""
    if clock == "cpu":
        return time.process_time() / max(1, torch.get_num_threads())
    return time.monotonic()


def _epoch_batches(source: BatchSource, epoch: int, start: int) -> Iterator[Any]:
    if callable(source) and not hasattr(source, "__iter__"):
        return iter(source(epoch, start))
    return itertools.islice(iter(source), start, None)


class Trainer:
    """One training run; construct, then call run(). See train() for the arguments."""

    def __init__(self, model: nn.Module, train_batches: BatchSource, job_dir: str | Path,
                 optim: OptimSection, schedule: ScheduleSection, config: TrainSection,
                 val_batches: BatchSource | None, control: TrainControl | None,
                 steps_per_epoch: int | None, device: str | torch.device, sync: Any = None) -> None:
        self.model, self.train_batches, self.val_batches = model, train_batches, val_batches
        # Data-parallel (daemon.executor.training.distributed.RankSync): gradients and label counts are summed over the
        # ranks each step; only rank 0 writes checkpoints, summary.h5 and TensorBoard.
        self.sync = sync
        self.writes = sync is None or sync.rank == 0
        self.world = sync.world if sync is not None else 1
        self.job_dir = Path(job_dir)
        self.optim_cfg, self.schedule_cfg, self.cfg = optim, schedule, config
        self.control = control or TrainControl()
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.steps_per_epoch = steps_per_epoch or (len(train_batches) if hasattr(train_batches, "__len__") else None)
        self.step = self.epoch = self.batch_index = self._last_batch_size = 0
        self.elapsed_before = 0.0  # seconds this run had trained before a resume (train.max_minutes counts them)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.frozen: list[nn.Module] = []
        self.trainable_layers: int | None = None  # a transfer run's, kept in checkpoints so a resume freezes the same
        self.summary = SummaryFile(self.job_dir / "summary.h5") if self.writes else SilentSummary()
        self.tb: TensorBoardLog | SilentTensorBoard | None = None
        self.result = TrainResult("finished", 0, 0, None, None)
        self.class_weights = (torch.tensor(config.class_weights, dtype=torch.float32, device=self.device)
                              if config.class_weights else None)
        self._prepare()

    # ---- set-up -------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.cfg
        start: dict[str, Any] | None = read_start_state(cfg.init_from) if cfg.mode != "new" else None
        torch.manual_seed(cfg.seed)
        if cfg.mode == "resume":
            load_resumed(self.model, start, self.control.class_names)
            if start.get("transfer_trainable_layers"):  # resuming a transfer run: the same layers stay frozen
                self.trainable_layers = int(start["transfer_trainable_layers"])
        elif cfg.mode == "transfer":
            load_matching(self.model, start["model"])
            self.trainable_layers = cfg.trainable_layers
        if self.trainable_layers is not None:
            self.frozen = freeze_for_transfer(self.model, self.trainable_layers)
        self.model.to(self.device)
        if self.cuda and cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model.parameters(), self.optim_cfg)
        self.total_steps = cfg.max_steps or (cfg.epochs * self.steps_per_epoch if self.steps_per_epoch else None)
        if self.schedule_cfg.kind == "cosine" and self.total_steps is None:
            raise ValueError("schedule.kind=cosine needs train.max_steps or a batch source with a length")
        self.log_every = log_interval(cfg.log_every_steps, self.total_steps)  # a short run too draws a curve
        self.maximize = cfg.early_stop.metric != "val_loss"
        self.schedule = LRSchedule(self.optimizer, self.optim_cfg.lr, self.schedule_cfg, self.total_steps or 1,
                                   self.maximize)
        self.amp_dtype = ((torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                          if self.cuda and cfg.amp else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if cfg.mode == "resume":
            self._restore(start)
        else:
            self.summary.truncate_after(0, -1)  # a fresh run keeps no row of an earlier one

    @property
    def _best_path(self) -> Path:
        """checkpoints/best.pt of this job (the best weights so far, written when they improve)."""
        return self.job_dir / "checkpoints" / "best.pt"

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue optimiser, schedule, counters, random state and early stopping from a checkpoint."""
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_index = int(state.get("batch_index", 0))
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if state.get("from_model_file"):
            log.info("resume from a model file (trained %d steps): its weights; steps, epochs, optimiser and schedule "
                     "start afresh", int(state.get("model_step", 0)))
        else:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.scaler.load_state_dict(state.get("scaler") or {})
            torch.set_rng_state(state["rng_cpu"])
            if self.cuda and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"])
            early = state["early_stop"]
            self.best_value, self.best_epoch, self.bad_epochs = early["best_value"], early["best_epoch"], \
                early["bad_epochs"]
            # best.pt lies beside the checkpoint resumed from: this job's own after a requeue, another job's when a
            # user resumes from it (train.init_from). Without it a run resumed after its last epoch would end with
            # its last weights instead of the best ones. Copied here, so a later resume of this job finds it too.
            best_file = Path(self.cfg.init_from).parent / "best.pt"
            if best_file.is_file():
                self.best_state = read_start_state(best_file)["model"]
                if self.writes and best_file.resolve() != self._best_path.resolve():
                    atomic_write(self._best_path, lambda handle: handle.write(best_file.read_bytes()))
        self.summary.truncate_after(self.step, self.epoch)
        log.info("resuming at step %d, epoch %d, batch %d", self.step, self.epoch, self.batch_index)

    # ---- the run --------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train until the epochs or steps are done, early stopping triggers, or a control hook stops it."""
        self.tb = (TensorBoardLog(self.job_dir / "tensorboard", self.control.class_names) if self.writes
                   else SilentTensorBoard())
        self._last_checkpoint = time.monotonic()
        self._run_start = self._epoch_end = self._budget_clock()
        try:
            while self.epoch < self.cfg.epochs and self.result.stopped == "finished":
                if not self._run_epoch():
                    break
                self._end_epoch()
        finally:
            self.summary.flush()
            self.tb.close()
        if self.result.stopped != "cancelled" and self.cfg.early_stop.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.result.step, self.result.epoch = self.step, self.epoch
        self.result.best_value, self.result.best_epoch = self.best_value, self.best_epoch
        return self.result

    def _run_epoch(self) -> bool:
        """Train one epoch from self.batch_index; False when the run must stop mid-epoch."""
        set_train_mode(self.model, self.frozen)
        epoch_start = time.monotonic()
        samples_before = self.result.samples
        try:
            return self._epoch_steps()
        finally:
            seconds = time.monotonic() - epoch_start
            self.result.train_seconds += seconds
            if seconds > 0:
                self.result.epoch_rates.append((self.result.samples - samples_before) / seconds)

    def _epoch_steps(self) -> bool:
        tick, samples_since = time.monotonic(), 0  # the window of the progress rate
        last_loss = None
        for batch in _epoch_batches(self.train_batches, self.epoch, self.batch_index):
            x, y = _unpack(batch, self.device, self.cuda and self.cfg.channels_last)
            loss = self._train_step(x, y)
            self.batch_index += 1
            rows = x.shape[0] * self.world  # every rank takes the same share of the global batch
            samples_since += rows
            self.result.samples += rows
            self._last_batch_size = rows
            if loss is None:
                continue
            last_loss = loss
            now = time.monotonic()
            if now - tick >= self.cfg.progress_interval_s:
                self._report(loss, samples_since / (now - tick))
                tick, samples_since = now, 0
            if self.control.should_stop():
                self._save_last()
                self.result.stopped = "cancelled"
                return False
            if self.cfg.max_steps and self.step >= self.cfg.max_steps:
                self.result.stopped = "max_steps"
                self._end_epoch(partial=True)
                return False
            self._maybe_checkpoint()
        if last_loss is not None and samples_since:  # every epoch reports, however short
            self._report(last_loss, samples_since / max(time.monotonic() - tick, 1e-9))
        return True

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        """One optimiser step; None (and no step) when the batch has no labelled sample."""
        labelled = int((y != -1).sum())
        if self.sync is not None:
            labelled = self.sync.exchange(labelled)  # the global count; also relays rank 0's controls
        if labelled == 0:
            log.debug("batch %d of epoch %d has no labels; skipped", self.batch_index, self.epoch)
            return None
        lr = self.schedule.apply(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        autocast = dict(device_type=self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                        enabled=self.amp_dtype is not None)
        own = self.cfg.consistency
        if own.weight > 0:  # the model's confident classes on the batch, then a noisier view of it
            target, unlabelled = consistency.targets(self.model, x, y, own.threshold, autocast)
            noise = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
            x, y, target = consistency.noisier(x, y, target, own.noise_std, noise)
        with torch.autocast(**autocast):
            logits = self.model(x)
        loss = sparse_loss(logits, y, self.class_weights, labelled)
        if own.weight > 0 and unlabelled:
            loss = loss + own.weight * sparse_loss(logits, target, None, unlabelled)
        self.scaler.scale(loss).backward()
        if self.sync is not None:  # sum of the ranks' gradients = the gradient of the whole batch
            loss = self.sync.reduce_gradients(self.model, loss.detach())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss became {value} at step {self.step}: lower optim.lr or check the inputs")
        self.summary.add_step(self.step, self.epoch, value, lr)
        self.result.losses.append(value)
        self.step += 1
        if self.step % self.log_every == 0:
            self.tb.scalars(self.step, {"train/loss": value, "train/lr": lr})
            log.info("epoch %d step %d loss %.4f lr %.3g", self.epoch, self.step, value, lr)
        return value

    def _report(self, loss: float, samples_per_s: float) -> None:
        if self.control.on_progress is None:
            return
        eta = None
        if self.total_steps and samples_per_s > 0 and self._last_batch_size:
            eta = (self.total_steps - self.step) * self._last_batch_size / samples_per_s
        self.control.on_progress(Progress(self.epoch, self.step, self.total_steps, loss,
                                          self.optimizer.param_groups[0]["lr"], samples_per_s, eta))

    def _end_epoch(self, partial: bool = False) -> None:
        """Validate, log, update early stopping and the plateau schedule, checkpoint."""
        if not partial:
            self.epoch += 1
            self.batch_index = 0
        now = self._budget_clock()
        last_epoch, self._epoch_end = now - self._epoch_end, now  # training and validation of this epoch
        if self.sync is not None:  # batch-norm statistics differ per rank: validate (and save) their mean
            self.sync.average_buffers(self.model)
        figures = self._validate()
        if figures is not None:
            self._track_best(figures)
            self.schedule.end_epoch(figures[self.cfg.early_stop.metric])
        self._save_last()
        if self.control.on_epoch is not None:
            self.control.on_epoch(self.epoch, self.step, figures)
        if partial:
            return
        if self.control.stop_after_epoch():
            self.result.stopped = "stop_after_epoch"
        elif self._out_of_time(last_epoch):
            log.info("time limit: another epoch would end past train.max_minutes=%g after %.0f s (%s clock)",
                     self.cfg.max_minutes, self.elapsed(), self.cfg.budget_clock)
            self.result.stopped = "time_limit"
        elif (self.cfg.early_stop.enabled and figures is not None and self.bad_epochs >= self.cfg.early_stop.patience
              and self.epoch >= self.cfg.early_stop.min_epochs):
            log.info("early stop after epoch %d: no gain in %s for %d epochs", self.epoch,
                     self.cfg.early_stop.metric, self.bad_epochs)
            self.result.stopped = "early_stop"

    def elapsed(self) -> float:
        """Seconds of this run so far on train.budget_clock, validation and checkpoints included, and before a
        resume."""
        return self.elapsed_before + self._budget_clock() - self._run_start

    def _budget_clock(self) -> float:
        return budget_seconds(self.cfg.budget_clock)

    def _out_of_time(self, last_epoch: float) -> bool:
        """train.max_minutes: would one more epoch, as long as the last one, plus the epochs control.reserve_epochs
        keeps for a run to follow (a refit), end past it? Never before train.budget_min_epochs in all: the epochs
        run and the reserved ones together, so the floor is the epochs the job trains whatever runs it has.
        Decided on every rank together (any rank out of time stops them all)."""
        if self.cfg.max_minutes is None or self.epoch >= self.cfg.epochs:
            return False
        reserved = self.control.reserve_epochs(self.epoch, self.best_epoch)
        if self.epoch + reserved < self.cfg.budget_min_epochs:
            return False
        late = self.elapsed() + last_epoch * (1 + reserved) > self.cfg.max_minutes * 60
        return self.sync.any_rank(late) if self.sync is not None else late

    def _validate(self) -> dict[str, float] | None:
        """Validation figures and confusion matrix, logged everywhere; None without validation batches."""
        if self.val_batches is None:
            return None
        cm, loss_sum, count = None, 0.0, 0
        self.model.eval()
        with torch.inference_mode():
            for batch in _epoch_batches(self.val_batches, self.epoch, 0):
                x, y = _unpack(batch, self.device, self.cuda and self.cfg.channels_last)
                logits = self.model(x).float()
                loss_sum += float(F.cross_entropy(logits, y, ignore_index=-1, reduction="sum"))
                count += int((y != -1).sum())
                part = metrics.confusion_matrix(y.cpu().numpy(), logits.argmax(1).cpu().numpy(), logits.shape[1])
                cm = part if cm is None else cm + part
        set_train_mode(self.model, self.frozen)
        if cm is None:
            return None
        report = metrics.classification_report(cm, self.control.class_names)
        figures = {"val_loss": loss_sum / max(count, 1)} | {
            k: report[k] for k in ("pixel_accuracy", "mean_class_accuracy", "macro_f1", "weighted_f1")}
        self.result.history.append(figures)
        self.result.report = report
        self.summary.add_epoch(self.epoch, figures, cm)
        self.tb.scalars(self.step, {f"val/{k}": v for k, v in figures.items()})
        self.tb.confusion(self.step, cm)
        if self.control.preview is not None:
            image, prediction = self.control.preview(self.model)
            self.tb.preview(self.step, image, prediction, cm.shape[0])
        log.info("epoch %d validation\n%s", self.epoch, metrics.format_report(report))
        return figures

    def _track_best(self, figures: dict[str, float]) -> None:
        value = figures[self.cfg.early_stop.metric]
        delta = self.cfg.early_stop.min_delta
        better = self.best_value is None or (value > self.best_value + delta if self.maximize
                                             else value < self.best_value - delta)
        if not better:
            self.bad_epochs += 1
            return
        self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
        # a copy, not a reference: later steps update the live tensors in place
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.writes:
            save_checkpoint(self._best_path,
                            {"model": self.best_state, "step": self.step, "epoch": self.epoch, "value": value,
                             "metric": self.cfg.early_stop.metric})

    # ---- checkpoints --------------------------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        every_steps, every_min = self.cfg.checkpoint_every_steps, self.cfg.checkpoint_every_minutes
        due = bool(every_steps) and self.step % every_steps == 0
        due |= bool(every_min) and time.monotonic() - self._last_checkpoint >= every_min * 60
        if due:
            self._save_last()

    def _save_last(self) -> None:
        """Write checkpoints/last.pt with everything resume needs, after the summary rows up to it.

        The summary is flushed first: a kill between the two then leaves rows past the checkpoint (a resume truncates
        them), never a checkpoint past the rows (a gap in the loss history)."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                 "step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
                 "rng_cpu": torch.get_rng_state(), "elapsed_s": self.elapsed(),
                 "rng_cuda": torch.cuda.get_rng_state() if self.cuda else None,
                 "early_stop": {"best_value": self.best_value, "best_epoch": self.best_epoch,
                                "bad_epochs": self.bad_epochs},
                 "config": run_config(self.optim_cfg, self.schedule_cfg, self.cfg),
                 "transfer_trainable_layers": self.trainable_layers if self.frozen else None}
        self.summary.flush()
        if self.writes:
            save_checkpoint(self.job_dir / "checkpoints" / "last.pt", state)
        self._last_checkpoint = time.monotonic()


def train(model: nn.Module, train_batches: BatchSource, job_dir: str | Path, *,
          optim: OptimSection | None = None, schedule: ScheduleSection | None = None,
          config: TrainSection | None = None, val_batches: BatchSource | None = None,
          control: TrainControl | None = None, steps_per_epoch: int | None = None,
          device: str | torch.device = "cpu", sync: Any = None) -> TrainResult:
    """Train model on train_batches, writing checkpoints/, summary.h5 and tensorboard/ under job_dir.

    With `sync` (a daemon.executor.training.distributed.RankSync) this process is one rank of a data-parallel run: its
    batches are its share of each global batch, and only rank 0 writes files.

    The model is changed in place (on return it holds the best weights when early stopping keeps them).
    Write the model file afterwards with daemon.executor.modelfile.save_model_file and training_record(result, ...).
    """
    trainer = Trainer(model, train_batches, job_dir, optim or OptimSection(), schedule or ScheduleSection(),
                      config or TrainSection(), val_batches, control, steps_per_epoch, device, sync)
    return trainer.run()
