"""tools/synth.py family="varied" (tools/synth_varied.py) and the multi-survey mode of tools/facies_experiment.py."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
import facies_experiment  # noqa: E402
import synth  # noqa: E402
import synth_varied  # noqa: E402

SMALL = (64, 64, 64)
SEEDS = range(1, 9)


@pytest.fixture(scope="module")
def surveys() -> dict[int, synth.SynthSurvey]:
    return {seed: synth.generate(SMALL, seed=seed, family="varied") for seed in SEEDS}


def test_the_classic_family_is_unchanged():
    # digest of generator v3's seed 0 before the varied family existed: the demo, tests and docs rely on it
    s = synth.generate(SMALL, seed=0)
    digest = hashlib.sha1(s.seismic.tobytes() + s.labels.tobytes() + s.picks.crossline_index.tobytes()).hexdigest()
    assert digest == "f699a474b09237ce4eaec828af457647af52d623"
    assert synth.generate(SMALL, seed=0, family="classic").labels.tobytes() == s.labels.tobytes()


def test_same_seed_same_survey_other_seed_other_survey(surveys: dict[int, synth.SynthSurvey]):
    again = synth.generate(SMALL, seed=3, family="varied")
    first = surveys[3]
    assert np.array_equal(again.seismic, first.seismic) and np.array_equal(again.labels, first.labels)
    assert np.array_equal(again.picks.crossline_index, first.picks.crossline_index) and again.meta == first.meta
    assert not np.array_equal(surveys[4].labels, first.labels)


def test_drawn_ranges_hold_over_seeds(surveys: dict[int, synth.SynthSurvey]):
    classes, faults, coverage, peaks = set(), set(), [], set()
    for s in surveys.values():
        n = len(s.class_names)
        assert synth_varied.CLASS_RANGE[0] <= n <= synth_varied.CLASS_RANGE[1]
        assert s.class_names == tuple(sorted(s.class_names)) == synth_varied.class_names(n)
        assert synth_varied.FAULT_RANGE[0] <= len(s.faults) <= synth_varied.FAULT_RANGE[1]
        p = s.picks
        assert np.unique(p.inline_index).size == 1
        xls = np.unique(p.crossline_index)
        assert np.array_equal(xls, np.arange(xls[0], xls[-1] + 1))  # one contiguous span
        share = xls.size / SMALL[1]
        assert synth_varied.COVERAGE_RANGE[0] - 0.02 <= share <= synth_varied.COVERAGE_RANGE[1] + 0.02
        assert np.array_equal(p.class_id, s.labels[p.inline_index, p.crossline_index, p.sample_index])
        counts = np.bincount(p.class_id, minlength=n)
        assert counts.min() >= synth_varied.MIN_PICK_SHARE * counts.sum()
        assert all(2 <= len(v) <= 3 for v in s.meta["looks"].values())
        looks = [look for v in s.meta["looks"].values() for look in v]
        assert len(looks) == len(set(looks))  # no look shared between classes
        assert synth_varied.NOISE_RANGE[0] <= s.noise <= synth_varied.NOISE_RANGE[1]
        classes.add(n), faults.add(len(s.faults)), coverage.append(share), peaks.add(s.meta["peak_hz"])
    # the seeds really vary: not one kind of survey drawn eight times
    assert len(classes) >= 3 and len(faults) >= 3 and max(coverage) - min(coverage) > 0.15 and len(peaks) == 8


def test_depth_alone_does_not_name_the_class(surveys: dict[int, synth.SynthSurvey]):
    for seed, s in surveys.items():
        assert synth.depth_only_baseline(s.labels, s.picks) < 0.5, seed
        assert synth.amplitude_only_baseline(s.seismic, s.labels, s.picks) < 0.5, seed


def test_folds_grow_with_depth():
    for seed in range(4):
        lay = synth_varied.draw_layout(np.random.default_rng(seed), SMALL, (32, 32))
        zz = np.array([0.0, SMALL[2] - 1.0])
        bumps = (lay.fold_gain[0] + lay.fold_gain[1] * zz / SMALL[2])[:, None, None] * lay.fold_bumps[None]
        assert bumps[1].std() > 2 * bumps[0].std()  # the folds' amplitude at the base is over twice the top's


def test_cli_writes_a_varied_survey_and_refuses_classic_options(tmp_path: Path):
    out = tmp_path / "v"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "synth.py"), str(out), "--family", "varied",
                          "--seed", "6", "--shape", "48", "48", "48", "--quiet"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    doc = json.loads((out / "classes.json").read_text())
    assert doc["family"] == "varied" and set(doc["looks"]) == {c["name"] for c in doc["classes"]}
    rows = np.loadtxt(out / "picks" / f"{doc['classes'][0]['name']}.pts", ndmin=2)
    assert set(rows[:, 0]) == {doc["picks"]["inline"]}
    assert doc["picks"]["crosslines"][0] <= rows[:, 1].min() and rows[:, 1].max() <= doc["picks"]["crosslines"][1]
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "synth.py"), str(tmp_path / "b"), "--family",
                          "varied", "--noise", "0.1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "classic family" in bad.stderr
    with pytest.raises(synth.SynthError, match="family"):
        synth.generate(SMALL, family="layered")


def test_experiment_refuses_seed_zero_alone_and_no_seeds():
    for args in (["--seeds", "1", "--first-seed", "0"], ["--seeds", "0"]):
        run = subprocess.run([sys.executable, str(ROOT / "tools" / "facies_experiment.py"), *args],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and ("seed 0" in run.stderr or "at least 1" in run.stderr), run.stderr


def test_summary_takes_the_mean_and_the_worst_of_each_figure():
    rows = [{"pixel": 0.9, "mean_class": 0.8, "far_pixel": 0.85, "worst_class": 0.5, "depth_only": 0.3,
             "amplitude_only": 0.2, "train_s": 100.0, "predict_voxels_per_s": 2e6, "seen_share": 1.0,
             "seen_pixel": 0.9},
            {"pixel": 0.7, "mean_class": 0.6, "far_pixel": 0.65, "worst_class": 0.1, "depth_only": 0.4,
             "amplitude_only": 0.3, "train_s": 300.0, "predict_voxels_per_s": 1e6, "seen_share": 0.6,
             "seen_pixel": 0.75}]
    agg = facies_experiment.summary(rows)
    assert agg["mean"]["pixel"] == pytest.approx(0.8) and agg["worst"]["pixel"] == 0.7
    assert agg["worst"]["depth_only"] == 0.4 and agg["worst"]["train_s"] == 300.0
    assert agg["worst"]["predict_voxels_per_s"] == 1e6 and agg["worst"]["worst_class"] == 0.1
    assert agg["worst"]["seen_share"] == 0.6 and agg["mean"]["seen_pixel"] == pytest.approx(0.825)


def test_looks_per_voxel_belong_to_the_voxels_class_and_the_picks_show_their_own(
        surveys: dict[int, synth.SynthSurvey]):
    shares = []
    for s in surveys.values():
        ids = np.unique(s.looks)
        assert s.looks.shape == s.labels.shape and ids.min() >= 0
        seen = synth.seen_looks(s)
        p = s.picks
        assert seen[p.inline_index, p.crossline_index, p.sample_index].all()
        counts = synth.look_picks(s)  # per voxel, the picks that show its look
        on_picks = s.looks[p.inline_index, p.crossline_index, p.sample_index]
        for g in np.unique(on_picks):
            assert (counts[s.looks == g] == np.count_nonzero(on_picks == g)).all()
        assert (counts[~np.isin(s.looks, on_picks)] == 0).all()
        for g in ids:
            classes = np.unique(s.labels[s.looks == g])
            assert classes.size == 1  # a look belongs to one class
        assert len(ids) <= sum(len(looks) for looks in s.meta["looks"].values())
        shares.append(float(seen.mean()))
    assert min(shares) < 1.0 and max(shares) > 0.3  # some surveys hold looks the picks never show
    assert synth.seen_looks(synth.generate(SMALL, seed=0)) is None  # the classic family has one look per class


def test_accuracy_by_how_many_picks_show_the_look():
    # 128 samples a trace: this one has looks in every part, on none of the picks to on 800 and more
    s = synth.generate((32, 64, 128), seed=2, family="varied")
    counts = synth.look_picks(s)
    f = facies_experiment.seen_figures(s, counts >= 800)  # a model right exactly on the best-shown looks
    parts = f["pixel_by_look_picks"]
    assert list(parts) == ["0-0", "1-99", "100-799", ">=800"]
    assert parts["0-0"]["share"] == pytest.approx(1 - f["seen_share"]) and parts["0-0"]["share"] > 0
    assert parts[">=800"]["share"] > 0 and sum(p["share"] for p in parts.values()) == pytest.approx(1.0)
    for name, part in parts.items():
        if part["share"]:
            assert part["pixel"] == (1.0 if name == ">=800" else 0.0), (name, part)
    f = facies_experiment.seen_figures(s, counts == 0)    # and one right only where the picks show nothing
    assert f["pixel_by_look_picks"]["0-0"]["pixel"] == 1.0 and f["seen_pixel"] == 0.0
