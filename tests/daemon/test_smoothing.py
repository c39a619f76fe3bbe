"""Smoothing the class probabilities before the argmax (daemon/executor/predict/smoothing.py): the Gaussian, the
whole-volume pass against the in-memory one, its resume, and a model file's `smooth` through a real daemon (the
default, a predict job's override, shards).

A 32^3 synthetic survey and a small unet with seeded weights (tests/daemon/predict_data.py).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from daemon.executor.modelfile import load_model_file
from daemon.executor.predict import smoothing
from daemon.executor.predict.apply import PredictError, apply_block, predict_volume, smoothed_outputs
from daemon.executor.predict.engine import _finish
from daemon.executor.predict.recipe import recipe_of
from tests.daemon.predict_data import make_synth_survey, predict_job, run_job, save_model
from tests.harness import RunningDaemon

SIGMA = (2.0, 3.0, 1.0)
OUTPUTS = ["labels", "probabilities", "confidence"]


def test_the_gaussian_keeps_constants_and_mass_and_spreads_a_spike_along_its_axes_only() -> None:
    flat = torch.full((2, 9, 9, 9), 0.5)
    assert torch.allclose(smoothing.smooth_block(flat, SIGMA), flat)
    spike = torch.zeros(1, 31, 31, 31)
    spike[0, 15, 15, 15] = 1.0
    out = smoothing.smooth_block(spike, (2.0, 0.0, 1.0))
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)  # far from the edges nothing is lost
    assert torch.count_nonzero(out[0, :, 14]) == 0 and torch.count_nonzero(out[0, :, 16]) == 0  # sigma 0: not spread
    profile = out[0, :, 15, 15] / out[0, 15, 15, 15]  # along the inlines, sigma 2: exp(-d^2 / 8), times the sample's
    assert float(profile[17]) == pytest.approx(np.exp(-4 / 8), rel=1e-4)
    assert float(profile[15 - 6]) == pytest.approx(np.exp(-36 / 8), rel=1e-3) and float(profile[15 - 7]) == 0.0
    for bad in ([1, 2], [1, -1, 0], [1, 100, 1], [float("nan"), 1, 1]):
        with pytest.raises(PredictError, match="smooth must be three sigmas"):
            smoothing.check_sigma(bad)
    assert smoothing.check_sigma([0, 0, 0]) is None and smoothing.check_sigma(None) is None


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = (tmp_path_factory.mktemp("smooth") / "home").resolve()
    home.mkdir(parents=True)
    made = make_synth_survey(home)
    stats = made["survey"].stats("seismic")
    # seed 3: weights whose labels mix two classes (most seeds label the whole cube one class)
    save_model(home, "plain", stats=(stats["mean"], stats["std"]), seed=3)
    save_model(home, "smoothed", stats=(stats["mean"], stats["std"]), input_spec={"smooth": list(SIGMA)}, seed=3)
    model, info = load_model_file(home / "models" / "plain.h5")
    volume = np.asarray(made["survey"].volume("seismic"))
    return {"home": home, "made": made, "model": model, "info": info, "volume": volume}


def test_the_whole_volume_pass_in_slabs_equals_smoothing_the_block_at_once(unet: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    kw = recipe_of(unet["info"]).apply_kwargs(unet["volume"].shape)
    raw = predict_volume(unet["model"], unet["volume"], out_dir=tmp_path / "raw", outputs=OUTPUTS, device="cpu",
                         chunk_inlines=4, **kw)
    probs = torch.from_numpy(np.load(raw["paths"]["probabilities"]))
    expected = smoothing.smooth_block(probs, SIGMA)
    labels, confidence = _finish(expected.clone())
    assert not np.array_equal(labels, np.load(raw["paths"]["labels"]))  # smoothing changed some labels
    # blocks of 3 crosslines along the inlines, then slabs of 3 inlines: the same numbers as the whole block at once
    smoothing.smooth_volume(tmp_path / "raw", SIGMA, OUTPUTS, _finish, block_bytes=6 * 32 * 32 * 4 * 3)
    np.testing.assert_allclose(np.load(tmp_path / "raw" / smoothing.SMOOTHED_PROBABILITIES), expected.numpy(),
                               rtol=0, atol=1e-6)
    assert np.array_equal(np.load(tmp_path / "raw" / "labels.npy"), labels)
    # predict_volume with smooth (chunks of 4, one block) and apply_block with smooth agree with it too
    whole = predict_volume(unet["model"], unet["volume"], out_dir=tmp_path / "whole", outputs=OUTPUTS, device="cpu",
                           chunk_inlines=4, smooth=SIGMA, **kw)
    assert whole["paths"]["probabilities"].endswith(smoothing.SMOOTHED_PROBABILITIES)
    block = apply_block(unet["model"], unet["volume"], outputs=OUTPUTS, device="cpu", smooth=SIGMA, **kw)
    for out in (whole, {"paths": None}):
        got = ({k: np.load(v) for k, v in out["paths"].items()} if out["paths"] else block)
        np.testing.assert_allclose(got["probabilities"], expected.numpy(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["confidence"], confidence, rtol=0, atol=1e-5)
        assert np.mean(got["labels"] == labels) > 0.999  # ties aside, the same labels


def test_an_interrupted_pass_runs_again_from_the_raw_probabilities(unet: dict[str, Any], tmp_path: Path) -> None:
    kw = recipe_of(unet["info"]).apply_kwargs(unet["volume"].shape)
    first = predict_volume(unet["model"], unet["volume"], out_dir=tmp_path / "p", outputs=["labels"], device="cpu",
                           chunk_inlines=8, smooth=SIGMA, **kw)
    labels = np.load(first["paths"]["labels"])
    assert set(first["paths"]) == {"labels"} and (tmp_path / "p" / smoothing.DONE_FILE).is_file()
    # as if killed inside the pass: half the labels back to the raw ones and no record of the pass
    raw_labels, _ = _finish(torch.from_numpy(np.load(tmp_path / "p" / "probabilities.npy")))
    on_disk = np.load(tmp_path / "p" / "labels.npy", mmap_mode="r+")
    on_disk[:16] = raw_labels[:16]
    on_disk.flush()
    (tmp_path / "p" / smoothing.DONE_FILE).unlink()
    again = predict_volume(unet["model"], unet["volume"], out_dir=tmp_path / "p", outputs=["labels"], device="cpu",
                           chunk_inlines=8, smooth=SIGMA, **kw)
    assert again["resumed_from_chunk"] == again["n_chunks"] == 4  # no chunk predicted again
    assert np.array_equal(np.load(again["paths"]["labels"]), labels)
    # another sigma is another prediction: the record of the chunks refuses to mix them
    with pytest.raises(PredictError, match="other settings"):
        predict_volume(unet["model"], unet["volume"], out_dir=tmp_path / "p", outputs=["labels"], device="cpu",
                       chunk_inlines=8, smooth=(1, 1, 1), **kw)
    assert smoothed_outputs(tmp_path / "p", SIGMA, {"labels": "x"}) == {"labels": "x"}  # done: nothing to do


def _h5(result: dict[str, Any]) -> dict[str, np.ndarray]:
    with h5py.File(result["paths"]["hdf5"]) as h5:
        return {k: h5[k][()] for k in ("labels", "probabilities", "confidence")}


def test_a_model_files_smooth_is_the_predict_jobs_default_its_override_and_shards_agree(
        unet: dict[str, Any]) -> None:
    home = unet["home"]
    job = dict(outputs=OUTPUTS, format="hdf5", chunk_inlines=4, figures={"enabled": False})
    with RunningDaemon(home) as d:
        default = run_job(d, predict_job("smoothed", "synth", "default", **job), timeout=120)["result"]
        off = run_job(d, predict_job("smoothed", "synth", "off", smooth=[0, 0, 0], **job), timeout=120)["result"]
        plain = run_job(d, predict_job("plain", "synth", "plain", smooth=list(SIGMA), **job), timeout=120)["result"]
        shards = run_job(d, predict_job("smoothed", "synth", "shards", shards=3, **job), timeout=120)["result"]
    assert default["recipe"]["smooth"] == list(SIGMA) and off["recipe"]["smooth"] is None
    a, b, c, e = _h5(default), _h5(off), _h5(plain), _h5(shards)
    raw = torch.from_numpy(b["probabilities"])
    np.testing.assert_allclose(a["probabilities"], smoothing.smooth_block(raw, SIGMA).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(c["probabilities"], a["probabilities"], rtol=0, atol=1e-6)  # same weights, same sigma
    assert np.array_equal(e["labels"], a["labels"])  # after the shards, one pass over their outputs
    np.testing.assert_allclose(e["probabilities"], a["probabilities"], rtol=0, atol=1e-6)
    assert not np.array_equal(a["labels"], b["labels"])
    shutil.rmtree(home / "predictions", ignore_errors=True)
