"""Pretraining (train.pretrain, docs/train-job.md "Pretraining"): a new run's start learnt from the whole survey.

The picks show a few looks on part of one line; the cube shows all of them. Before the picks are learnt, each
U-Net (each member of an ensemble) learns for `steps` steps to fill in masked patches of crops drawn anywhere in
the survey, with the job's augmentation: a square grid of `patch` x `patch` cells, each blanked (set to the mean,
0 after standardising) with probability `mask`, and the loss the mean squared error over the blanked voxels.
A head of one output channel per input channel stands in for the class head while it learns, and is dropped
after: the class head keeps the weights it was built with, so the class run starts from the pretrained
features and the same head as without pretraining. The optimiser and the schedule are the job file's (`optim`,
`schedule`), over the pretraining's steps.

The start is written to the job folder's pretrain/start.pt (weights, figures) when it is done: a requeued attempt,
and a refit's fresh model, start from it without learning it again.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from daemon.executor.context import JobCancelled
from daemon.executor.models import layers
from daemon.executor.models.ensemble import members_of
from daemon.executor.models.unet import UNet
from daemon.executor.training.checkpoint import save_checkpoint
from daemon.executor.training.job_data import make_batch
from daemon.executor.training.loop import budget_seconds
from daemon.executor.training.modes import read_start_state
from daemon.executor.training.optim import LRSchedule, build_optimizer
from workers.sampling import LabelVolumeSampler

log = logging.getLogger("seisd.training")

SEED_OFFSET = 104_729  # the pretraining's crops are their own stream, never the class run's batches


def start_file(job_dir: Path) -> Path:
    return Path(job_dir) / "pretrain" / "start.pt"


def finished(job_dir: Path) -> dict[str, Any] | None:
    """The start an earlier attempt of this job wrote ({"model": state dict, "figures": ...}), or None."""
    path = start_file(job_dir)
    return read_start_state(path) if path.is_file() else None


def _unets(model: torch.nn.Module) -> list[UNet]:
    members = members_of(model)
    if not all(isinstance(m, UNet) for m in members):
        raise ValueError("train.pretrain needs model.name unet (each member's class head is replaced while it learns)")
    return members


def anywhere(recipe: Any) -> Any:
    """The job's training recipe with every crop centred anywhere in the survey (its labels are not used)."""
    sampler = recipe.sampler
    return dataclasses.replace(recipe, sampler=LabelVolumeSampler(labels=sampler.labels, shape=sampler.shape))


