"""Starting points of a run: weights from a checkpoint or a model file, and freezing for transfer learning."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from daemon.executor.models.ensemble import Ensemble, members_of
from daemon.executor.training.checkpoint import load_checkpoint
from workers.regular_files import UnreadableFile, check_regular

log = logging.getLogger("seisd.training")


class InitError(Exception):
    """The file named by train.init_from cannot start this run."""


def read_start_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint's full state, or for a model file (.h5) its weights and class names only: a run started from a
    model file (a retrain on a grown pick set) counts its steps and epochs from 0 with a fresh optimiser and
    schedule, so `train.epochs` is the number of epochs it adds."""
    file = Path(path)
    try:
        check_regular(file)  # a FIFO or a device put in its place since submit is refused, not waited on
    except UnreadableFile as exc:
        raise InitError(f"train.init_from: {exc}") from None
    if file.suffix in (".h5", ".hdf5"):
        from daemon.executor.modelfile import read_model_info, read_weights

        info = read_model_info(file)
        return {"model": read_weights(file), "step": 0, "epoch": 0, "batch_index": 0, "from_model_file": True,
                "classes": list(info.classes or []), "model_step": int(info.training.get("step", 0))}
    return load_checkpoint(file)


def load_resumed(model: nn.Module, start: dict[str, Any], class_names: list[str] | None) -> None:
    """A resume's weights into `model`; a model file trained on other classes than the data's is refused by name
    (transfer mode starts a new head for a new class list), as is any other state that does not fit."""
    before = start.get("classes")
    if before and class_names and list(before) != list(class_names):
        added = [c for c in class_names if c not in before]
        raise InitError(f"train.init_from: the model was trained on classes {list(before)}, the data has "
                        f"{list(class_names)}" + (f" (new: {', '.join(added)})" if added else " (another order)") +
                        "; train.mode: resume needs the same classes in the same order: use train.mode: transfer "
                        "(its head starts afresh for the new class list) or train anew")
    try:
        model.load_state_dict(start["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise InitError(f"train.init_from: its weights do not fit this job's model ({' '.join(first)}); resume "
                        "needs the same model, parameters and classes (train.mode: transfer loads what fits)") from None


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load the entries of state whose name and shape fit model; return the names left at their initial values.

    Transfer to a different number of classes works this way: the head's weights do not fit and stay freshly
    initialised (and trainable, being the last layer).
    """
    own = model.state_dict()
    if isinstance(model, Ensemble) and not any(k.startswith("members.") for k in state):
        # a single model's weights start every member (their freshly initialised heads still differ)
        state = {f"members.{i}.{k}": v for i in range(len(model.members)) for k, v in state.items()}
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fitting))
    own.update(fitting)
    model.load_state_dict(own)
    if skipped:
        log.info("transfer: %d tensors kept their initial values (no match in the source): %s",
                 len(skipped), ", ".join(skipped[:8]))
    return skipped


def parameter_layers(model: nn.Module) -> list[nn.Module]:
    """Modules that own parameters directly, in registration order (the order of the forward pass for the
    registry models); transfer counts layers in this list from the end."""
    return [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]


def freeze_for_transfer(model: nn.Module, trainable_layers: int) -> list[nn.Module]:
    """Freeze every parameterised layer except the last `trainable_layers` (of each member of an ensemble);
    return the frozen ones."""
    frozen: list[nn.Module] = []
    for unit in members_of(model):
        layers = parameter_layers(unit)
        if trainable_layers >= len(layers):
            log.warning("transfer: trainable_layers=%d covers all %d layers; nothing is frozen",
                        trainable_layers, len(layers))
            return []
        frozen += layers[:len(layers) - trainable_layers]
    for module in frozen:
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    """model.train(), but frozen layers stay in eval mode so their normalisation statistics do not drift."""
    model.train()
    for module in frozen:
        module.eval()
