"""Slice figures: PNGs with real axes, drawn from a prediction on the F3 crop and from synthetic layers."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from daemon.executor.predict.figures import FigureError, SurveyAxes, slice_figure, slice_figures

AXES = SurveyAxes(np.arange(100, 112), np.arange(300, 320, 2), np.arange(0, 200, 4.0))


@pytest.fixture(scope="module")
def layers() -> dict[str, np.ndarray]:
    shape = (12, 10, 50)
    rng = np.random.default_rng(0)
    truth = np.broadcast_to((np.arange(50) // 17)[None, None, :], shape).copy()
    picks = np.full(shape, -1)
    picks[3, :, ::5] = truth[3, :, ::5]
    return {"seismic": rng.normal(size=shape).astype(np.float32), "prediction": truth.astype(np.uint8),
            "confidence": rng.uniform(size=shape).astype(np.float32), "ground_truth": truth, "picks": picks}


def test_every_chosen_slice_becomes_a_readable_png(tmp_path, layers) -> None:
    seismic = layers.pop("seismic")
    paths = slice_figures(tmp_path, seismic, AXES, {"inline": [103], "crossline": [310], "time": [96]},
                          class_names=["sand", "shale", "salt"], **layers)
    layers["seismic"] = seismic
    assert [p.name for p in paths] == ["inline_103.png", "crossline_310.png", "time_96.png"]
    for p in paths:
        image = mpimg.imread(p)
        assert image.shape[0] > 300 and image.shape[1] > 1000     # four panels side by side
        assert image[..., :3].std() > 0.05                          # something was drawn


def test_seismic_alone_gives_one_panel(tmp_path, layers) -> None:
    path = slice_figure(tmp_path / "s.png", layers["seismic"], AXES, "inline", 100)
    assert mpimg.imread(path).shape[1] < 900


@pytest.mark.parametrize("kind, value, words", [("inline", 99, "inline 99 is not in the survey"),
                                                ("time", 3.0, "time 3.0"), ("depth", 4, "slice kind")])
def test_slices_off_the_survey_are_refused(tmp_path, layers, kind, value, words) -> None:
    with pytest.raises(FigureError, match=words):
        slice_figure(tmp_path / "x.png", layers["seismic"], AXES, kind, value)


def test_f3_prediction_figure(tmp_path, shared_data) -> None:
    """A real crop of F3 with a prediction of its own (sign of the amplitude), drawn on real line numbers."""
    from workers.segy_import import import_segy
    survey = import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "f3")
    seismic = survey.volume("seismic")
    pred = (np.asarray(seismic) > 0).astype(np.uint8)
    paths = slice_figures(tmp_path / "fig", seismic, SurveyAxes.of(survey), {"inline": [121], "time": [200]},
                          prediction=pred, confidence=np.abs(np.tanh(seismic)), class_names=["trough", "peak"])
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_default_lines_hold_the_most_picks() -> None:
    from daemon.executor.predict.figures import lines_through_picks

    assert lines_through_picks(np.zeros((0, 3), np.int64), (10, 10, 10)) is None
    picks = np.array([[2, 7, 1], [2, 7, 3], [2, 8, 5], [9, 8, 7]])
    # inline 2 holds three; crosslines 7 and 8 hold two each (the middle of the tie: 8); samples one each (-> 5)
    assert lines_through_picks(picks, (10, 10, 10)) == (2, 8, 5)
