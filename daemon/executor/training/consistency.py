"""Learning from the unlabelled voxels of each batch (train.consistency, docs/train-job.md "Consistency").

Each step, the model in training mode labels the batch as it came (no gradient); where its top probability (an
ensemble's: the members' mean) reaches `threshold` on a voxel no pick labels, that class becomes the voxel's target.
The step then trains on a noisier view of the same batch (Gaussian noise, a gain per crop, half the crops
mirrored along the section), the picks' labels and these targets together: the targets' cross-entropy is summed
over the confident voxels, divided by all the batch's unlabelled voxels and scaled by `weight`. One extra forward
pass, without a gradient, per step. With data.unlabelled part of each batch lies anywhere in the survey, so the
cube away from the picks takes part; an ensemble's members all learn the members' mean there.
"""
from __future__ import annotations

import torch

from daemon.executor.models.ensemble import mean_log_probability


def targets(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threshold: float,
            autocast: dict) -> tuple[torch.Tensor, int]:
    """Class targets for the unlabelled voxels of y (-1 where unsure or labelled) and the count of unlabelled
    voxels. `autocast`: torch.autocast's arguments of the training step."""
    with torch.no_grad(), torch.autocast(**autocast):
        logits = model(x).float()
    if logits.dim() == y.dim() + 2:  # an ensemble's members [M, B, C, ...]: their mean probability
        probs = mean_log_probability(logits).exp()
    else:
        probs = torch.softmax(logits, dim=1)
    top, cls = probs.max(dim=1)
    unlabelled = y == -1
    return torch.where(unlabelled & (top >= threshold), cls, -1), int(unlabelled.sum())


def noisier(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, noise_std: float,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's noisier view, labels and targets moved with it: noise, a gain in [0.8, 1.25] per crop, and
    every other crop mirrored along the section's lateral axis (its second to last)."""
    rows = x.shape[0]
    shape = (rows,) + (1,) * (x.dim() - 1)
    gain = torch.exp(torch.empty(shape).uniform_(-0.223, 0.223, generator=generator)).to(x.device)
    noise = torch.randn(x.shape, generator=generator).to(x.device) * noise_std
    x = x * gain + noise
    flip = torch.arange(rows, device=x.device) % 2 == 1
    lateral = x.dim() - 2

    def mirror(t: torch.Tensor, axis: int) -> torch.Tensor:
        out = t.clone()
        out[flip] = torch.flip(t[flip], dims=(axis,))
        return out

    return mirror(x, lateral), mirror(y, lateral - 1), mirror(target, lateral - 1)