def masked(x: torch.Tensor, share: float, patch: int, generator: torch.Generator) -> torch.Tensor:
    """A mask [B, 1, *spatial] (1: blanked) of patch-sized cells, each blanked with probability `share`."""
    spatial = x.shape[2:]
    cells = tuple(-(-n // patch) for n in spatial)
    grid = (torch.rand((x.shape[0], 1) + cells, generator=generator) < share).float()
    for axis in range(len(spatial)):
        grid = grid.repeat_interleave(patch, dim=2 + axis)
    return grid[(slice(None), slice(None)) + tuple(slice(0, n) for n in spatial)].to(x.device)


def reconstruction_loss(out: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the blanked voxels; an ensemble's members [M, B, C, ...] each against x."""
    if out.dim() == x.dim() + 1:
        return sum(reconstruction_loss(member, x, mask) for member in out) / out.shape[0]
    weight = mask.expand_as(x)
    return ((out.float() - x) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


def run(model: torch.nn.Module, recipe: Any, spec: Any, job_dir: Path, device: Any, should_stop: Callable[[], bool],
        on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Pretrain `model` in place as spec.train.pretrain says and write pretrain/start.pt; returns its figures
    (steps, seconds on the wall and on train.budget_clock, the mean loss of the first and of the last tenth of
    the steps). When should_stop() turns true it stops at once, writes nothing and returns {"cancelled": True,
    "steps": done}."""
    cfg, seed = spec.train.pretrain, spec.train.seed
    clock = lambda: budget_seconds(spec.train.budget_clock)  # noqa: E731
    members = _unets(model)
    heads = [m.head for m in members]
    channels = recipe.channels
    torch.manual_seed(seed + SEED_OFFSET)
    for m in members:  # a head that gives the input back, in place of the class head while it learns
        m.head = layers.conv(m.rank, heads[0].in_channels, channels, 1)
    model.to(device).train()
    optimizer = build_optimizer(model.parameters(), spec.optim)
    schedule = LRSchedule(optimizer, spec.optim.lr, spec.schedule, cfg.steps)
    crops = anywhere(recipe)
    masks = torch.Generator().manual_seed(seed + SEED_OFFSET)
    started, wall, losses = clock(), time.monotonic(), []
    try:
        for step in range(cfg.steps):
            if should_stop():
                return {"cancelled": True, "steps": step}
            x, _ = make_batch(crops, seed + SEED_OFFSET, step // recipe.batches_per_epoch,
                              step % recipe.batches_per_epoch)
            x = x.to(device)
            mask = masked(x, cfg.mask, cfg.patch, masks)
            schedule.apply(step)
            optimizer.zero_grad(set_to_none=True)
            loss = reconstruction_loss(model(x * (1 - mask)), x, mask)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1, cfg.steps, losses[-1])
    finally:
        for m, head in zip(members, heads):
            m.head = head
    tenth = max(1, len(losses) // 10)
    figures = {"steps": cfg.steps, "seconds": time.monotonic() - wall, "budget_seconds": clock() - started,
               "mask": cfg.mask, "patch": cfg.patch,
               "loss_first": sum(losses[:tenth]) / tenth, "loss_last": sum(losses[-tenth:]) / tenth}
    save_checkpoint(start_file(job_dir), {"model": model.state_dict(), "figures": figures})
    log.info("pretrained %d steps in %.0f s: reconstruction loss %.4f -> %.4f", cfg.steps, figures["seconds"],
             figures["loss_first"], figures["loss_last"])
    return figures


def prepare(spec: Any, ctx: Any, model: torch.nn.Module, recipe: Any, mode: str,
            init_from: str | None) -> tuple[Any, dict | None, dict | None]:
    """A train job's pretraining: the model's start learnt from the whole survey (run), or the one an earlier
    attempt wrote. Returns the job file with the budget that leaves (spent), the start's weights (a refit's fresh
    model takes them too) and the pretraining's figures. Nothing for a resume or transfer run (`mode` as the job
    file says), which starts from init_from's weights. Raises JobCancelled on a cancel."""
    if not spec.train.pretrain.steps:
        return spec, None, None
    if mode != "new":
        ctx.log.info("train.pretrain: not run, a %s run starts from the weights of %s", mode, init_from)
        return spec, None, None
    done = finished(ctx.job_dir)
    if done is not None:
        model.load_state_dict(done["model"])
        learnt = done["figures"]
        ctx.log.info("pretraining: done by an earlier attempt (%s); not run again", start_file(ctx.job_dir))
    else:
        steps = spec.train.pretrain.steps
        ctx.log.info("pretraining: %d steps filling in masked patches of crops anywhere in the survey", steps)

        def on_step(k: int, n: int, loss: float) -> None:
            ctx.progress(0.05 * k / n, f"pretraining step {k}/{n} loss {loss:.4f}", stage="pretrain", step=k,
                         loss=loss)
        learnt = run(model, recipe, spec, ctx.job_dir, ctx.device, ctx.cancelled.is_set, on_step)
        if learnt.get("cancelled"):
            raise JobCancelled(ctx.cancel_reason or "cancelled")
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return spent(spec, learnt["budget_seconds"]), initial, learnt


def spent(spec: Any, seconds: float) -> Any:
    """The job file as the class runs read it: train.max_minutes less what pretraining took (the budget covers
    both)."""
    cfg = spec.train
    if cfg.max_minutes is None:
        return spec
    left = max(cfg.max_minutes - seconds / 60.0, 1e-3)
    return spec.model_copy(update={"train": cfg.model_copy(update={"max_minutes": left})})
