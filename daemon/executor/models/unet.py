"""A small 2D/3D U-Net for segmentation from sparse labels.

Fully convolutional, so a trained model predicts whole slabs of a cube at once instead of one crop per voxel.
Inputs of any spatial size are accepted: the forward pass pads each axis up to a multiple of 2**depth
(replicate padding, so the border sees plausible amplitudes rather than zeros) and crops the logits back.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from daemon.executor.models import layers


def _level(rank: int, cin: int, cout: int, convs: int, norm: str, act: str) -> nn.Sequential:
    parts: list[nn.Module] = []
    for i in range(convs):
        parts += [layers.conv(rank, cin if i == 0 else cout, cout), layers.norm(rank, norm, cout),
                  layers.activation(act)]
    return nn.Sequential(*parts)


class UNet(nn.Module):
    """Segmentation network returning logits [B, n_classes, *spatial] for input [B, C, *spatial]."""

    def __init__(self, rank: int, in_channels: int, n_classes: int, base: int, depth: int, growth: float,
                 convs_per_block: int, dropout: float, norm: str, activation: str) -> None:
        super().__init__()
        self.rank, self.depth = rank, depth
        widths = [max(1, int(round(base * growth ** i))) for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for width in widths[:-1]:
            self.down.append(_level(rank, cin, width, convs_per_block, norm, activation))
            cin = width
        self.pool = layers.max_pool(rank)
        self.bottom = nn.Sequential(_level(rank, cin, widths[-1], convs_per_block, norm, activation),
                                    layers.dropout(rank, dropout))
        self.reduce = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(depth)):
            # nearest upsampling and a 1x1 conv: cheaper than a transposed conv and free of checkerboard artefacts
            self.reduce.append(layers.conv(rank, widths[level + 1], widths[level], 1))
            self.up.append(_level(rank, 2 * widths[level], widths[level], convs_per_block, norm, activation))
        self.head = layers.conv(rank, widths[0], n_classes, 1)

    def valid_input_size(self, n: int) -> int:
        """The size the forward pass pads an axis of length n to (the next multiple of 2**depth)."""
        step = 2 ** self.depth
        return -(-n // step) * step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits with the input's spatial size."""
        spatial = x.shape[2:]
        pads: list[int] = []
        for n in reversed(spatial):  # F.pad lists the last axis first
            pads += [0, self.valid_input_size(n) - n]
        if any(pads):
            x = F.pad(x, pads, mode="replicate")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for reduce, block, skip in zip(self.reduce, self.up, reversed(skips)):
            # the 1x1 conv first: the same numbers as after the upsampling (each output voxel is a copy), at a
            # quarter (3D: an eighth) of the cost, and the upsampling then copies half the channels
            x = F.interpolate(reduce(x), scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        logits = self.head(x)
        index = (slice(None), slice(None)) + tuple(slice(0, n) for n in spatial)
        return logits[index]


def build(in_channels: int, n_classes: int, input_shape: Sequence[int], params: dict) -> UNet:
    """A UNet from resolved registry parameters; the rank comes from input_shape."""
    return UNet(len(input_shape), in_channels, n_classes, params["base"], params["depth"], float(params["growth"]),
                params["convs_per_block"], float(params["dropout"]), params["norm"], params["activation"])
