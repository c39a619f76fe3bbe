"""Several copies of one architecture trained side by side, predicting together (a deep ensemble).

Members differ only by their initial weights (drawn one after the other from the run's seed); they see the same
batches, and each is trained on its own loss, so they stay independent models. Averaging their class probabilities
removes much of the error that depends on the draw of the initial weights: on the facies experiment three 64x64
U-Nets score 0.841-0.854 over the cube alone and more together (docs/train-job.md has the figures).

Training mode returns every member's logits stacked on a new first axis [M, B, n_classes, ...]; the training loop
averages the members' losses (daemon.executor.training.loop.sparse_loss). Eval mode returns log(mean of the members'
softmax), so that a softmax of the output is exactly the averaged probabilities, and an argmax is the ensemble's
class: validation and any other caller use an ensemble like any single model. The apply engine
(daemon/executor/predict/engine.py) runs the members itself and averages their probabilities (the same numbers
without the log and back), which also lets it run each member along one orientation only ("split").
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


class Ensemble(nn.Module):
    """`members` models built by `make`; state-dict keys are members.<i>.<member key>."""

    def __init__(self, make: Callable[[], nn.Module], members: int) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}")
        self.members = nn.ModuleList(make() for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked member logits while training; log of the mean member probabilities in eval mode."""
        outs = [member(x) for member in self.members]
        if self.training:
            return torch.stack(outs)
        return mean_log_probability(torch.stack(outs))


def members_of(model: nn.Module) -> list[nn.Module]:
    """The networks a model is made of: an ensemble's members, or the model itself."""
    return list(model.members) if isinstance(model, Ensemble) else [model]


def mean_log_probability(members: torch.Tensor) -> torch.Tensor:
    """Members' logits [M, B, n_classes, ...] -> the log of their mean probabilities [B, n_classes, ...]."""
    logp = torch.log_softmax(members.float(), dim=2)
    return torch.logsumexp(logp, dim=0) - math.log(members.shape[0])
