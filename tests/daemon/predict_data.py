"""Test data for prediction through a real daemon: a tiny synthetic survey, model files as a train job would write
them, a deliberately slow user model, and job helpers. Used by the predict, stream, sharding and fault tests."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daemon.executor.modelfile import ModelInfo, save_model_file
from daemon.executor.models import build_model
from tests.harness import RunningDaemon, wait_state
from workers.picks import from_labelled_slice
from workers.segy_import import add_volume, import_segy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402

SHAPE = (32, 32, 32)
N_CLASSES = 6

# A user model that sleeps in every forward pass: a predict job slow enough to be killed half-way.
SLOW_MODEL = '''
import time
import torch
from torch import nn

class Slow(nn.Module):
    def __init__(self, in_channels, n_classes, delay_s):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, n_classes, 3, padding=1)
        self.delay_s = delay_s

    def forward(self, x):
        time.sleep(self.delay_s)
        return self.conv(x)

def build_model(in_channels, n_classes, delay_s=0.1):
    return Slow(in_channels, n_classes, delay_s)
'''


def make_synth_survey(home: Path, name: str = "synth", seed: int = 0) -> dict[str, Any]:
    """A synthetic survey (seismic + labels volumes, pick set 'default' on the middle inline) in the home."""
    src = home.parent / f"src-{name}"
    s = synth.generate(SHAPE, seed=seed, n_classes=N_CLASSES)
    synth.write(s, src)
    folder = home / "surveys" / name
    survey = import_segy(src / "seismic.sgy", folder, name=name)
    add_volume(src / "labels.sgy", folder, "labels")
    middle = SHAPE[0] // 2
    picked = np.full(SHAPE[1:], -1, np.int64)
    picked[4:20] = s.labels[middle, 4:20]
    from_labelled_slice(survey, int(survey.inlines[middle]), picked, list(s.class_names)).save(folder, "default")
    return {"survey": survey, "src": src, "labels": s.labels, "classes": list(s.class_names)}


def save_model(home: Path, name: str, model_name: str = "unet", params: dict | None = None,
               crop: tuple[int, ...] = (32, 32), stats: tuple[float, float] = (0.0, 1.0),
               input_spec: dict | None = None, seed: int = 0) -> Path:
    """A model file of a registry (or user) model with seeded weights, as the train job would write it."""
    torch.manual_seed(seed)
    params = params if params is not None else {"base": 4, "depth": 2}
    model = build_model(model_name, 1, N_CLASSES, crop, params).eval()
    spec = {"apply_kind": "fcn" if model_name != "patchcnn" else "patch", "crop": list(crop),
            "orientation": "inline", "volumes": ["seismic"], "picks": "default", "context": 0}
    info = ModelInfo(name=model_name, params=params, in_channels=1, n_classes=N_CLASSES, input_shape=list(crop),
                     classes=list(synth.FACIES)[:N_CLASSES], input_spec={**spec, **(input_spec or {})},
                     normalisation={"volumes": [{"mean": stats[0], "std": stats[1]}]})
    return save_model_file(home / "models" / f"{name}.h5", model, info)


def predict_job(model: str, survey: str, output: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "predict", "model": model, "survey": survey, "output": output, **extra}


def run_job(d: RunningDaemon, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Submit, wait, and return the finished job record (failing with the job's log when it did not succeed)."""
    jid = d.client.submit(job)["id"]
    rec = wait_state(d.client, jid, timeout=timeout)
    assert rec["state"] == "succeeded", (rec, d.client.logs(jid))
    return d.client.show(jid)


def home_with_unet(home: Path) -> dict[str, Any]:
    """The synthetic survey `synth` and a unet model file `unet1` normalised by the survey's statistics."""
    made = make_synth_survey(home)
    stats = made["survey"].stats("seismic")
    save_model(home, "unet1", stats=(stats["mean"], stats["std"]))
    return made


# A slow model's predict job: one inline per resumable chunk, one crop per batch, HDF5 only, no figures.
SLOW_JOB = dict(outputs=["labels", "probabilities"], format="hdf5", chunk_inlines=1, batch_size=1,
                figures={"enabled": False})


def save_slow_model(home: Path, folder: Path, delay_s: float = 0.05) -> Path:
    """Model file `slow`: SLOW_MODEL written to `folder`, sleeping `delay_s` in each forward pass."""
    user_file = folder / "slow_model.py"
    user_file.write_text(SLOW_MODEL)
    return save_model(home, "slow", model_name="user", params={"path": str(user_file), "delay_s": delay_s},
                      input_spec={"apply_kind": "fcn"})
