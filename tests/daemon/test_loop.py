"""The interpreter's loop through a real daemon and the real seisctl (docs/loop.md): picks added to a set, a
retrain that continues from the model, `suggest` on a prediction, `models compare`.

One small synthetic survey (tools/synth.py) and small patch models keep it to about a minute on two cores.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.harness import ROOT, RunningDaemon, seisctl, seisctl_json

sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402

TRAIN = {"kind": "train", "data": {"survey": "demo", "crop": {"size": [15, 15]}, "batch_size": 8,
                                   "batches_per_epoch": 4, "val_batches": 1, "split": {"block": 4}},
         "model": {"name": "patchcnn", "params": {"filters": [4, 4, 4]}},
         "train": {"epochs": 1, "seed": 0, "early_stop": {"enabled": False}}}


def _write_pts(folder: Path, s: synth.SynthSurvey, keep: np.ndarray, label: str) -> list[str]:
    """Pick files (one per class) of the synthetic picks selected by `keep`, in a folder of their own."""
    folder.mkdir(parents=True)
    p = s.picks
    out = []
    for cid, name in enumerate(s.class_names):
        sel = keep & (p.class_id == cid)
        rows = np.stack([s.inlines[p.inline_index[sel]], s.crosslines[p.crossline_index[sel]],
                         s.samples_ms[p.sample_index[sel]]], axis=1)
        path = folder / f"{name}.pts"
        path.write_text("".join(f"{int(a)}\t{int(b)}\t{c:g}\n" for a, b, c in rows))
        out.append(str(path))
    return out


@pytest.fixture(scope="module")
def loop_home(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("loop")
    s = synth.generate(shape=(32, 32, 32), seed=0)
    synth.write(s, tmp / "synth")
    with RunningDaemon(tmp / "home") as d:
        r = seisctl(d.home, "survey", "import", str(tmp / "synth" / "seismic.sgy"), "--name", "demo", timeout=120)
        assert r.returncode == 0, r.stderr
        yield d, s, tmp


def _train(d: RunningDaemon, tmp: Path, output: str, *extra: str, code: int = 0) -> dict:
    job = tmp / f"{output}.json"
    job.write_text(json.dumps({**TRAIN, "output": output}))
    return seisctl_json(d.home, "submit", str(job), *extra, code=code)


def test_picks_added_to_a_set_keep_the_old_ones_and_the_newer_pick_wins(loop_home) -> None:
    d, s, tmp = loop_home
    x = s.picks.crossline_index
    first_half = x < np.median(x)
    old = _write_pts(tmp / "old", s, first_half, "old")
    r = seisctl_json(d.home, "picks", "import", "demo", *old, "--pattern", r"(?P<name>.+)\.pts", "--set", "grow")
    n_old = r["result"]["points"]
    assert n_old == int(first_half.sum())
    # the second half, plus one column of the first half again with the classes shifted (a relabelled column)
    again_col = int(x[first_half].max())
    new = _write_pts(tmp / "new", s, ~first_half | (x == again_col), "new")
    for path in new[:2]:  # swap the first two classes' files: the picked-again column changes class
        Path(path).rename(Path(path).with_suffix(".tmp"))
    Path(new[0]).with_suffix(".tmp").rename(new[1])
    Path(new[1]).with_suffix(".tmp").rename(new[0])
    r = seisctl(d.home, "picks", "import", "demo", *new, "--pattern", r"(?P<name>.+)\.pts", "--set", "grow", "--add")
    assert r.returncode == 0, r.stderr
    again = int((x == again_col).sum())
    added = int((~first_half).sum())
    assert f"{n_old + added} points ({added} added, {n_old - again} kept, {again} picked again" in r.stdout, r.stdout
    from workers.picks import PickSet

    ps = PickSet.load(d.home / "surveys" / "demo", "grow")
    assert len(ps) == n_old + added and ps.class_names == list(s.class_names)
    # every old point outside the relabelled column is there with its class; the column has the new classes
    key = {(int(i), int(j), int(k)): int(c) for i, j, k, c in zip(ps.i, ps.x, ps.s, ps.cls)}
    p = s.picks
    for i, j, k, c in zip(p.inline_index, p.crossline_index, p.sample_index, p.class_id):
        want = {0: 1, 1: 0}.get(int(c), int(c)) if j >= again_col else int(c)
        assert key[(int(i), int(j), int(k))] == want
    # --add to a set that does not exist: refused by name
    r = seisctl(d.home, "picks", "import", "demo", *new, "--pattern", r"(?P<name>.+)\.pts", "--set", "nope", "--add")
    assert r.returncode == 2 and "--add" in r.stderr and "nope" in r.stderr, r.stderr


def test_a_resume_on_a_grown_set_continues_from_the_model(loop_home) -> None:
    d, s, tmp = loop_home
    pts = sorted(str(p) for p in (tmp / "synth" / "picks").glob("*.pts"))
    seisctl_json(d.home, "picks", "import", "demo", *pts, "--pattern", r"(?P<name>.+)\.pts")
    _train(d, tmp, "base")
    # the set grows (the same points again count as picked again; new ones elsewhere)
    grown = _write_pts(tmp / "grown", s, s.picks.crossline_index % 2 == 0, "grown")
    seisctl_json(d.home, "picks", "import", "demo", *grown, "--pattern", r"(?P<name>.+)\.pts", "--add")
    from daemon.executor.modelfile import read_weights

    base = read_weights(d.home / "models" / "base.h5")
    # a learning rate of 1e-12: a run that starts from the model ends with its weights (to 1e-6); one that starts
    # anew ends with freshly drawn ones (train.seed 0: the base model's own starting weights, 4 Adam steps of 1e-3
    # away from it: more than 1e-3 apart)
    tiny = ["--set", "optim.lr=1.0e-12", "--set", "train.epochs=2"]
    job = _train(d, tmp, "resumed", "--from", "base", *tiny)
    assert job["state"] == "succeeded" and job["spec"]["train"]["mode"] == "resume", job
    assert job["result"]["epoch"] == 2  # epochs counted from 0: a retrain adds train.epochs epochs
    _train(d, tmp, "anew", *tiny)
    resumed, anew = (read_weights(d.home / "models" / f"{m}.h5") for m in ("resumed", "anew"))
    params = [k for k in base if k.endswith(("weight", "bias"))]
    assert params
    assert max(float((resumed[k] - base[k]).abs().max()) for k in params) < 1e-6
    assert max(float((anew[k] - base[k]).abs().max()) for k in params) > 1e-3
    # a new class in the set: resume refuses by name, transfer trains
    extra = tmp / "extra.pts"
    extra.write_text(f"{int(s.inlines[0])}\t{int(s.crosslines[0])}\t{s.samples_ms[0]:g}\n")
    seisctl_json(d.home, "picks", "import", "demo", str(extra), "--pattern", r"(?P<name>.+)\.pts", "--add")
    failed = _train(d, tmp, "newclass", "--from", "base", code=1)
    assert "new: extra" in failed["error"] and "transfer" in failed["error"], failed["error"]
    # --from alone makes the loop's retrain (client/retrain.py), whatever the job file said
    assert failed["spec"]["train"]["epochs"] == 24 and failed["spec"]["train"]["early_stop"]["enabled"] is False
    assert TRAIN["train"]["epochs"] == 1
    (tmp / "transfer.json").write_text(json.dumps({**TRAIN, "output": "newclass"}))
    r = seisctl(d.home, "--json", "submit", str(tmp / "transfer.json"), "--from", "base", "--mode", "transfer",
                "--set", "train.trainable_layers=99", "--set", "train.epochs=1", timeout=120)
    assert r.returncode == 0, r.stderr
    ok = json.loads(r.stdout)
    assert ok["result"]["epoch"] == 1  # --set wins over the retrain's length, and stderr says what was sent
    assert "a retrain from base: train.mode transfer, train.epochs 1, early stopping off" in r.stderr, r.stderr
    assert ok["state"] == "succeeded"


def test_suggest_names_lines_inside_the_survey_the_same_twice(loop_home) -> None:
    d, s, tmp = loop_home
    if not (d.home / "models" / "base.h5").is_file():
        pytest.skip("needs the model of test_a_resume_on_a_grown_set_continues_from_the_model")
    r = seisctl(d.home, "suggest", "base", "demo")
    assert r.returncode == 2 and "seisctl predict base demo" in r.stderr, r.stderr
    seisctl_json(d.home, "predict", "base", "demo", "--no-figures")
    first = seisctl_json(d.home, "suggest", "base", "demo", "--lines", "4")
    again = seisctl_json(d.home, "suggest", "base", "demo", "--lines", "4")
    assert first["suggestions"] == again["suggestions"] and len(first["suggestions"]) == 4
    for row in first["suggestions"]:
        lines, across = (s.inlines, s.crosslines) if row["kind"] == "inline" else (s.crosslines, s.inlines)
        assert row["line"] in lines and row["from"] in across and row["to"] in across and row["from"] <= row["to"]
        # the default margin (2 lines of 32) keeps lines and regions off the survey's edges
        assert 2 <= row["index"] <= 29 and 2 <= row["trace_indices"][0] <= row["trace_indices"][1] <= 29
        assert s.samples_ms[0] <= row["time_from"] <= row["time_to"] <= s.samples_ms[-1]
        assert 0 <= row["score"] <= 1
    scores = [row["score"] for row in first["suggestions"]]
    assert scores == sorted(scores, reverse=True)
    for path in first["files"].values():
        assert Path(path).is_file() and Path(path).parent.parent.name == "base-demo"
    assert Path(first["files"]["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    edges = seisctl_json(d.home, "suggest", "base", "demo", "--lines", "4", "--margin", "0")
    assert edges["margins"] == {"inline": 0, "crossline": 0} and first["margins"] == {"inline": 2, "crossline": 2}
    human = seisctl(d.home, "suggest", "base", "demo", "--lines", "4")
    top = first["suggestions"][0]
    assert f"{top['kind']} {top['line']}" in human.stdout and first["files"]["csv"] in human.stdout
    # by default the uncertainty alone ranks; with --near 4, what is picked counts for less: the picks of the set
    # the model was trained from (its model file says which), in full from 4 traces away on
    from daemon.kinds.data import DEFAULT_PICKS
    from daemon.kinds.modelinfo import read_model_info

    assert (first["picks"], first["near"]) == (None, 0) and "weighted by" not in human.stdout
    assert all(row["score"] == row["uncertainty"] for row in first["suggestions"])
    assert read_model_info(d.home / "models" / "base.h5").trained_on["surveys"][0]["picks"] == DEFAULT_PICKS
    near = seisctl_json(d.home, "suggest", "base", "demo", "--lines", "4", "--near", "4")
    assert (near["picks"], near["near"]) == (DEFAULT_PICKS, 4)
    # near 64 on a 32 x 32 survey whose picks lie on its middle inline: no trace is more than about 35 traces
    # from a pick, so every trace weighs at most 0.55 and every score is well below its region's uncertainty
    far = seisctl_json(d.home, "suggest", "base", "demo", "--lines", "4", "--near", "64")
    assert all(row["score"] <= 0.56 * row["uncertainty"] + 1e-4 for row in far["suggestions"]), far["suggestions"]
    human = seisctl(d.home, "suggest", "base", "demo", "--lines", "4", "--near", "4")
    assert f"weighted by the distance from pick set {DEFAULT_PICKS}" in human.stdout, human.stdout
    csv_head = Path(near["files"]["csv"]).read_text().splitlines()[0]
    assert csv_head.startswith("rank,kind,line,score,uncertainty,line_mean"), csv_head
    r = seisctl(d.home, "suggest", "base", "demo", "--near", "4", "--picks", "nope")
    assert r.returncode == 2 and "no pick set 'nope'" in r.stderr, r.stderr
    r = seisctl(d.home, "suggest", "base", "demo", "--picks", DEFAULT_PICKS)
    assert r.returncode == 2 and "only with near > 0" in r.stderr, r.stderr
    # a model file that names no pick set (one from before trained_on did): near needs picks, by name
    import shutil

    shutil.copy(d.home / "models" / "base.h5", d.home / "models" / "older.h5")
    with h5py.File(d.home / "models" / "older.h5", "r+") as h5:
        info = json.loads(h5.attrs["info"])
        h5.attrs["info"] = json.dumps({**info, "trained_on": {}})
    seisctl_json(d.home, "predict", "older", "demo", "--no-figures")
    r = seisctl(d.home, "suggest", "older", "demo", "--near", "4")
    assert r.returncode == 2 and "names no pick set" in r.stderr and "give picks" in r.stderr, r.stderr
    given = seisctl_json(d.home, "suggest", "older", "demo", "--lines", "4", "--near", "4", "--picks", DEFAULT_PICKS)
    assert given["picks"] == DEFAULT_PICKS and given["suggestions"] == near["suggestions"]


def test_suggest_ranks_by_the_disagreement_a_prediction_holds(loop_home) -> None:
    """--measure disagreement needs a prediction with that output (refused by name otherwise); with one made both
    ways (two views per voxel), it ranks by it, the same twice, and by the mean of both measures."""
    d, s, tmp = loop_home
    if not (d.home / "models" / "base.h5").is_file():
        pytest.skip("needs the model of test_a_resume_on_a_grown_set_continues_from_the_model")
    seisctl_json(d.home, "predict", "base", "demo", "--name", "plain", "--no-figures")
    r = seisctl(d.home, "suggest", "base", "demo", "--prediction", "plain", "--measure", "disagreement")
    assert r.returncode == 2 and "--outputs labels,confidence,disagreement" in r.stderr, r.stderr
    seisctl_json(d.home, "predict", "base", "demo", "--name", "views", "--orientation", "both", "--no-figures",
                 "--outputs", "labels,confidence,disagreement", "--format", "both")
    first = seisctl_json(d.home, "suggest", "base", "demo", "--prediction", "views", "--measure", "disagreement")
    again = seisctl_json(d.home, "suggest", "base", "demo", "--prediction", "views", "--measure", "disagreement")
    assert first["suggestions"] == again["suggestions"] and first["measure"] == "disagreement"
    with h5py.File(d.home / "predictions" / "views" / "prediction.h5", "r") as f:
        dis, conf = f["disagreement"][...], f["confidence"][...]
    assert 0 < dis.max() <= 1 and dis.min() >= 0
    assert first["mean_uncertainty"] == pytest.approx(dis.mean(), abs=1e-4)
    assert [r["score"] for r in first["suggestions"]] == sorted((r["score"] for r in first["suggestions"]),
                                                                reverse=True)
    both = seisctl_json(d.home, "suggest", "base", "demo", "--prediction", "views", "--measure", "both")
    assert both["measure"] == "both"
    assert both["mean_uncertainty"] == pytest.approx(((1 - conf).mean() + dis.mean()) / 2, abs=1e-4)
    human = seisctl(d.home, "suggest", "base", "demo", "--prediction", "views", "--measure", "disagreement")
    assert "disagreement between the views" in human.stdout, human.stdout


def test_models_compare_prints_both_models_per_class_metrics(loop_home) -> None:
    d, s, tmp = loop_home
    if not (d.home / "models" / "resumed.h5").is_file():
        pytest.skip("needs the models of test_a_resume_on_a_grown_set_continues_from_the_model")
    r = seisctl(d.home, "survey", "import", str(tmp / "synth" / "labels.sgy"), "--name", "demo", "--volume",
                "truth", "--add", timeout=120)
    assert r.returncode == 0, r.stderr
    doc = seisctl_json(d.home, "models", "compare", "base", "resumed", "--survey", "demo", "--truth", "truth")
    for m in ("base", "resumed"):
        assert set(doc["validation"][m]["classes"]) <= set(s.class_names)
        truth = doc["truth"][m]
        assert set(truth["classes"]) == set(s.class_names)
        assert truth["support"] == int(np.prod(s.labels.shape))
    human = seisctl(d.home, "models", "compare", "base", "resumed", "--survey", "demo", "--truth", "truth")
    assert human.returncode == 0, human.stderr
    for name in s.class_names:
        assert name in human.stdout
    assert "base P" in human.stdout and "resumed P" in human.stdout and "against the truth volume" in human.stdout
