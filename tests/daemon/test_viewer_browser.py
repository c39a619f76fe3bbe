"""The example-set and survey viewer, started by a real seisd, loaded in headless Chromium.

Skips when chromium is not installed (Debian: `apt-get install -y chromium`). The pages must draw their slices: the
plots' canvases are present and the screenshot's image area is coloured (seismic palette, prediction overlay), not
blank. Screenshots are left in pytest's tmp_path for a human to look at.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from matplotlib import image as mpimg

from tests.daemon.headless_chromium import HeadlessChromium, find_chromium
from tests.daemon.test_viewers import wait_running
from tests.daemon.viewer_data import make_example_sets, make_prediction, make_survey
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
    with RunningDaemon(home) as d:
        d.client.call("viewer.start", name="examples")
        url = wait_running(d.client, "examples")["url"]
        with HeadlessChromium(CHROMIUM) as browser:
            yield url, browser, root


def shoot(viewer: tuple[str, HeadlessChromium, Path], page: str, name: str, canvases: int) -> Path:
    url, browser, root = viewer
    png, seen = browser.render(url + page, canvases)
    path = root / f"{name}.png"
    path.write_bytes(png)
    assert seen >= canvases, f"{page}: {seen} plot canvases drawn, expected {canvases} (screenshot {path})"
    return path


def test_example_set_page_draws_three_slices_of_a_3d_crop(viewer: tuple[str, HeadlessChromium, Path]) -> None:
    png = shoot(viewer, "examples?set=cubes&index=40", "examples-cubes", 3)
    assert coloured_fraction(png) > 0.03, f"the slices look blank in {png}"
    assert distinct_colours(png) > 100


def test_example_set_page_draws_a_2d_crop(viewer: tuple[str, HeadlessChromium, Path]) -> None:
    png = shoot(viewer, "examples?set=images&index=5", "examples-images", 1)
    assert coloured_fraction(png) > 0.01, f"the crop looks blank in {png}"


def test_survey_page_draws_the_prediction_over_the_seismic(viewer: tuple[str, HeadlessChromium, Path]) -> None:
    plain = shoot(viewer, "survey?name=tiny", "survey-plain", 3)
    overlaid = shoot(viewer, "survey?name=tiny&prediction=facies-pred&picks=facies", "survey-prediction", 3)
    assert distinct_colours(plain) > 50, f"the seismic slices look blank in {plain}"
    # grey seismic alone is hardly coloured; the prediction overlay and the picks colour the slices
    assert coloured_fraction(overlaid) > coloured_fraction(plain) + 0.05, f"no prediction drawn in {overlaid}"
