"""tools/synth.py: the synthetic facies survey, its files and its baselines (real files, real segyio)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import segyio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402

SMALL = (64, 64, 64)


@pytest.fixture(scope="module")
def small() -> synth.SynthSurvey:
    return synth.generate(SMALL, seed=3)


@pytest.fixture(scope="module")
def written(small: synth.SynthSurvey, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    synth.write(small, folder)
    return folder


def _read_pts(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter="\t", ndmin=2)


def test_same_seed_gives_identical_arrays_and_files(small: synth.SynthSurvey, written: Path, tmp_path: Path):
    again = synth.generate(SMALL, seed=3)
    assert np.array_equal(again.seismic, small.seismic) and np.array_equal(again.labels, small.labels)
    synth.write(again, tmp_path)
    for name in ["seismic.sgy", "labels.sgy", "classes.json", *[f"picks/{n}.pts" for n in small.class_names]]:
        assert (tmp_path / name).read_bytes() == (written / name).read_bytes(), name


def test_another_seed_gives_another_survey(small: synth.SynthSurvey):
    other = synth.generate(SMALL, seed=4)
    assert not np.array_equal(other.labels, small.labels)
    assert np.abs(other.seismic - small.seismic).mean() > 0.1


def test_all_classes_in_labels_and_picks(small: synth.SynthSurvey):
    n = len(small.class_names)
    assert n >= 6
    assert np.all(np.bincount(small.labels.ravel(), minlength=n) > 0)
    assert np.all(np.bincount(small.picks.class_id, minlength=n) > 0)


def test_picks_cover_part_of_one_inline_and_match_labels(small: synth.SynthSurvey):
    p = small.picks
    assert np.unique(p.inline_index).size == 1
    covered = np.unique(p.crossline_index)
    assert 0 < covered.min() and covered.max() < SMALL[1] - 1 and covered.size < 0.7 * SMALL[1]
    assert np.array_equal(small.labels[p.inline_index, p.crossline_index, p.sample_index], p.class_id)


def test_pick_files_are_malenov_style_and_agree_with_labels_sgy(small: synth.SynthSurvey, written: Path):
    with segyio.open(written / "labels.sgy", iline=189, xline=193) as f:
        labels = segyio.tools.cube(f)
        il_of = {v: i for i, v in enumerate(f.ilines)}
        xl_of = {v: i for i, v in enumerate(f.xlines)}
        t_of = {v: i for i, v in enumerate(f.samples)}
    total = 0
    for cid, name in enumerate(small.class_names):
        raw = (written / "picks" / f"{name}.pts").read_bytes()
        assert b"\r" not in raw and raw.count(b"\n") == raw.count(b"\t") // 2
        rows = _read_pts(written / "picks" / f"{name}.pts")
        assert rows.shape[1] == 3 and np.unique(rows[:, 0]).size == 1
        idx = [(il_of[a], xl_of[b], t_of[c]) for a, b, c in rows]
        assert all(labels[i, j, k] == cid for i, j, k in idx)
        total += len(rows)
    assert total == small.picks.class_id.size


def test_segy_geometry_reopens_with_promised_lines_samples_and_coordinates(small: synth.SynthSurvey, written: Path):
    doc = json.loads((written / "classes.json").read_text())
    for name in ("seismic.sgy", "labels.sgy"):
        with segyio.open(written / name, iline=189, xline=193) as f:
            assert f.sorting == segyio.TraceSortingFormat.INLINE_SORTING and int(f.format) == 5
            assert list(f.ilines) == list(small.inlines) and f.ilines[0] == 1000 == doc["inlines"]["first"]
            assert list(f.xlines) == list(small.crosslines) and f.xlines[0] == 2000
            assert np.allclose(f.samples, small.start_ms + 4.0 * np.arange(SMALL[2])) and f.samples[0] == 400
            assert f.bin[segyio.BinField.Interval] == 4000
            h = f.header[5 * SMALL[1] + 7]
            scale = abs(h[segyio.TraceField.SourceGroupScalar])
            assert scale == 100 and h[segyio.TraceField.DelayRecordingTime] == 400
            assert h[segyio.TraceField.CDP_X] / scale == pytest.approx(small.cdp_x[5, 7], abs=0.01)
            assert h[segyio.TraceField.CDP_Y] / scale == pytest.approx(small.cdp_y[5, 7], abs=0.01)
            assert 1e5 < small.cdp_x[5, 7] < 1e6 and 1e6 < small.cdp_y[5, 7] < 1e7
            cube = segyio.tools.cube(f)
        expected = small.seismic if name == "seismic.sgy" else small.labels.astype(np.float32)
        assert np.array_equal(cube, expected)
    assert [c["name"] for c in doc["classes"]] == list(small.class_names) and doc["seed"] == 3


def test_grid_is_rotated_with_25m_bins(small: synth.SynthSurvey):
    step_il = np.hypot(small.cdp_x[1, 0] - small.cdp_x[0, 0], small.cdp_y[1, 0] - small.cdp_y[0, 0])
    step_xl = np.hypot(small.cdp_x[0, 1] - small.cdp_x[0, 0], small.cdp_y[0, 1] - small.cdp_y[0, 0])
    assert step_il == pytest.approx(25, abs=0.02) and step_xl == pytest.approx(25, abs=0.02)
    assert small.cdp_x[1, 0] != small.cdp_x[0, 0] and small.cdp_y[1, 0] != small.cdp_y[0, 0]


@pytest.mark.parametrize("seed", [0, 3])
def test_depth_and_amplitude_alone_do_not_classify(seed: int):
    s = synth.generate((96, 96, 64), seed=seed)
    assert synth.depth_only_baseline(s.labels, s.picks) <= 0.5
    assert synth.amplitude_only_baseline(s.seismic, s.labels, s.picks) <= 0.5


def test_baselines_reach_full_accuracy_when_the_signal_is_there(small: synth.SynthSurvey):
    """The baselines are real classifiers: fed a cube where depth or amplitude does tell the class, they score 1."""
    layered = np.broadcast_to((np.arange(SMALL[2]) // 10 % 3).astype(np.uint8), SMALL).copy()
    picks = synth.PickSet(*np.nonzero(layered[:1] >= 0), layered[0].ravel().astype(np.int64))
    assert synth.depth_only_baseline(layered, picks) == 1.0
    amp = layered.astype(np.float32) * 2 - 1
    assert synth.amplitude_only_baseline(amp, layered, picks) == 1.0


def test_labels_move_with_the_strata_across_faults():
    faulted = synth.generate(SMALL, seed=5, n_faults=2)
    flat = synth.generate(SMALL, seed=5, n_faults=0)
    assert len(faulted.faults) == 2 and all(f.throw >= 2 for f in faulted.faults)
    ii, jj, zz = np.meshgrid(*[np.arange(n) for n in SMALL], indexing="ij")
    throw = synth.fault_throw(faulted.faults, ii, jj, zz, SMALL[2])
    assert 0.1 < np.mean(throw > 0) < 0.9  # both walls present
    ok = zz - throw >= 0
    assert np.array_equal(faulted.labels[ok], flat.labels[ii[ok], jj[ok], (zz - throw)[ok]])
    # across the fault plane the label columns are offset: differences concentrate next to the plane
    hanging = throw > 0
    assert np.any(faulted.labels[hanging] != flat.labels[hanging])


def test_bad_options_are_refused_with_the_reason():
    with pytest.raises(synth.SynthError, match="unknown classes"):
        synth.generate(SMALL, classes=["parallel_high", "granite"])
    with pytest.raises(synth.SynthError, match="at least 6"):
        synth.generate(SMALL, classes=["parallel_high", "salt", "wavy"])
    with pytest.raises(synth.SynthError, match="shape"):
        synth.generate((8, 64, 64))
    with pytest.raises(synth.SynthError, match="noise"):
        synth.generate(SMALL, noise=-1)


def test_six_classes_without_salt(tmp_path: Path):
    s = synth.generate(SMALL, seed=1, n_classes=6)
    assert s.class_names == tuple(sorted(list(synth.FACIES)[:6])) and "salt" not in s.class_names
    assert set(np.unique(s.labels)) == set(range(6)) and set(np.unique(s.picks.class_id)) == set(range(6))


def test_cli_writes_the_folder_and_figure(tmp_path: Path):
    out = tmp_path / "survey"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "synth.py"), str(out), "--shape", "48", "48", "48",
                          "--seed", "2", "--figure"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "seismic.sgy" in run.stdout and "baseline" in run.stdout
    assert (out / "figure.png").stat().st_size > 10_000 and len(list((out / "picks").glob("*.pts"))) == 7
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "synth.py"), str(out), "--classes", "granite"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown classes" in bad.stderr


def test_default_size_cube(tmp_path: Path):
    """The default 256 x 256 x 128 cube: all classes picked, baselines low (no timing asserted here)."""
    s = synth.generate()
    assert s.seismic.shape == (256, 256, 128) and s.seismic.dtype == np.float32 and s.labels.dtype == np.uint8
    assert np.all(np.bincount(s.picks.class_id, minlength=7) > 100)
    assert synth.depth_only_baseline(s.labels, s.picks) <= 0.5
    assert synth.amplitude_only_baseline(s.seismic, s.labels, s.picks) <= 0.4


def _load_check():
    import synth_check
    return synth_check


def test_check_baselines_stay_under_the_limits_on_a_small_cube():
    """tools/synth_check.py scores the network against these: depth-only <= 0.5, amplitude-only well under 0.85."""
    check = _load_check()
    for seed in (0, 2):
        figures = check.baselines(synth.generate((96, 96, 64), seed=seed))
        assert figures["depth_only"] <= 0.5 and figures["amplitude_only"] <= 0.5, (seed, figures)


def test_check_runs_end_to_end_and_refuses_a_training_budget_past_ten_minutes():
    check = _load_check()
    with pytest.raises(check.CheckError, match="train-seconds"):
        check.run_check((40, 40, 40), train_seconds=601)
    out = check.run_check((40, 40, 40), seed=1, crop=16, train_seconds=5, epochs=1, stride=8)
    assert set(out["recall"]) == set(synth.FACIES) and 0 <= out["pixel_accuracy"] <= 1
    assert out["depth_only"] <= 0.5 and out["train"]["steps"] >= 1


def test_class_ids_follow_sorted_pick_file_names(small: synth.SynthSurvey, written: Path):
    # a reader that takes picks/*.pts in sorted order (shell glob, tools/demo.py) must get labels.sgy's ids
    files = sorted((written / "picks").glob("*.pts"))
    assert [p.stem for p in files] == list(small.class_names)
    for cid, path in enumerate(files):
        rows = _read_pts(path)
        j = np.searchsorted(small.crosslines, rows[:, 1].astype(int))
        k = np.rint((rows[:, 2] - small.start_ms) / small.sample_interval_ms).astype(int)
        assert np.all(small.labels[small.labels.shape[0] // 2, j, k] == cid)


def test_flat_sanity_case_has_no_structure():
    s = synth.generate((48, 48, 48), seed=1, structure=False)
    assert s.faults == ()
    # away from the channels and the salt body, a layer cake: every trace has the same labels
    bodies = np.isin(s.labels, [s.class_names.index("channel_fill"), s.class_names.index("salt")])
    ref = s.labels[0, 0]
    same = (s.labels == ref[None, None, :]) | bodies | bodies[0, 0][None, None, :]
    assert same.all()
    assert synth.depth_only_baseline(s.labels, s.picks) > 0.6
