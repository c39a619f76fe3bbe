"""The `predict` job through a real daemon: outputs with the source geometry, scores, figures, kill -9 resume.

Surveys are imported in-process from SEG-Y written here (tools/synth.py) or from the shared f3.sgy; models are
small registry or user models saved with daemon.executor.modelfile (weights drawn from a fixed seed).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import matplotlib.image as mpimg
import numpy as np
import pytest
import segyio

from tests.daemon.predict_data import (SHAPE, SLOW_JOB, home_with_unet, make_synth_survey, predict_job, run_job,
                                       save_model, save_slow_model)
from tests.harness import RunningDaemon, wait_for, wait_state
from workers.picks import from_labelled_slice
from workers.segy_import import import_segy


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    """A daemon whose home holds the synthetic survey and a unet model file."""
    home = (tmp_path_factory.mktemp("predict") / "home").resolve()
    home.mkdir(parents=True)
    made = home_with_unet(home)
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
    # the picks (every sample of crosslines 4..19 on the middle inline): the middle of the crosslines picked most
    assert names == sorted([f"inline_{int(made['survey'].inlines[3])}.png",
                            f"crossline_{int(made['survey'].crosslines[12])}.png",
                            f"time_{made['survey'].samples[16]:g}.png"])
    assert all(Path(p).stat().st_size > 10_000 for p in result["figures"])
    assert not (out / "arrays").exists()  # working arrays removed once exported
    events = d.client.job_events(rec["id"])
    progress = [e["data"] for e in events if e.get("type", e.get("event")) == "job.progress"]
    assert progress and progress[-1]["fraction"] == 1.0


def test_figures_are_kept_with_the_prediction_and_go_through_the_picks(prepared) -> None:
    """The interpreter's picks lie on an inline and crosslines far from the middle ones: the default figures are
    drawn through them (so the "seismic and picks" panel shows them), into predictions/<name>/figures/."""
    d, made = prepared
    survey = made["survey"]
    picked = np.full(SHAPE[1:], -1, np.int64)
    picked[22:30, ::2] = made["labels"][5, 22:30, ::2]
    from_labelled_slice(survey, int(survey.inlines[5]), picked, made["classes"]).save(survey.folder, "aside")
    stats = survey.stats("seismic")
    save_model(d.home, "unet-aside", stats=(stats["mean"], stats["std"]), input_spec={"picks": "aside"})
    result = run_job(d, predict_job("unet-aside", "synth", "aside", format="segy"))["result"]
    out = Path(result["output"])
    figures = [Path(p) for p in result["figures"]]
    assert all(p.parent == out / "figures" and p.is_file() for p in figures), result["figures"]
    assert sorted(p.name for p in figures) == sorted([
        f"inline_{int(survey.inlines[5])}.png", f"crossline_{int(survey.crosslines[26])}.png",
        f"time_{survey.samples[16]:g}.png"])
    image = mpimg.imread(out / "figures" / f"inline_{int(survey.inlines[5])}.png")[..., :3]
    seismic_panel = image[:, int(0.03 * image.shape[1]):int(0.30 * image.shape[1])]
    hi, lo = seismic_panel.max(axis=-1), seismic_panel.min(axis=-1)
    assert np.mean(hi - lo > 0.3) > 0.002, "no coloured picks on the grey seismic panel"


def test_the_survey_viewer_shows_a_prediction_made_with_the_defaults(prepared) -> None:
    """`seisctl predict unet1 synth --truth labels` writes SEG-Y only; the survey page draws it, with its classes."""
    from bokeh.document import Document
    from daemon.viewers.survey_page import SurveyPage

    d, made = prepared
    result = run_job(d, predict_job("unet1", "synth", "defaults", truth="labels"))["result"]
    assert sorted(result["paths"]) == ["confidence", "labels"] and result["scores"] is not None
    page = SurveyPage(Document(), d.home)
    page.open_survey("synth", "defaults", "default")
    assert page.problem == "" and page.class_names == result["classes"], page.problem
    with segyio.open(result["paths"]["labels"]) as f:
        cube = segyio.tools.cube(f)
    for key in (3, (slice(None), 9), (slice(None), slice(None), 20)):
        assert np.array_equal(page.labels[key], cube[key])


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
    with pytest.raises(SeisdError) as err:  # split needs an ensemble: refused at submit, not when it runs
        d.client.submit(predict_job("unet1", "synth", "x", orientation="split"))
    assert err.value.details["problems"] == ["orientation: 'split' runs each member of an ensemble along inlines "
                                             "or along crosslines, and this model has one member: use 'both'"]


def test_the_number_format_is_the_jobs_and_the_result_says_which_ran(prepared) -> None:
    """precision: float32 is asked and reported; the default ('auto') resolves by the CPU and stays close to it."""
    import torch
    from client.api import SeisdError
    from daemon.executor.predict.spec import native_bfloat16

    d, _ = prepared
    runs = {name: run_job(d, predict_job("unet1", "synth", f"precision-{name}", outputs=["labels", "probabilities"],
                                         format="hdf5", figures={"enabled": False}, **extra))["result"]
            for name, extra in (("float32", {"precision": "float32"}), ("default", {}))}
    assert runs["float32"]["recipe"]["precision"] == "float32"
    native = native_bfloat16(torch.device("cpu"))
    assert runs["default"]["recipe"]["precision"] == ("bfloat16" if native else "float32")
    arrays = {}
    for name, result in runs.items():
        with h5py.File(result["paths"]["hdf5"]) as h5:
            arrays[name] = h5["labels"][()], h5["probabilities"][()]
    (labels, probs), (labels_d, probs_d) = arrays["float32"], arrays["default"]
    top2 = np.sort(probs, axis=0)[-2:]
    clear = top2[1] - top2[0] > 0.05
    assert np.array_equal(labels[clear], labels_d[clear]) and np.abs(probs - probs_d).max() < 0.03
    with pytest.raises(SeisdError) as err:
        d.client.submit(predict_job("unet1", "synth", "x", precision="half"))
    assert "precision" in " ".join(err.value.details["problems"])


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
    save_slow_model(home, tmp_path)
    job = SLOW_JOB
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
