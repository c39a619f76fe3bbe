"""The `predict` job through a real daemon: outputs with the source geometry, scores, figures, kill -9 resume.

Surveys are imported in-process from SEG-Y written here (tools/synth.py) or from the shared f3.sgy; models are
small registry or user models saved with daemon.modelfile (weights drawn from a fixed seed).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import segyio
import torch

from daemon.modelfile import ModelInfo, save_model_file
from daemon.models import build_model
from tests.harness import RunningDaemon, wait_for, wait_state
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


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    """A daemon whose home holds the synthetic survey and a unet model file."""
    home = (tmp_path_factory.mktemp("predict") / "home").resolve()
    home.mkdir(parents=True)
    made = make_synth_survey(home)
    stats = made["survey"].stats("seismic")
    save_model(home, "unet1", stats=(stats["mean"], stats["std"]))
    with RunningDaemon(home) as d:
        yield d, made


def test_outputs_keep_the_source_geometry_and_are_scored(prepared) -> None:
    d, made = prepared
    rec = run_job(d, predict_job("unet1", "synth", "full", outputs=["labels", "probabilities", "confidence"],
                                 format="both", truth="labels", figures={"inlines": [int(made["survey"].inlines[3])]}))
    result = rec["result"]
    out = Path(result["output"])
    with segyio.open(made["src"] / "seismic.sgy") as src, segyio.open(out / "labels.sgy") as dst:
        assert list(dst.ilines) == list(src.ilines) and list(dst.xlines) == list(src.xlines)
        assert list(dst.samples) == list(src.samples)
        for field in (segyio.TraceField.CDP_X, segyio.TraceField.CDP_Y, segyio.TraceField.INLINE_3D):
            assert np.array_equal(dst.attributes(field)[:], src.attributes(field)[:])
        from_segy = segyio.tools.cube(dst)
    with h5py.File(out / "prediction.h5") as h5:
        labels, probs, conf = h5["labels"][()], h5["probabilities"][()], h5["confidence"][()]
        assert list(h5.attrs["inlines"]) == list(made["survey"].inlines)
    assert np.array_equal(from_segy.astype(np.uint8), labels)
    assert np.array_equal(labels, probs.argmax(axis=0))
    top2 = np.sort(probs, axis=0)[-2:]
    np.testing.assert_allclose(conf, top2[1] - top2[0], atol=1e-6)
    # the score is the one anybody computes from the written labels and the synthetic truth
    truth = made["labels"].astype(np.int64)
    assert result["scores"]["n_scored"] == truth.size
    assert result["scores"]["pixel_accuracy"] == pytest.approx(float(np.mean(labels == truth)))
    confusion = np.array(result["scores"]["confusion"])
    assert confusion.sum() == truth.size and np.trace(confusion) == int(np.sum(labels == truth))
    names = sorted(Path(p).name for p in result["figures"])
    assert names == sorted([f"inline_{int(made['survey'].inlines[3])}.png",
                            f"crossline_{int(made['survey'].crosslines[16])}.png",
                            f"time_{made['survey'].samples[16]:g}.png"])
    assert all(Path(p).stat().st_size > 10_000 for p in result["figures"])
    assert not (out / "arrays").exists()  # working arrays removed once exported
    events = d.client.job_events(rec["id"])
    progress = [e["data"] for e in events if e.get("type", e.get("event")) == "job.progress"]
    assert progress and progress[-1]["fraction"] == 1.0


def test_bad_job_files_are_refused_naming_each_key(prepared) -> None:
    d, made = prepared
    from client.api import SeisdError

    with pytest.raises(SeisdError) as err:
        d.client.submit(predict_job("nomodel", "synth", "x", truth="nothing", figures={"inlines": [5]}))
    text = " ".join(err.value.details["problems"])
    assert "model: no model 'nomodel'" in text and "truth:" in text and "figures.inlines: 5" in text
    with pytest.raises(SeisdError) as err:
        d.client.submit(predict_job("unet1", "nosurvey", "../x"))
    assert any(p.startswith("output:") for p in err.value.details["problems"])


def test_f3_prediction_keeps_its_real_line_numbers(prepared, shared_data: Path) -> None:
    d, _ = prepared
    f3 = shared_data / "segyio" / "f3.sgy"
    survey = import_segy(f3, d.home / "surveys" / "f3", name="f3")
    save_model(d.home, "f3unet", crop=(survey.shape[1], survey.shape[2]), seed=1)
    result = run_job(d, predict_job("f3unet", "f3", "f3pred", format="segy"))["result"]
    with segyio.open(f3) as src, segyio.open(result["paths"]["labels"]) as dst:
        assert list(dst.ilines) == list(src.ilines) and list(dst.xlines) == list(src.xlines)
        assert np.allclose(dst.samples, src.samples)
        assert np.array_equal(dst.attributes(segyio.TraceField.CDP_X)[:], src.attributes(segyio.TraceField.CDP_X)[:])
    assert any(f"inline_{int(survey.inlines[len(survey.inlines) // 2])}" in p for p in result["figures"])


def _chunks_done(record: Path) -> int:
    try:
        return json.loads(record.read_text())["state"]["chunks_done"]
    except (OSError, ValueError, KeyError):
        return 0


def test_kill9_mid_job_resumes_without_redoing_chunks_and_matches(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    make_synth_survey(home)
    user_file = tmp_path / "slow_model.py"
    user_file.write_text(SLOW_MODEL)
    save_model(home, "slow", model_name="user", params={"path": str(user_file), "delay_s": 0.05},
               input_spec={"apply_kind": "fcn"})
    job = dict(outputs=["labels", "probabilities"], format="hdf5", chunk_inlines=1, batch_size=1,
               figures={"enabled": False})
    with RunningDaemon(home) as d:
        jid = d.client.submit(predict_job("slow", "synth", "killed", **job))["id"]
        record = home / "predictions" / "killed" / "arrays" / "progress.json"
        wait_for(lambda: _chunks_done(record) >= 5, timeout=60, interval=0.01, what="five chunks written")
        d.kill9()
        time.sleep(0.3)  # the executor dies with the daemon (PDEATHSIG); let it go before reading the record
        done_at_kill = _chunks_done(record)
        assert 5 <= done_at_kill < SHAPE[0]
        d.restart()
        rec = wait_state(d.client, jid, timeout=60)
        assert rec["state"] == "succeeded", d.client.logs(jid)
        resumed = d.client.show(jid)["result"]
        assert resumed["resumed_from_chunk"] == done_at_kill
        clean = run_job(d, predict_job("slow", "synth", "clean", **job))["result"]
        assert clean["resumed_from_chunk"] == 0
    with h5py.File(resumed["paths"]["hdf5"]) as a, h5py.File(clean["paths"]["hdf5"]) as b:
        for name in ("labels", "probabilities"):
            assert np.array_equal(a[name][()], b[name][()]), name
