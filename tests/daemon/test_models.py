"""Registry models build and run on 2D and 3D crops; submit-time checks need no torch; user model files."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from daemon.executor.models import ModelParamsError, build_model, model_names, validate_model_params
from daemon.kinds.user_model_check import check_user_model


@pytest.mark.parametrize("shape", [(24, 24), (12, 12, 8), (16, 16, 1)])
def test_patchcnn_classifies_2d_and_3d_crops(shape: tuple[int, ...]) -> None:
    model = build_model("patchcnn", 3, 9, shape, {"filters": [4, 6, 8]})
    out = model(torch.randn(2, 3, *shape))
    assert out.shape == (2, 9)


@pytest.mark.parametrize("shape", [(37, 50), (9, 13, 20), (32, 32)])
def test_unet_keeps_any_spatial_size(shape: tuple[int, ...]) -> None:
    model = build_model("unet", 2, 4, shape, {"base": 4, "depth": 3})
    out = model(torch.randn(1, 2, *shape))
    assert out.shape == (1, 4, *shape)
    assert model.valid_input_size(37) == 40 and model.valid_input_size(32) == 32


def test_unet_loss_learns_only_from_labelled_voxels() -> None:
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, (16, 16), {"base": 4, "depth": 2, "norm": "none"})
    x = torch.randn(1, 1, 16, 16)
    y = torch.full((1, 16, 16), -1)
    y[0, 5, 7] = 2
    logits = model(x)
    F.cross_entropy(logits, y, ignore_index=-1).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # the same loss computed from the one labelled voxel by hand: identical gradients
    F.cross_entropy(model(x)[:, :, 5, 7], torch.tensor([2])).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], msg=name)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_validation_names_every_problem() -> None:
    problems = validate_model_params("patchcnn", {"filters": [], "dropout": 2.0, "colour": "red"}, (24,))
    text = "\n".join(problems)
    assert "input.crop" in text and "model.params.filters" in text
    assert "model.params.dropout" in text and "model.params.colour" in text
    assert validate_model_params("resnet", {}, (8, 8))[0].startswith("model.name")
    assert validate_model_params("unet", {"depth": 3}, (64, 64, 64)) == []
    assert set(model_names()) == {"patchcnn", "unet", "user"}
    with pytest.raises(ModelParamsError, match="kernel_size"):
        build_model("patchcnn", 1, 2, (8, 8), {"kernel_size": "three"})


def test_validation_runs_without_torch() -> None:
    code = ("import sys; from daemon.executor.models import validate_model_params; "
            "from daemon.kinds.train_spec import TrainSpec; "
            "assert validate_model_params('unet', {}, (8, 8)) == []; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


USER_MODEL = """
import torch
from torch import nn

