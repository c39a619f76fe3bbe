"""Where things live in the home is known in one module, daemon/common/home.py; a path built by hand elsewhere, or a
name list written twice, would drift from it. These tests keep that rule."""
from __future__ import annotations

import re
from pathlib import Path

from tests.harness import ROOT

from daemon.common import home

BY_HAND = re.compile(r'/ "(models|surveys|examples|predictions|jobs|keys|logs|viewers|picks)"|"seisd\.(db|lock)"')


def _sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def test_no_module_but_home_builds_the_homes_layout_by_hand() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in _sources("daemon")
                 if p != ROOT / "daemon" / "common" / "home.py"
                 for n, line in enumerate(p.read_text().splitlines(), start=1) if BY_HAND.search(line)]
    assert offenders == []


def test_the_output_names_are_written_once() -> None:
    written = [p.relative_to(ROOT) for p in _sources("daemon", "workers")
               if re.search(r'"labels",\s*"probabilities",\s*"confidence"', p.read_text())]
    assert written == [Path("daemon/kinds/predict.py")]


def test_the_layout(tmp_path: Path) -> None:
    assert home.model_file(tmp_path, "m") == tmp_path / "models" / "m.h5"
    assert home.example_set_file(tmp_path, "e") == tmp_path / "examples" / "e.h5"
    assert home.picks_file(tmp_path, "s", "p") == tmp_path / "surveys" / "s" / "picks" / "p.npz"
    assert home.prediction_folder(tmp_path, "p") == tmp_path / "predictions" / "p"
    assert home.job_folder(tmp_path, 7) == tmp_path / "jobs" / "7"
    assert home.resolve(tmp_path, "models/m.h5") == home.model_file(tmp_path, "m")
    assert home.resolve(tmp_path, "/abs/m.h5") == Path("/abs/m.h5")
    home.make_folders(tmp_path / "new")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(home.FOLDERS)
