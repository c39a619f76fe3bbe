"""tools/loop_experiment.py as a user runs it (a real daemon, real SEG-Y, a tiny survey): the arms and the retrain
lengths it compares."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import loop_experiment  # noqa: E402


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
    assert [(line["regions"], line["added"]) for line in run["random-e1_lines"]] == \
        [(line["regions"], line["added"]) for line in run["random-e2_lines"]]
    # a retrain length of its own: each length trains its own models from the same picks
    assert [line["model"] for line in run["random-e2_lines"]] == ["s100-random-e2-r1", "s100-random-e2-r2"]
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
    # the first target: each suggested run against the random one, in the mean, printed as the JSON line has it
    lead = doc["targets"]["lead_over_random"]
    assert sorted(lead) == sorted(doc["arms"][:-1]) and "short_of_ceiling" not in doc["targets"]
    for label, (x,) in lead.items():
        assert abs(x - (doc["mean_pixel"][label][0] - doc["mean_pixel"]["random"][0])) < 2e-4
        assert f"{label}: lead over random in the mean, round 1..1: {x:+.3f}" in out.stdout


def test_targets_lead_over_random_and_short_of_the_ceiling():
    def run(seed: int, ceiling: float, suggested: list[float], random: list[float]) -> dict:
        return {"seed": seed, "ceiling": {"pixel": ceiling},
                "suggested": [{"pixel": x} for x in suggested], "random": [{"pixel": x} for x in random]}
    runs = [run(1, 0.80, [0.60, 0.78], [0.55, 0.70]), run(2, 0.90, [0.70, 0.84], [0.72, 0.86])]
    found = loop_experiment.targets(runs, 2, ("suggested", "random"), {"suggested": "random"})
    assert found["lead_over_random"] == {"suggested": [0.015, 0.03]}
    assert found["short_of_ceiling"] == {"suggested": [0.2, 0.04], "random": [0.215, 0.07]}
    text = loop_experiment.verdicts(found, 2)
    assert "suggested: lead over random in the mean, round 1..2: +0.015 +0.030 (ahead after every round: yes)" in text
    assert "suggested: short of the ceiling after two added lines: 0.040 (within 0.03: no)" in text
    # a survey without its ceiling: no distance to it; a round behind random: not ahead after every round
    runs[1].pop("ceiling")
    runs[1]["suggested"][0]["pixel"] = 0.60
    found = loop_experiment.targets(runs, 2, ("suggested", "random"), {"suggested": "random"})
    assert "short_of_ceiling" not in found
    assert "(ahead after every round: no)" in loop_experiment.verdicts(found, 2)


def test_each_suggested_run_is_paired_with_the_random_run_of_its_retrain_length():
    runs = [("suggested-e12", "suggested", 12, 1, None, "confidence", "both"),
            ("suggested-e24", "suggested", 24, 1, None, "confidence", "both"),
            ("random-e12", "random", 12, 1, None, None, None), ("random-e24", "random", 24, 1, None, None, None)]
    assert loop_experiment.pair_with_random(runs) == {"suggested-e12": "random-e12", "suggested-e24": "random-e24"}
    # and by the lines a round is spread over
    split = [("suggested-l1", "suggested", 24, 1, None, "confidence", "both"),
             ("suggested-l2", "suggested", 24, 2, None, "confidence", "both"),
             ("random-l1", "random", 24, 1, None, None, None), ("random-l2", "random", 24, 2, None, None, None)]
    assert loop_experiment.pair_with_random(split) == {"suggested-l1": "random-l1", "suggested-l2": "random-l2"}
    # the kinds of line suggest may name are the suggested arm's alone: every --kinds run leads the one random run
    kinds = loop_experiment.parse(["--kinds", "both", "other"]).runs
    assert [r[0] for r in kinds] == ["suggested-kboth", "suggested-kother", "random"]
    assert loop_experiment.pair_with_random(kinds) == {"suggested-kboth": "random", "suggested-kother": "random"}
    assert loop_experiment.pair_with_random(runs[:2]) == {}  # --arms suggested: nothing to lead
    # no rounds: no lead to state, so no verdict that reads as a target missed
    assert loop_experiment.verdicts({"lead_over_random": {"suggested": []}}, 0) == ""


def test_a_round_spread_over_two_lines_picks_half_the_traces_on_each(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loop_experiment.py"), "--seeds", "1", "--first-seed", "100",
         "--rounds", "1", "--shape", "48", "48", "32", "--epochs", "1", "--retrain-epochs", "1",
         "--lines-per-round", "1", "2", "--no-ceiling"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["arms"] == ["suggested-l1", "suggested-l2", "random-l1", "random-l2"]
    assert doc["lines_per_round"] == [1, 2]
    run = doc["runs"][0]
    width = run["round_traces"]
    for arm, n in (("suggested-l1", 1), ("suggested-l2", 2), ("random-l1", 1), ("random-l2", 2)):
        [one] = run[f"{arm}_lines"]
        assert len(one["regions"]) == n, one
        # each region holds round(width / n) traces, and the picks added are every sample of them (a voxel two
        # crossing lines share counted once)
        assert all(r["traces"][1] - r["traces"][0] + 1 == max(1, round(width / n)) for r in one["regions"]), one
        assert 0 < one["added"] <= n * max(1, round(width / n)) * 32
    # the suggested arm takes the lines suggest ranks first: two different lines
    two = run["suggested-l2_lines"][0]["regions"]
    assert (two[0]["kind"], two[0]["line"]) != (two[1]["kind"], two[1]["line"])
    lead = doc["targets"]["lead_over_random"]
    assert sorted(lead) == ["suggested-l1", "suggested-l2"]
    assert abs(lead["suggested-l2"][0] - (doc["mean_pixel"]["suggested-l2"][0]
                                          - doc["mean_pixel"]["random-l2"][0])) < 2e-4


def test_kinds_other_alternates_the_kind_of_line_from_the_first_picks_inline(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "loop_experiment.py"), "--seeds", "1", "--first-seed", "100",
         "--rounds", "2", "--shape", "48", "48", "32", "--epochs", "1", "--retrain-epochs", "1",
         "--kinds", "both", "other", "crossline", "--arms", "suggested", "--no-ceiling"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["arms"] == ["suggested-kboth", "suggested-kother", "suggested-kcrossline"]
    assert doc["kinds"] == ["both", "other", "crossline"]
    run = doc["runs"][0]
    # the kinds each round's suggest job was given, and the kind of the line it named
    asked = {a: [line["kinds"] for line in run[f"{a}_lines"]] for a in doc["arms"]}
    named = {a: [line["regions"][0]["kind"] for line in run[f"{a}_lines"]] for a in doc["arms"]}
    assert asked["suggested-kboth"] == [["inline", "crossline"]] * 2
    # other: round 1 a crossline (the first picks lie on an inline), round 2 an inline (round 1's was a crossline)
    assert asked["suggested-kother"] == [["crossline"], ["inline"]]
    assert named["suggested-kother"] == ["crossline", "inline"]
    assert asked["suggested-kcrossline"] == [["crossline"]] * 2 and named["suggested-kcrossline"] == ["crossline"] * 2
    # the same round-1 suggestion where the kinds allowed agree
    assert run["suggested-kother_lines"][0]["regions"] == run["suggested-kcrossline_lines"][0]["regions"]
    assert any(row.startswith("mean  suggested-kother") for row in out.stdout.splitlines()), out.stdout
    # same picks, same model: crossline's round 1 takes other's model and score (its own set still gets the picks);
    # its round 2 (a crossline where other took an inline) is trained from that model
    other, cross = run["suggested-kother_lines"], run["suggested-kcrossline_lines"]
    assert cross[0]["model"] == other[0]["model"] == "s100-suggested-kother-r1"
    assert run["suggested-kcrossline"][0] == run["suggested-kother"][0] and cross[0]["added"] == other[0]["added"] > 0
    said = [row for row in out.stderr.splitlines() if "suggested-kcrossline round 1," in row]
    assert len(said) == 1 and said[0].endswith("(model s100-suggested-kother-r1: the same picks)"), out.stderr
    assert cross[1]["model"] == "s100-suggested-kcrossline-r2" and other[1]["model"] == "s100-suggested-kother-r2"
    # every round of every run: its own model unless an earlier run had made the same picks up to that round
    first: dict[str, str] = {}
    for a in doc["arms"]:
        history = ""
        for r, line in enumerate(run[f"{a}_lines"], 1):
            history += json.dumps(line["regions"])
            assert line["model"] == first.setdefault(history, f"s100-{a}-r{r}"), (a, r)


def test_regions_that_cross_write_their_shared_voxels_once(tmp_path: Path):
    import numpy as np
    import synth

    s = synth.generate(shape=(32, 32, 32), seed=3, family="varied")
    names = sorted(s.class_names)
    files = loop_experiment.write_regions(tmp_path / "r", s, names, [("inline", 4, (0, 15)), ("crossline", 6, (0, 9))])
    rows = [line.split("\t") for f in files for line in Path(f).read_text().splitlines()]
    keys = {(r[0], r[1], r[2]) for r in rows}
    assert len(rows) == len(keys) == (16 + 10 - 1) * 32  # inline 4 crosses crossline 6 within both: once
    # each voxel in the file of its own class
    for f in files:
        cls = list(s.class_names).index(Path(f).stem)
        for a, b, c in (line.split("\t") for line in Path(f).read_text().splitlines()):
            i, x = int(np.flatnonzero(s.inlines == int(a))[0]), int(np.flatnonzero(s.crosslines == int(b))[0])
            k = int(np.flatnonzero(np.isclose(s.samples_ms, float(c)))[0])
            assert s.labels[i, x, k] == cls


def test_more_lines_a_round_than_suggest_can_name_stops_the_run_by_name(tmp_path: Path):
    # on 48 x 48 traces the margins and spacing leave far fewer than 40 lines: no round silently smaller than asked;
    # the oracle ranks as suggest does, so it refuses the same way, by its own name
    for arm in ("suggested", "oracle"):
        out = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "loop_experiment.py"), "--seeds", "1", "--first-seed", "100",
             "--rounds", "1", "--shape", "48", "48", "32", "--epochs", "1", "--retrain-epochs", "1",
             "--lines-per-round", "40", "--arms", arm, "--no-ceiling"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert out.returncode != 0
        assert f"{arm} named" in out.stderr and "lines of the 40 asked for" in out.stderr, out.stderr[-3000:]
        if arm == "suggested":
            assert "; use fewer --lines-per-round" in out.stderr, out.stderr[-3000:]


def test_anew_trains_the_job_file_anew_on_each_runs_grown_set_and_scores_it(tmp_path: Path):
    from tests.harness import RunningDaemon

    args = loop_experiment.parse(["--seeds", "1", "--rounds", "1", "--shape", "48", "48", "32", "--epochs", "1",
                                  "--retrain-epochs", "1", "--anew", "--no-ceiling"])
    with RunningDaemon(tmp_path / "home", start_timeout=60) as d:
        run = loop_experiment.one_seed(d.client, tmp_path, 100, args)
        specs = [d.client.show(j["id"])["spec"] for j in d.client.jobs(kind="train")]
    specs = {spec["output"]: spec for spec in specs}
    for arm in ("suggested", "random"):
        # the retrain resumes from round 0's model; the anew model starts from nothing, on the arm's set
        assert specs[f"s100-{arm}-r1"]["train"]["init_from"] == "models/s100-r0.h5"
        anew = specs[f"s100-{arm}-anew"]
        assert anew["data"]["picks"] == arm and anew["train"].get("mode", "new") == "new"
        assert not anew["train"].get("init_from")
        assert anew["train"]["epochs"] == 1 == specs["s100-r0"]["train"]["epochs"]  # the job file's, as round 0's
        assert 0 <= run[f"{arm}_anew"]["pixel"] <= 1
    # the column and the distance to the ceiling, from a run's scores
    runs = [{**run, "ceiling": {"pixel": run["suggested_anew"]["pixel"] + 0.02}}]
    assert "anew" in loop_experiment.table(runs, 1, ("suggested", "random")).splitlines()[1].split()
    found = loop_experiment.targets(runs, 1, ("suggested", "random"), {"suggested": "random"})
    assert abs(found["anew_short_of_ceiling"]["suggested"] - 0.02) < 2e-4
    assert ("suggested: trained anew after round 1, short of the ceiling: 0.020 (within 0.03: yes)"
            in loop_experiment.verdicts(found, 1))


def test_the_oracle_arm_takes_the_region_of_the_most_errors_of_its_last_prediction(tmp_path: Path):
    import numpy as np
    import synth
    from tests.harness import RunningDaemon

    args = loop_experiment.parse(["--seeds", "1", "--rounds", "1", "--shape", "48", "48", "32", "--epochs", "1",
                                  "--retrain-epochs", "1", "--arms", "oracle", "random", "--no-ceiling"])
    assert [r[0] for r in args.runs] == ["oracle", "random"]
    assert loop_experiment.pair_with_random(args.runs) == {"oracle": "random"}
    with RunningDaemon(tmp_path / "home", start_timeout=60) as d:
        run = loop_experiment.one_seed(d.client, tmp_path, 100, args)
        # round 0's prediction, as the predict job wrote it, against the generator's truth: brute force over every
        # window of the region's width on every line inside the margin (3 lines on 48)
        summary = json.loads((d.home / "predictions" / "s100-r0-s100" / "summary.json").read_text())
    import segyio

    with segyio.open(summary["paths"]["labels"], ignore_geometry=True) as f:
        predicted = np.asarray(f.trace.raw[:]).reshape(48, 48, 32)  # every trace, inline by inline
    s = synth.generate(shape=(48, 48, 32), seed=100, family="varied")
    names = sorted(s.class_names)
    truth = np.array([names.index(n) for n in s.class_names])[np.asarray(s.labels)]
    wrong = (predicted != truth).mean(axis=2)  # [inline, crossline] share of wrong samples
    [line] = run["oracle_lines"]
    [region] = line["regions"]
    width = region["traces"][1] - region["traces"][0] + 1
    assert width == run["round_traces"] and line["added"] == width * 32
    best = max(max(wrong[k, t:t + width].mean(), wrong[t:t + width, k].mean())
               for k in range(3, 45) for t in range(3, 45 - width + 1))
    k = int(np.flatnonzero((s.inlines if region["kind"] == "inline" else s.crosslines) == region["line"])[0])
    t0, t1 = region["traces"]
    chosen = wrong[k, t0:t1 + 1] if region["kind"] == "inline" else wrong[t0:t1 + 1, k]
    assert 3 <= k < 45 and t0 >= 3 and t1 < 45
    assert abs(chosen.mean() - best) < 1e-9, (region, chosen.mean(), best)
    assert best > wrong.mean()  # a one-epoch model is wrong somewhere more than in the mean
