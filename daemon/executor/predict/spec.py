"""What an apply runs with: the validated settings (ApplySpec), the device, and batch and chunk sizes by memory.

Torch is imported for the device and its number formats only; daemon/executor/predict/engine.py runs the model,
apply.py drives chunks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import psutil
import torch

from daemon.kinds.predict import ORIENTATIONS_2D, PRECISIONS


# Rough float32 feature-map values a U-Net keeps per input voxel during a forward pass; sizes "auto" batches.
ACTIVATION_FLOATS_PER_VOXEL = 96
BATCH_CAPS = {("fcn", "cpu"): 8, ("fcn", "cuda"): 64, ("patch", "cpu"): 256, ("patch", "cuda"): 2048}
# A chunk's accumulators at most: the executor's memory must not grow with the survey (512 MiB is 27 of F3's
# 951 x 462 inlines); larger chunks are no faster (tiles are whole sections, run once whatever the chunk).
CHUNK_BYTES_MAX = 1 << 29
CPU_BATCH_VOXELS = 1 << 20


class PredictError(ValueError):
    """Bad settings, input or model for a prediction; the message names the problem and the fix."""


@dataclass(frozen=True)
class ApplySpec:
    """Validated apply settings shared by predict_volume and apply_block."""

    kind: str
    normalisation: tuple[tuple[float, float], ...]
    tile: tuple[int, ...] | None = None
    overlap: tuple[int, ...] | None = None
    orientation: str = "inline"
    crop: tuple[int, ...] | None = None
    stride: int = 1
    context: int = 0   # neighbouring sections on each side as extra channels (2D fcn models)
    precision: str = "float32"   # the forward pass's number format, resolved (PRECISIONS less "auto")

    def settings(self) -> dict:
        """JSON-able form, part of the resume key."""
        return {"kind": self.kind, "normalisation": [list(p) for p in self.normalisation],
                "tile": self.tile, "overlap": self.overlap, "orientation": self.orientation,
                "crop": self.crop, "stride": self.stride, "context": self.context, "precision": self.precision}


def make_spec(kind: str, n_channels: int, normalisation, tile, overlap, orientation: str, crop,
              stride: int, context: int = 0, precision: str = "float32") -> ApplySpec:
    """Check the apply options together and return an ApplySpec, or raise PredictError naming each problem.

    ``n_channels`` counts the input volumes; with ``context`` c each volume feeds the model 2c + 1 channels, its
    sections c below to c above the tile's, and ``normalisation`` still has one (mean, std) per volume."""
    if kind not in ("fcn", "patch"):
        raise PredictError(f"kind must be 'fcn' (tiled, fully convolutional) or 'patch' (one crop per voxel), "
                           f"got {kind!r}")
    norm = _normalisation(normalisation, n_channels)
    context = int(context)
    if context < 0:
        raise PredictError(f"context must be >= 0 (neighbouring sections on each side), got {context}")
    if context and (kind != "fcn" or tile is None or len(tile) != 2):
        raise PredictError("context sections apply to 2D fully convolutional models only (kind 'fcn' with a "
                           "2-size tile); patch and 3D models take none")
    if precision not in PRECISIONS or precision == "auto":
        raise PredictError(f"precision must be one of {', '.join(p for p in PRECISIONS if p != 'auto')} once "
                           f"resolved, got {precision!r}")
    if orientation not in ORIENTATIONS_2D:
        raise PredictError(f"orientation must be 'inline', 'crossline', 'both' or 'split', got {orientation!r}")
    if orientation == "split" and len((tile if kind == "fcn" else crop) or ()) == 3:
        raise PredictError("orientation 'split' is for 2D models; a 3D model has no slab orientation")
    if kind == "fcn":
        if tile is None:
            raise PredictError("kind 'fcn' needs tile=(lateral, samples) for a 2D model or (il, xl, samples) for 3D")
        tile_t = tuple(int(t) for t in tile)
        ov = tuple(t // 4 for t in tile_t) if overlap is None else (
            (int(overlap),) * len(tile_t) if isinstance(overlap, int) else tuple(int(o) for o in overlap))
        return ApplySpec("fcn", norm, tile=tile_t, overlap=ov, orientation=orientation, context=context,
                         precision=precision)
    if crop is None or len(crop) not in (2, 3) or min(crop) < 1:
        raise PredictError(f"kind 'patch' needs crop=(h, w) for a 2D model or (d, h, w) for 3D, got {crop!r}")
    if int(stride) < 1:
        raise PredictError(f"stride must be >= 1 (1 = every voxel; n = every n-th voxel, filled), got {stride}")
    return ApplySpec("patch", norm, crop=tuple(int(c) for c in crop), orientation=orientation,
                     stride=int(stride), precision=precision)


def _normalisation(normalisation, n_channels: int) -> tuple[tuple[float, float], ...]:
    if normalisation is None:
        return ((0.0, 1.0),) * n_channels
    pairs = [normalisation] if len(normalisation) == 2 and np.isscalar(normalisation[0]) else list(normalisation)
    if len(pairs) != n_channels:
        raise PredictError(f"normalisation needs one (mean, std) per input volume: {n_channels} volumes, "
                           f"{len(pairs)} pairs")
    out = tuple((float(m), float(s)) for m, s in pairs)
    if any(not s > 0 for _, s in out):
        raise PredictError(f"every std in normalisation must be > 0, got {out}")
    return out


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' means the job's GPU when there is one, the CPU otherwise."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"device {device!r} asked for but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """The number format of the forward pass: 'float32', or 'bfloat16' (autocast: convolutions and matrix
    products in bfloat16, softmax and everything after it in float32). 'auto' is bfloat16 where the device
    computes it natively (a CPU with AVX-512 BF16 or AMX, which oneDNN uses; a CUDA device of compute
    capability 8 or later), float32 elsewhere, where emulated bfloat16 would be slower than float32."""
    if precision not in PRECISIONS:
        raise PredictError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if native_bfloat16(device) else "float32"


def native_bfloat16(device: torch.device) -> bool:
    """Whether the device runs bfloat16 convolutions in hardware."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    # torch's own CPU feature probes (private, hence the getattr): oneDNN would emulate bfloat16 on any AVX-512
    # CPU, and emulated it is slower than float32
    probes = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(probe()) for probe in probes if probe is not None)


def auto_batch_size(kind: str, device: torch.device, item_voxels: int, n_channels: int) -> int:
    """Items per batch that fit a quarter of the device's free memory, capped (bigger helps little on CPU)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = psutil.virtual_memory().available
    per_item = item_voxels * 4 * (n_channels + ACTIVATION_FLOATS_PER_VOXEL)
    cap = BATCH_CAPS[(kind, "cuda" if device.type == "cuda" else "cpu")]
    if device.type == "cpu" and kind == "fcn":
        # On a CPU a batch beyond ~1 M voxels only adds memory traffic: large tiles come one or two at a time.
        cap = min(cap, max(1, CPU_BATCH_VOXELS // item_voxels))
    return int(max(1, min(cap, free // 4 // per_item)))


def _auto_chunk(shape: Sequence[int], n_classes: int, n_channels: int, min_inlines: int) -> int:
    """Inlines per chunk: accumulators within min(512 MiB, 10 % of free RAM), but at least one tile deep."""
    per_inline = shape[1] * shape[2] * 4 * (2 * n_classes + n_channels + 2)
    budget = min(CHUNK_BYTES_MAX, psutil.virtual_memory().available // 10)
    return int(max(1, min(shape[0], max(min_inlines, budget // per_inline))))
