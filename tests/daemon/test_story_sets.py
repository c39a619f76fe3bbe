"""The interpreter's workflow whole, through seisctl only (each step a subprocess, as a user types it):

two synthetic surveys of different seeds (tools/synth.py) and ../shared/data/segyio/f3.sgy imported; picks on
each; an example set extracted from each; one train job from the sets of both synthetic surveys; predict on f3;
`predictions list` and `predictions info` show it; the survey viewer page of that SEG-Y prediction rendered in
headless Chromium with no request leaving the machine, its axes read from the page in f3's own inline, crossline
and time numbers (that part skips when Chromium is not installed).

Tiny settings keep it short: 32^3 surveys, 16 x 16 crops, one epoch of 6 batches of 16, a patch model predicting
every fourth voxel.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.daemon.headless_chromium import AXIS_TICKS, HeadlessChromium, find_chromium
from tests.harness import ROOT, RunningDaemon, daemon_env

sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402


def seisctl(home: Path, *args: str, timeout: float = 300) -> Any:
    """seisctl --json ARGS as a user runs it; exit status 0 asserted, its JSON document returned."""
    p = subprocess.run([sys.executable, "-m", "client.cli", "--json", *args], capture_output=True, text=True,
                       env=daemon_env(home), cwd=ROOT, timeout=timeout)
    assert p.returncode == 0, (args, p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return json.loads(p.stdout)


def succeeded(record: dict[str, Any]) -> dict[str, Any]:
    assert record["state"] == "succeeded", record.get("error")
    return record["result"]


def f3_picks(folder: Path) -> list[str]:
    """Two classes of points on f3's grid (inlines 111-133, crosslines 875-892, 0-296 ms), one file per class."""
    rng = np.random.default_rng(0)
    for cls, (t0, t1) in (("sand", (8, 36)), ("shale", (40, 72))):
        rows = [f"{rng.integers(111, 134)}\t{rng.integers(875, 893)}\t{4 * rng.integers(t0, t1)}" for _ in range(60)]
        (folder / f"multi_{cls}_ilxl.pts").write_text("\n".join(rows) + "\n")
    return sorted(str(p) for p in folder.glob("multi_*_ilxl.pts"))


def numbers(ticks: list[str]) -> list[float]:
    return [float(t.replace("\u2212", "-").replace(",", "")) for t in ticks]


def test_example_sets_of_two_synthetic_surveys_train_a_model_that_predicts_f3(
        tmp_path: Path, shared_data: Path) -> None:
    home = tmp_path / "home"
    allowed = f"[{shared_data.resolve()}, {tmp_path.resolve()}]"
    with RunningDaemon(home, env={"SEISD_PATHS__INPUTS": allowed}):
        for name, seed in (("syn0", 0), ("syn1", 1)):
            folder = tmp_path / name
            synth.write(synth.generate(shape=(32, 32, 32), seed=seed), folder)
            succeeded(seisctl(home, "survey", "import", str(folder / "seismic.sgy"), "--name", name))
            pts = sorted(str(p) for p in (folder / "picks").glob("*.pts"))
            succeeded(seisctl(home, "picks", "import", name, *pts, "--pattern", r"(?P<name>.+)\.pts"))
        f3 = succeeded(seisctl(home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name", "f3"))
        assert f3["inlines"] == [111, 133] and f3["crosslines"] == [875, 892]
        (tmp_path / "f3picks").mkdir()
        succeeded(seisctl(home, "picks", "import", "f3", *f3_picks(tmp_path / "f3picks")))

        counts = {}
        for survey in ("syn0", "syn1", "f3"):
            counts[survey] = succeeded(seisctl(home, "examples", "extract", f"{survey}-set", "--survey", survey,
                                               "--size", "16", "16"))["count"]
        listed = seisctl(home, "examples", "list")
        assert sorted(s["name"] for s in listed["examples"]) == ["f3-set", "syn0-set", "syn1-set"]
        assert all(n > 0 for n in counts.values()), counts

        job = {"kind": "train", "output": "two-synth",
               "data": {"examples": ["syn0-set", "syn1-set"], "crop": {"size": [16, 16]}, "batch_size": 16,
                        "batches_per_epoch": 6, "val_batches": 2, "split": {"block": 4, "gap": 2}},
               "model": {"name": "patchcnn", "params": {"filters": [8, 8, 8]}},
               "train": {"epochs": 1, "seed": 0, "early_stop": {"enabled": False}}}
        (tmp_path / "train.yaml").write_text(json.dumps(job))  # JSON is YAML
        trained = succeeded(seisctl(home, "submit", str(tmp_path / "train.yaml")))
        assert [s["name"] for s in trained["trained_on"]["sets"]] == ["syn0-set", "syn1-set"]
        assert set(trained["split"]["per_survey"]) == {"syn0", "syn1"}
        model = seisctl(home, "models", "info", "two-synth")
        assert "syn0-set" in json.dumps(model) and "syn1" in json.dumps(model)

        predicted = succeeded(seisctl(home, "predict", "two-synth", "f3", "--stride", "4", "--no-figures"))
        name = Path(predicted["output"]).name
        assert predicted["survey"] == "f3" and predicted["shape"] == [23, 18, 75]
        # f3's amplitudes (std about 2160) are far from the synthetic surveys' (about 1): the result says so
        assert len(predicted["warnings"]) == 1 and "survey 'f3'" in predicted["warnings"][0], predicted["warnings"]
        listing = seisctl(home, "predictions", "list")
        assert name in [p["name"] for p in listing["predictions"]]
        info = seisctl(home, "predictions", "info", name)
        assert info["name"] == name and "labels" in json.dumps(info)
        assert predicted["warnings"][0] in json.dumps(info, ensure_ascii=False)  # its summary keeps the warning

        chromium = find_chromium()
        if chromium is None:
            pytest.skip("chromium is not installed (apt-get install -y chromium): the viewer part was not run")
        url = seisctl(home, "viewer", "start", "examples")["url"]
        with HeadlessChromium(chromium) as browser:
            shot = browser.render(url + f"survey?name=f3&prediction={name}&picks=default&palette=greys", 3,
                                  evaluate=AXIS_TICKS)
        (tmp_path / "f3-prediction.png").write_bytes(shot.png)
        elsewhere = [r for r in shot.requests
                     if not r.startswith((url, url.replace("http:", "ws:"), "data:", "blob:"))]
        assert not elsewhere, f"the page asked other hosts than the viewer for {elsewhere}"
        axes: dict[str, list[list[float]]] = {}
        for axis in shot.value:
            if axis["label"] is not None:
                axes.setdefault(axis["label"], []).append(numbers(axis["ticks"]))
        assert sorted(axes) == ["crossline", "inline", "time (ms)"], shot.value
        ranges = {"inline": (111, 133), "crossline": (875, 892), "time (ms)": (0, 296)}
        for label, drawn in axes.items():
            lo, hi = ranges[label]
            for ticks in drawn:
                assert len(ticks) >= 2 and all(lo - 4 <= t <= hi + 4 for t in ticks), (label, ticks)
