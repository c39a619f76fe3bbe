"""Scores, HDF5 and SEG-Y exports, and the resume record."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from daemon.executor.predict.apply import predict_volume
from daemon.executor.predict.outputs import OutputError, ProgressRecord, load_outputs, score, write_hdf5, write_segy


def test_score_ignores_unlabelled_voxels_and_counts_by_hand() -> None:
    true = np.array([0, 0, 1, 1, -1, 2])
    pred = np.array([0, 1, 1, 1, 0, 1])
    s = score(pred, true, n_classes=3)
    assert s["n_scored"] == 5
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["per_class_accuracy"] == [0.5, 1.0, 0.0]
    assert s["mean_class_accuracy"] == pytest.approx(0.5)


def test_score_leaves_absent_classes_out_of_the_mean() -> None:
    s = score(np.array([0, 0, 1]), np.array([0, 0, 1]), n_classes=4)
    assert s["per_class_accuracy"] == [1.0, 1.0, None, None] and s["mean_class_accuracy"] == 1.0


@pytest.mark.parametrize("pred, true, words", [(np.zeros(3), np.zeros(4), "same voxels"),
                                               (np.array([0, 5]), np.array([0, 1]), "0..2")])
def test_score_refuses_mismatched_labels(pred, true, words) -> None:
    with pytest.raises(OutputError, match=words):
        score(pred, true, n_classes=3)


@pytest.fixture
def prediction(tmp_path) -> dict:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(23, 18, 75)).astype(np.float32)
    torch.manual_seed(0)
    return predict_volume(torch.nn.Conv2d(1, 3, 1), volume, out_dir=tmp_path / "pred", tile=(16, 32), device="cpu")


def test_hdf5_holds_every_output_with_the_survey_axes(tmp_path, prediction) -> None:
    arrays = load_outputs(prediction)
    path = write_hdf5(tmp_path / "p.h5", arrays, np.arange(111, 134), np.arange(875, 893), np.arange(4, 304, 4.0),
                      class_names=["a", "b", "c"], attrs={"model": "m1"})
    with h5py.File(path, "r") as f:
        assert f.attrs["inlines"].tolist() == list(range(111, 134))
        assert list(f.attrs["class_names"]) == ["a", "b", "c"] and f.attrs["model"] == "m1"
        for name, array in arrays.items():
            assert np.array_equal(f[name][...], array), name
        assert list(f["probabilities"].attrs["axes"]) == ["class", "inline", "crossline", "sample"]


def test_segy_export_keeps_the_source_geometry(tmp_path, shared_data) -> None:
    pytest.importorskip("workers.segy_write", reason="helper A's SEG-Y writer is not in this tree yet")
    import segyio
    from workers.segy_import import import_segy
    survey = import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "f3")
    torch.manual_seed(0)
    stats = survey.stats("seismic")
    result = predict_volume(torch.nn.Conv2d(1, 3, 1), survey.volume("seismic"), out_dir=tmp_path / "pred",
                            tile=(16, 32), normalisation=(stats["mean"], stats["std"]), device="cpu",
                            outputs=["labels", "probabilities", "confidence", "disagreement"])
    arrays = load_outputs(result)
    paths = write_segy(survey, tmp_path / "sgy", arrays, class_names=["a", "b", "c"])
    assert set(paths) == {"labels", "confidence", "disagreement", "probability_a", "probability_b", "probability_c"}
    with segyio.open(paths["labels"]) as f:
        assert list(f.ilines) == list(survey.inlines) and list(f.xlines) == list(survey.crosslines)
        assert np.array_equal(segyio.tools.cube(f).astype(np.int64), arrays["labels"].astype(np.int64))
    with segyio.open(paths["probability_b"]) as f:
        np.testing.assert_allclose(segyio.tools.cube(f), arrays["probabilities"][1], atol=1e-6)
    with segyio.open(paths["disagreement"]) as f:
        assert int(f.format) == 5 and np.array_equal(segyio.tools.cube(f), arrays["disagreement"])


def test_progress_record_round_trips_and_refuses_a_damaged_file(tmp_path) -> None:
    record = ProgressRecord(tmp_path / "progress.json")
    assert record.load() is None
    record.save({"chunks_done": 3, "key": {"a": [1, 2]}})
    assert record.load() == {"chunks_done": 3, "key": {"a": [1, 2]}}
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "progress.json").write_text("{not json")
    with pytest.raises(OutputError, match="delete it"):
        record.load()
