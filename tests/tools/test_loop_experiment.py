"""tools/loop_experiment.py as a user runs it (a real daemon, real SEG-Y, a tiny survey): the arms and the retrain
lengths it compares."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_two_retrain_lengths_share_round_0_and_the_random_lines(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loop_experiment.py"), "--seeds", "1", "--first-seed", "100",
         "--rounds", "2", "--shape", "48", "48", "32", "--epochs", "1", "--retrain-epochs", "1", "2",
         "--arms", "random", "--no-ceiling"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["arms"] == ["random-e1", "random-e2"] and doc["retrain_epochs"] == [1, 2]
    run = doc["runs"][0]
    # one round 0 for both lengths, each length its own models: the same lines drawn, two rounds each
    assert [len(run[a]) for a in doc["arms"]] == [2, 2]
    assert run["random-e1_lines"] == run["random-e2_lines"]
    assert all(line["added"] > 0 for line in run["random-e1_lines"])
    assert "suggested" not in run and "suggested-e1" not in run and "ceiling" not in run
    table = out.stdout.splitlines()
    assert any(row.startswith("mean  random-e2") for row in table), out.stdout


def test_several_near_values_and_measures_run_the_suggested_arm_once_each_from_one_round_0(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loop_experiment.py"), "--seeds", "1", "--first-seed", "100",
         "--rounds", "1", "--shape", "48", "48", "32", "--epochs", "1", "--retrain-epochs", "1", "--near", "0", "6",
         "--measure", "confidence", "disagreement", "--no-ceiling"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    # the random arm does not suggest: one run of it, one of the suggested arm per (near, measure)
    variants = [(n, m) for n in (0, 6) for m in ("confidence", "disagreement")]
    assert doc["arms"] == [f"suggested-n{n}-{m}" for n, m in variants] + ["random"]
    assert doc["near"] == [0, 6] and doc["measure"] == ["confidence", "disagreement"]
    run = doc["runs"][0]
    assert all(len(run[a]) == 1 and run[f"{a}_lines"][0]["added"] > 0 for a in doc["arms"])
    # each suggested run's suggest job weighed by its own value and its own pick set, ranked by its own measure
    for n, m in variants:
        line = run[f"suggested-n{n}-{m}_lines"][0]
        assert (line["near"], line["picks"], line["measure"]) == (n, f"suggested-n{n}-{m}" if n else None, m)
    assert any(row.startswith("mean  suggested-n6-disagreement") for row in out.stdout.splitlines()), out.stdout
