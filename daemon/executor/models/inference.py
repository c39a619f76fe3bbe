"""A model made ready for prediction: a copy in eval mode with each batch norm folded into the convolution before
it and the activations after them computed in place.

Both change no number a prediction computes (the folded convolution is the same affine map, to float rounding);
they remove two memory passes per convolution, which on a CPU cost as much as a third of the default U-Net's
forward pass (tools/bench_unet_predict.py measures it). The caller's model is never changed, so a model being
trained can be previewed between epochs. The folding applies to the registry's models (unet, patchcnn, and
ensembles of them), whose nn.Sequential blocks are only ever called whole; a user's model (models/user.py) may
index its blocks, so it is copied as it is, or, when it cannot be copied (it holds something deepcopy refuses),
used itself in eval mode as before.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from daemon.executor.models.ensemble import members_of
from daemon.executor.models.patchcnn import PatchCNN
from daemon.executor.models.unet import UNet

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INPLACE = (nn.ReLU, nn.ELU, nn.LeakyReLU)


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` for prediction; the same copy back when given one already made."""
    if getattr(model, "_seisd_inference", False):
        return model
    try:
        ready = copy.deepcopy(model).eval()
    except Exception:  # noqa: BLE001 - whatever a user's module holds: predict with the model itself
        return model.eval()
    if _registry(ready):
        _fold_children(ready)
    for p in ready.parameters():
        p.requires_grad_(False)
    ready._seisd_inference = True
    return ready


def _registry(model: nn.Module) -> bool:
    """True for a registry model, or an ensemble of them."""
    return all(isinstance(m, (UNet, PatchCNN)) for m in members_of(model))


def _fold_children(module: nn.Module) -> None:
    """Fold every Sequential under ``module``, the innermost first."""
    for name, child in list(module.named_children()):
        _fold_children(child)
        if isinstance(child, nn.Sequential):
            setattr(module, name, _fused(child))


def _fused(seq: nn.Sequential) -> nn.Sequential:
    """The layers of one Sequential with conv + batch norm pairs folded, and an activation in place where its
    input is a fresh tensor made by the layer just before it (never the Sequential's own input)."""
    items = list(seq)
    out: list[nn.Module] = []
    i = 0
    while i < len(items):
        layer = items[i]
        nxt = items[i + 1] if i + 1 < len(items) else None
        if isinstance(layer, _CONVS) and isinstance(nxt, _NORMS) and nxt.running_mean is not None:
            out.append(fuse_conv_bn_eval(layer, nxt))
            i += 2
            continue
        if isinstance(layer, _INPLACE) and out and isinstance(out[-1], _CONVS + _NORMS):
            layer = copy.copy(layer)
            layer.inplace = True
        out.append(layer)
        i += 1
    return nn.Sequential(*out)

