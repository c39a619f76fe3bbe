"""The example-set and survey viewer, started by a real seisd, loaded in headless Chromium.

Skips when chromium is not installed (Debian: `apt-get install -y chromium`). The pages must draw their slices: the
plots' canvases are present and the screenshot's image area is coloured (seismic palette, prediction overlay), not
blank. The browser resolves no host but 127.0.0.1 (tests/daemon/headless_chromium.py), and every page is checked to
have requested nothing from another host. Screenshots are left in pytest's tmp_path for a human to look at.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from matplotlib import image as mpimg

from tests.daemon.headless_chromium import AXIS_TICKS, HeadlessChromium, Rendered, find_chromium
from tests.daemon.test_viewers import wait_running
from tests.daemon.viewer_data import (make_example_sets, make_prediction, make_segy_prediction, make_segy_survey,
                                      make_survey)
from tests.harness import RunningDaemon

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


def coloured_fraction(png: Path) -> float:
    """Share of the screenshot's pixels that are clearly coloured (saturation above 0.35, not white or grey)."""
    rgb = mpimg.imread(png)[..., :3].astype(np.float64)
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-9), 0)
    return float(np.mean(saturation > 0.35))


def distinct_colours(png: Path) -> int:
    rgb = (mpimg.imread(png)[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    return len(np.unique(rgb, axis=0))


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, HeadlessChromium, Path]]:
    """(viewer URL, browser, folder for screenshots) over a home with a survey, example sets and a prediction."""
    root = tmp_path_factory.mktemp("browser")
    home = root / "home"
    survey = make_survey(home)
    make_example_sets(home, survey)
    make_prediction(home)
    synth = make_segy_survey(home)  # as `seisctl predict` leaves it by default: SEG-Y only
    make_segy_prediction(home, synth["survey"], synth["labels"], synth["classes"], "segy-pred")
    with RunningDaemon(home) as d:
        d.client.call("viewer.start", name="examples")
        url = wait_running(d.client, "examples")["url"]
        with HeadlessChromium(CHROMIUM) as browser:
            yield url, browser, root


def shoot(viewer: tuple[str, HeadlessChromium, Path], page: str, name: str, canvases: int,
          evaluate: str | None = None) -> Rendered:
    url, browser, root = viewer
    shot = browser.render(url + page, canvases, evaluate=evaluate)
    path = root / f"{name}.png"
    path.write_bytes(shot.png)
    assert shot.canvases >= canvases, f"{page}: {shot.canvases} plot canvases drawn, expected {canvases} ({path})"
    elsewhere = [r for r in shot.requests if not r.startswith((url, url.replace("http:", "ws:"), "data:", "blob:"))]
    assert not elsewhere, f"{page} asked other hosts than the viewer for {elsewhere}"
    shot.path = path
    return shot


def test_example_set_page_draws_three_slices_of_a_3d_crop(viewer: tuple[str, HeadlessChromium, Path]) -> None:
    png = shoot(viewer, "examples?set=cubes&index=40", "examples-cubes", 3).path
    assert coloured_fraction(png) > 0.03, f"the slices look blank in {png}"
    assert distinct_colours(png) > 100


def test_example_set_page_draws_a_2d_crop(viewer: tuple[str, HeadlessChromium, Path]) -> None:
    png = shoot(viewer, "examples?set=images&index=5", "examples-images", 1).path
    assert coloured_fraction(png) > 0.01, f"the crop looks blank in {png}"


def test_survey_page_draws_the_prediction_over_the_seismic(viewer: tuple[str, HeadlessChromium, Path]) -> None:
    plain = shoot(viewer, "survey?name=tiny&palette=greys", "survey-plain", 3).path
    overlaid = shoot(viewer, "survey?name=tiny&prediction=facies-pred&picks=facies&palette=greys",
                     "survey-prediction", 3).path
    assert distinct_colours(plain) > 50, f"the seismic slices look blank in {plain}"
    # grey seismic alone is hardly coloured; the prediction overlay and the picks colour the slices
    assert coloured_fraction(overlaid) > coloured_fraction(plain) + 0.05, f"no prediction drawn in {overlaid}"


def numbers(ticks: list[str]) -> list[float]:
    return [float(t.replace("\u2212", "-")) for t in ticks]


def test_survey_page_shows_a_segy_prediction_on_line_numbers_offline(
        viewer: tuple[str, HeadlessChromium, Path]) -> None:
    """The acceptance test of the interpreter's workflow: a SEG-Y-only prediction drawn over its survey, every axis
    in inline / crossline numbers and ms as the page draws them, and no request leaving the machine."""
    shot = shoot(viewer, "survey?name=synth&prediction=segy-pred&picks=facies&palette=greys", "survey-segy", 3,
                 AXIS_TICKS)
    axes: dict[str, list[list[float]]] = {}
    for axis in shot.value:
        if axis["label"] is not None:  # the colour bars' axes (amplitudes) have none
            axes.setdefault(axis["label"], []).append(numbers(axis["ticks"]))
    assert sorted(axes) == ["crossline", "inline", "time (ms)"], shot.value
    assert all(len(drawn) == 2 for drawn in axes.values()), shot.value  # each on two of the three panels
    ranges = {"inline": (1000, 1031), "crossline": (2000, 2039), "time (ms)": (400, 400 + 47 * 4)}
    for label, drawn in axes.items():
        lo, hi = ranges[label]
        for ticks in drawn:
            assert len(ticks) >= 2 and all(lo - 4 <= t <= hi + 4 for t in ticks), (label, ticks, shot.path)
    # the prediction is drawn: the class colours cover the grey slices
    assert coloured_fraction(shot.path) > 0.05, f"no prediction drawn in {shot.path}"


def test_the_front_page_lists_the_pages_offline(viewer: tuple[str, HeadlessChromium, Path]) -> None:
    shot = shoot(viewer, "", "index", 0, "document.body.innerText")
    assert "synth" in shot.value and "segy-pred" in shot.value and "cubes" in shot.value
