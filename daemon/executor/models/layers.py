"""Small layer factories shared by the registry models, picking the 2D or 3D variant by spatial rank."""
from __future__ import annotations

from torch import nn


def conv(rank: int, cin: int, cout: int, kernel_size: int = 3) -> nn.Module:
    """A same-padded convolution for 2D or 3D input."""
    cls = nn.Conv2d if rank == 2 else nn.Conv3d
    return cls(cin, cout, kernel_size, padding=kernel_size // 2)


def norm(rank: int, kind: str, channels: int) -> nn.Module:
    """Batch or instance normalisation, or an identity for 'none'."""
    if kind == "batch":
        return (nn.BatchNorm2d if rank == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if rank == 2 else nn.InstanceNorm3d)(channels, affine=True)
    return nn.Identity()


def activation(kind: str) -> nn.Module:
    """The activation named in the model parameters."""
    table = {"elu": nn.ELU, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU}
    return table[kind]()


def max_pool(rank: int) -> nn.Module:
    """2x max pooling; ceil_mode keeps a size-1 axis (thin 3D crops) at 1 instead of 0."""
    return (nn.MaxPool2d if rank == 2 else nn.MaxPool3d)(2, ceil_mode=True)


def dropout(rank: int, rate: float) -> nn.Module:
    """Channel dropout, or an identity when the rate is 0."""
    if rate <= 0:
        return nn.Identity()
    return (nn.Dropout2d if rank == 2 else nn.Dropout3d)(rate)