def build_model(in_channels, n_classes, width=4):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, n_classes, 1))
"""


def test_user_model_builds_and_checks_clean(tmp_path: Path) -> None:
    path = tmp_path / "mymodel.py"
    path.write_text(USER_MODEL)
    assert validate_model_params("user", {"path": str(path), "width": 3}, (16, 16)) == []
    model = build_model("user", 2, 5, (16, 16), {"path": str(path), "width": 3})
    assert model(torch.zeros(1, 2, 16, 16)).shape == (1, 5, 16, 16)
    assert check_user_model(path, in_channels=2, n_classes=5, params={"width": 3}) == []
    # members is seisd's: an ensemble of the user's model, and the file's build_model never sees the key
    assert validate_model_params("user", {"path": str(path), "members": 2}, (16, 16)) == []
    ensemble = build_model("user", 2, 5, (16, 16), {"path": str(path), "width": 3, "members": 2})
    assert len(ensemble.members) == 2 and ensemble.eval()(torch.zeros(1, 2, 16, 16)).shape == (1, 5, 16, 16)


def test_user_model_problems_are_reported(tmp_path: Path) -> None:
    missing = validate_model_params("user", {"path": str(tmp_path / "nope.py")}, (16, 16))
    assert missing and "not found" in missing[0]
    no_function = tmp_path / "empty.py"
    no_function.write_text("x = 1\n")
    assert "defines no build_model" in check_user_model(no_function)[0]
    wrong_shape = tmp_path / "flat.py"
    wrong_shape.write_text(textwrap.dedent("""
        from torch import nn
        def build_model(in_channels, n_classes):
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_classes + 1))
    """))
    assert "output should be" in check_user_model(wrong_shape)[0]
    crashing = tmp_path / "crash.py"
    crashing.write_text("raise SystemExit(3)\n")
    assert check_user_model(crashing)  # a user file that exits at import is reported, not obeyed


def test_ensemble_averages_its_members_probabilities() -> None:
    torch.manual_seed(0)
    model = build_model("unet", 2, 4, (16, 24), {"base": 4, "depth": 2, "members": 3})
    assert len(model.members) == 3
    first, second = (dict(m.named_parameters())["head.weight"] for m in model.members[:2])
    assert not torch.equal(first, second)  # members start from different weights
    x = torch.randn(2, 2, 16, 24)
    assert model.train()(x).shape == (3, 2, 4, 16, 24)  # training: every member's logits, for their own losses
    model.eval()
    with torch.no_grad():
        out = model(x)
        mean = torch.stack([torch.softmax(m(x), dim=1) for m in model.members]).mean(0)
    assert out.shape == (2, 4, 16, 24)
    torch.testing.assert_close(torch.softmax(out, dim=1), mean)
    patch = build_model("patchcnn", 1, 3, (12, 12), {"filters": [4], "members": 2}).eval()
    assert patch(torch.randn(5, 1, 12, 12)).shape == (5, 3)
    assert type(build_model("unet", 2, 4, (16, 16), {"members": 1})).__name__ == "UNet"


def test_ensemble_size_is_checked_at_submit() -> None:
    for bad in (0, 17, "3", 2.0):
        problems = validate_model_params("unet", {"members": bad}, (32, 32))
        assert len(problems) == 1 and problems[0].startswith("model.params.members"), (bad, problems)
    assert validate_model_params("patchcnn", {"members": 4}, (17, 17)) == []
    assert "members" in validate_model_params("unet", {"colour": 1}, (8, 8))[0]  # listed among the accepted keys


@pytest.mark.parametrize("params", [{"base": 4, "depth": 3, "members": 2},
                                    {"base": 4, "depth": 2, "norm": "instance", "activation": "elu"}])
def test_the_prediction_copy_computes_the_same_and_leaves_the_model_alone(params: dict) -> None:
    from daemon.executor.models.inference import inference_copy
    torch.manual_seed(0)
    model = build_model("unet", 2, 4, (16, 24), params)
    model.train()(torch.randn(8, 2, 16, 24))  # batch norms get running statistics away from their start
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ready = inference_copy(model)
    assert model.training and not ready.training
    assert inference_copy(ready) is ready  # made once (a stream's model), not again per block
    def norms(m: torch.nn.Module) -> list[str]:
        return [type(n).__name__ for n in m.modules() if isinstance(n, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d))]
    if params.get("norm", "batch") == "batch":
        assert norms(model) and norms(ready) == []  # every one folded, the bottom block's (nested) too
    else:
        assert norms(ready) == norms(model)  # only batch norms fold
    x = torch.randn(3, 2, 37, 50)
    with torch.no_grad():
        expected = model.eval()(x)
        got = ready(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_the_unet_upsamples_after_its_1x1_convolution_to_the_same_numbers() -> None:
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, (16, 16), {"base": 4, "depth": 2}).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        got = model(x)
        # the order written out: upsample, then the 1x1 conv, as the network was first built
        h, skips = x, []
        for block in model.down:
            h = block(h)
            skips.append(h)
            h = model.pool(h)
        h = model.bottom(h)
        for reduce, block, skip in zip(model.reduce, model.up, reversed(skips)):
            h = block(torch.cat([reduce(F.interpolate(h, scale_factor=2.0, mode="nearest")), skip], dim=1))
        expected = model.head(h)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_user_model_is_copied_for_prediction_but_not_folded() -> None:
    from daemon.executor.models.inference import inference_copy
    user = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU())
    ready = inference_copy(user)
    assert ready is not user and user.training and not ready.training
    assert [type(m).__name__ for m in ready] == ["Conv2d", "BatchNorm2d", "ReLU"]  # its forward may index them
    assert inference_copy(ready) is ready  # a stream copies it once

    class Uncopyable(torch.nn.Module):  # holds what deepcopy refuses (a generator, say)
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1)
            self.feed = (i for i in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    odd = Uncopyable()
    assert inference_copy(odd) is odd and not odd.training  # predicted with itself, in eval mode, as before
