"""The seed's patch classifier: one facies class per crop.

Blocks of conv-conv-norm-activation; every block after the first ends with 2x pooling and dropout; a dense head
maps the flattened features to class logits. Works on 2D crops with channels [B, C, H, W] and on 3D crops
[B, C, D, H, W]. The head's input size depends on the crop, so the crop shape is fixed when the model is built.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from daemon.executor.models import layers


class PatchCNN(nn.Module):
    """Crop classifier returning logits [B, n_classes]."""

    def __init__(self, in_channels: int, n_classes: int, input_shape: Sequence[int], filters: Sequence[int],
                 kernel_size: int, dropout: float, activation: str, norm: str) -> None:
        super().__init__()
        rank = len(input_shape)
        blocks: list[nn.Module] = []
        cin = in_channels
        for index, cout in enumerate(filters):
            parts = [layers.conv(rank, cin, cout, kernel_size), layers.conv(rank, cout, cout, kernel_size),
                     layers.norm(rank, norm, cout), layers.activation(activation)]
            if index > 0:
                parts += [layers.max_pool(rank), layers.dropout(rank, dropout)]
            blocks.append(nn.Sequential(*parts))
            cin = cout
        self.body = nn.Sequential(*blocks)
        with torch.no_grad():  # size the head from a dry run instead of re-deriving the pooling arithmetic
            features = self.body(torch.zeros(1, in_channels, *input_shape)).numel()
        self.head = nn.Linear(features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, n_classes] for crops [B, C, *input_shape]."""
        return self.head(torch.flatten(self.body(x), 1))


def build(in_channels: int, n_classes: int, input_shape: Sequence[int], params: dict) -> PatchCNN:
    """A PatchCNN from resolved registry parameters."""
    return PatchCNN(in_channels, n_classes, input_shape, params["filters"], params["kernel_size"],
                    float(params["dropout"]), params["activation"], params["norm"])
