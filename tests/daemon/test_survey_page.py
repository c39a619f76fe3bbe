"""The survey and example-set pages built in this process (a Bokeh Document, no browser): what they read and where
they draw it. The browser tests (test_viewer_browser.py) check that the same pages render, offline.

The home holds a survey imported from SEG-Y (tools/synth.py), its true facies as the label volume `truth`, picks on
an inline far from the middle, and predictions as `seisctl predict` leaves them by default: SEG-Y only.
"""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import ColorBar

from daemon.viewers.examples_page import ExampleSetPage
from daemon.viewers.survey_page import SurveyPage
from tests.daemon.test_viewers import wait_running
from tests.daemon.viewer_data import (PICKED_CROSSLINES, PICKED_INLINE, make_example_sets, make_segy_prediction,
                                      make_segy_survey)
from tests.harness import RunningDaemon


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """{home, survey, labels, classes}: a SEG-Y survey with `truth`, picks `facies`, predictions `segy-pred`
    (labels.sgy, confidence.sgy) and `conf-only` (confidence.sgy alone), and the example set `cubes`."""
    home = tmp_path_factory.mktemp("surveypage") / "home"
    made = make_segy_survey(home)
    make_segy_prediction(home, made["survey"], made["labels"], made["classes"], "segy-pred")
    make_segy_prediction(home, made["survey"], made["labels"], made["classes"], "conf-only",
                         outputs=("confidence",))
    make_example_sets(home, made["survey"])
    yield {"home": home, **made}


def page_of(home: dict, prediction: str | None, picks: str | None = "facies") -> SurveyPage:
    page = SurveyPage(Document(), home["home"])
    page.open_survey("synth", prediction, picks)
    return page


def test_a_segy_prediction_is_read_through_the_survey_geometry(home: dict) -> None:
    page = page_of(home, "segy-pred")
    assert page.problem == "" and page.labels is not None, page.problem
    labels = home["labels"]
    assert np.array_equal(np.asarray(page.labels[3]), labels[3])
    assert np.array_equal(np.asarray(page.labels[:, 7]), labels[:, 7])
    assert np.array_equal(np.asarray(page.labels[:, :, 11]), labels[:, :, 11])
    assert page.class_names == home["classes"]  # from the prediction's summary.json


def test_a_prediction_without_labels_says_what_to_do(home: dict) -> None:
    page = page_of(home, "conf-only")
    assert page.labels is None
    assert "conf-only" in page.problem and "confidence.sgy" in page.problem
    assert "--outputs labels" in page.problem and "--overwrite" in page.problem, page.problem


def test_a_label_volume_of_the_survey_is_shown_like_a_prediction(home: dict) -> None:
    page = page_of(home, None)
    assert "volume: truth" in page.prediction.options and "segy-pred" in page.prediction.options
    assert "volume: seismic" not in page.prediction.options  # amplitudes are not class ids
    page.prediction.value = "volume: truth"
    assert page.problem == "" and np.array_equal(np.asarray(page.labels[4]), home["labels"][4])


def test_every_axis_is_in_line_numbers_and_the_survey_units(home: dict) -> None:
    page = page_of(home, "segy-pred")
    s = home["survey"]
    il, xl, t = s.inlines, s.crosslines, s.samples
    inline_panel, crossline_panel, time_panel = page.panels
    assert (inline_panel.fig.x_range.start, inline_panel.fig.x_range.end) == (xl[0] - 0.5, xl[-1] + 0.5)
    assert (inline_panel.fig.y_range.start, inline_panel.fig.y_range.end) == (t[-1] + 2, t[0] - 2)  # time down
    assert (crossline_panel.fig.x_range.start, crossline_panel.fig.x_range.end) == (il[0] - 0.5, il[-1] + 0.5)
    assert (time_panel.fig.y_range.start, time_panel.fig.y_range.end) == (xl[0] - 0.5, xl[-1] + 0.5)
    assert inline_panel.fig.yaxis[0].axis_label == "time (ms)"
    assert [p.fig.xaxis[0].axis_label for p in page.panels] == ["crossline", "inline", "inline"]


def test_picks_lie_on_their_line_numbers(home: dict) -> None:
    page = page_of(home, None)
    page.lines[0].value = PICKED_INLINE
    xs = page.panels[0].points.data["x"]
    a, b = PICKED_CROSSLINES
    crosslines = home["survey"].crosslines
    assert xs and min(xs) == crosslines[a] and max(xs) == crosslines[b - 1]
    assert set(page.panels[0].points.data["y"]) <= set(home["survey"].samples.tolist())


def test_amplitudes_have_a_colour_bar_and_a_diverging_palette(home: dict) -> None:
    page = page_of(home, None)
    assert page.palette.value == "seismic"
    for panel in page.panels:
        bars = [r for r in panel.fig.right if isinstance(r, ColorBar)]
        assert len(bars) == 1 and bars[0].color_mapper is panel.mapper
        palette = list(panel.mapper.palette)
        assert palette[len(palette) // 2].lower() in ("#ffffff", "#fefefe")  # white at zero amplitude
        low, high = palette[0].lower(), palette[-1].lower()
        assert low[1:3] < low[5:7] and high[1:3] > high[5:7]  # blue below zero, red above


def test_example_crops_are_drawn_on_the_line_numbers_they_came_from(home: dict) -> None:
    page = ExampleSetPage(Document(), home["home"])
    page.open("cubes", 3)
    centre = [int(v) for v in page.h5["position"][3]]
    s = home["survey"]
    size = json.loads(page.h5.attrs["meta"])["crop"]["size"]
    first_xl = s.crosslines[0] + (centre[1] - size[1] // 2) * (s.crosslines[1] - s.crosslines[0])
    inline_slice = page.panels[0].fig
    assert inline_slice.x_range.start == first_xl - 0.5
    assert inline_slice.x_range.end == first_xl + size[1] - 0.5
    assert inline_slice.yaxis[0].axis_label == "time (ms)"


def test_the_index_page_needs_no_internet(home: dict, tmp_path: Path) -> None:
    h = tmp_path / "home"
    shutil.copytree(home["home"] / "surveys", h / "surveys")
    with RunningDaemon(h) as d:
        d.client.call("viewer.start", name="examples")
        url = wait_running(d.client, "examples")["url"]
        with urllib.request.urlopen(url, timeout=10) as r:
            page = r.read().decode()
    assert "http://" not in page and "https://" not in page, page
    assert 'href="survey?name=synth"' in page and 'href="examples"' in page
