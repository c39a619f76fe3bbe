"""Model files: no pickle inside, and a round trip in a fresh process gives identical predictions."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from daemon.executor.models import build_model
from daemon.executor.modelfile import ModelFileError, ModelInfo, load_model_file, provenance, read_model_info, \
    save_model_file


RELOAD = """
import sys, numpy as np, torch
from daemon.executor.modelfile import load_model_file
model, info = load_model_file(sys.argv[1], *sys.argv[3:4])
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[2] + ".out.npy", model(x).numpy())
"""


def _info(name: str, params: dict, shape: list[int]) -> ModelInfo:
    return ModelInfo(name=name, params=params, in_channels=2, n_classes=3, input_shape=shape,
                     classes=["sand", "shale", "salt"], input_spec={"channels": ["amplitude", "dip"],
                                                                     "orientation": "inline", "volumes": ["f3"]},
                     normalisation={"kind": "standard", "mean": 0.5, "std": 2.0},
                     training={"optim": {"name": "adam", "lr": 0.001}, "step": 10, "epoch": 1},
                     metrics={"macro_f1": 0.9}, provenance=provenance("job-1"))


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Non-default weights and batch-norm statistics, so a round trip that dropped any would show."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                # abs keeps running variances positive; other tensors just move away from their initial values
                tensor.add_(torch.randn_like(tensor) * 0.1).abs_()
    return model.eval()


def _round_trip(tmp_path: Path, model: torch.nn.Module, info: ModelInfo, x: torch.Tensor,
                extra: list[str] = ()) -> np.ndarray:
    path = save_model_file(tmp_path / "models" / "m.h5", model, info)
    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run([sys.executable, "-c", RELOAD, str(path), str(tmp_path / "x.npy"), *extra], check=True,
                   timeout=120)
    return np.load(tmp_path / "x.npy.out.npy")


@pytest.mark.parametrize("name,params,shape", [("patchcnn", {"filters": [4, 6]}, [12, 12]),
                                                ("unet", {"base": 4, "depth": 2}, [10, 12, 8]),
                                                ("unet", {"base": 4, "depth": 2, "members": 2}, [16, 12])])
def test_round_trip_in_a_new_process_predicts_identically(tmp_path: Path, name: str, params: dict,
                                                          shape: list[int]) -> None:
    torch.manual_seed(0)
    model = _trained_like(build_model(name, 2, 3, shape, params))
    x = torch.randn(2, 2, *shape)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_array_equal(_round_trip(tmp_path, model, _info(name, params, shape), x), expected)
    info = read_model_info(tmp_path / "models" / "m.h5")
    assert info.classes == ["sand", "shale", "salt"] and info.normalisation["std"] == 2.0
    assert info.provenance["job_id"] == "job-1" and info.training["step"] == 10


def test_file_holds_only_plain_datasets_and_attributes(tmp_path: Path) -> None:
    model = build_model("patchcnn", 2, 3, [8, 8], {"filters": [4]})
    path = save_model_file(tmp_path / "m.h5", model, _info("patchcnn", {"filters": [4]}, [8, 8]))
    seen: list[str] = []

    def check(name: str, obj: object) -> None:
        seen.append(name)
        assert isinstance(obj, (h5py.Group, h5py.Dataset)), name
        if isinstance(obj, h5py.Dataset):
            assert obj.dtype.kind in "fiub", (name, obj.dtype)  # numbers only: no object/opaque (pickle) data

    with h5py.File(path, "r") as h5:
        h5.visititems(check)
        for value in h5.attrs.values():
            assert isinstance(value, (str, np.integer, np.floating)), type(value)
        doc = json.loads(h5.attrs["info"])
    assert doc["name"] == "patchcnn" and h5py.File(path, "r").attrs["format"] == "seisd-model"
    assert len([n for n in seen if n.startswith("weights/")]) == len(model.state_dict())


def test_user_model_needs_its_file_again(tmp_path: Path) -> None:
    source = tmp_path / "net.py"
    source.write_text("from torch import nn\n"
                      "def build_model(in_channels, n_classes):\n"
                      "    return nn.Conv2d(in_channels, n_classes, 3, padding=1)\n")
    params = {"path": str(source)}
    model = _trained_like(build_model("user", 2, 3, [8, 8], params))
    info = _info("user", params, [8, 8])
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_array_equal(_round_trip(tmp_path, model, info, x), expected)
    assert read_model_info(tmp_path / "models" / "m.h5").user_source == source.read_text()
    copy = tmp_path / "copy.py"
    copy.write_text(source.read_text())
    source.write_text(source.read_text() + "# edited\n")
    with pytest.raises(ModelFileError, match="changed since"):
        load_model_file(tmp_path / "models" / "m.h5")
    loaded, _ = load_model_file(tmp_path / "models" / "m.h5", user_model_path=copy)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), expected)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        load_model_file(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.attrs["format"] = "something-else"
    with pytest.raises(ModelFileError, match="not a seisd model file"):
        load_model_file(tmp_path / "other.h5")
