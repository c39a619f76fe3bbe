"""The interpreter in the loop, played with the generator's truth: suggested lines against random ones.

    python tools/loop_experiment.py [--seeds 2] [--rounds 2] [--first-seed 100] [--full] [--shape I X S]
                                    [--epochs N] [--retrain-epochs N [N ...]] [--retrain-lr LR] [--no-ceiling]
                                    [--config FILE] [--family varied] [--measure M [M ...]]
                                    [--near N [N ...]] [--lines-per-round N [N ...]]
                                    [--arms suggested random oracle]
                                    [--kinds K [K ...]] [--anew]

For each survey (tools/synth.py, the varied family unless --family says otherwise, seeds first-seed .. first-seed +
seeds - 1) in a real seisd of a temporary home:
the usual picks (part of the middle inline) are imported and the job trained (round 0). Then, for R rounds, each of
two arms adds picks of one line (of N with --lines-per-round N) and retrains: the "suggested" arm picks the region of
the line `suggest` ranks first
(by --measure) on its last model's prediction, the "random" arm a region of the same size on a line drawn at random
(an inline or a crossline, seeded). A round's picks are what a human would pick there: every sample of as many
traces as the first round's picks hold (labels from the generator's truth), imported with `picks.add`; the model is
retrained with `train.mode: resume` from the arm's last model (a few epochs; --retrain-lr: at that learning rate
in place of the job file's), predicted, and scored over the whole cube against the truth. The ceiling: the same job,
trained anew on the truth of 8 whole inlines (evenly spaced); --no-ceiling skips it and --arms suggested runs one
arm (A/B runs of the retrains, whose round 0 and ceiling are known). Several --retrain-epochs run each arm once per
length from the same round 0 (rows "suggested-e12", "suggested-e24", ...; the random arms draw the same lines);
several --near run the suggested arm once per value of suggest's `near` (how far the weight of the arm's picks
reaches; 0: none), rows "suggested-n0", "suggested-n32"; several --measure once per measure, rows
"suggested-confidence", "suggested-disagreement". --lines-per-round N spreads a round's traces over N lines (1/N of
them each: the N lines `suggest` ranks first, or N random ones); several values run each arm once per value, rows
"suggested-l1", "suggested-l2"; the random arms share one seeded stream, so with N lines a round the first round
takes the lines the one-line arm takes in rounds 1..N. With N lines a round, the target's "two added lines" reads
after two rounds (2N lines). --kinds restricts the kinds of line `suggest` may name: both (the default),
inline, crossline, or other (the kind the arm's last line is not: round 1 a crossline, as the first picks lie on an
inline, round 2 an inline, ...); several values run the suggested arm once per value, rows "suggested-kboth",
"suggested-kother". --anew, after each run's last round, also trains the job file anew on the run's grown
pick set (train.mode new, its whole budget, as the ceiling is trained) and scores it (column "anew"): whether the
distance to the ceiling lies in the picks or in the short resume retrains. --arms oracle adds a third arm (not
run by default) that knows the truth: each round it takes the region where its last model's prediction has the
most errors, windows, margin and spacing as `suggest` has them (daemon/executor/runners/suggest.py rank_lines, on
the share of wrong voxels in place of the uncertainty): what a ranking that found the model's errors exactly would
give (the reference for any measure `suggest` could rank by, though not a strict bound: the region of the most
errors need not teach the model most). A run whose picks so far are an earlier run's (the same regions every round,
the same retrain length) takes that run's model and score in place of training the same one again.

Prints a table (accuracy per round, per seed and the mean), the issue's two targets (the suggested runs' lead
over random in the mean after each round; with the ceiling, how far each run is short of it after two added
lines) and, last, one JSON line with every figure. The default
is small (64^3, a small U-Net, a few epochs: a few minutes on two cores); --full takes the job file as it is, on
256 x 256 x 128 surveys.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import synth  # noqa: E402

from client.retrain import RETRAIN_EPOCHS, from_model  # noqa: E402
from daemon.common.home import prediction_folder, survey_folder  # noqa: E402
from daemon.executor.runners.suggest import PredictionVolumes, rank_lines, uncertainty_grid  # noqa: E402
from daemon.kinds.suggest import MEASURES, SuggestSpec  # noqa: E402
from workers.survey import Survey  # noqa: E402
from tests.harness import RunningDaemon  # noqa: E402

CONFIG = ROOT / "configs" / "train_facies_unet.yaml"
PATTERN = r"(?P<name>.+)\.pts"
ARMS = ("suggested", "random", "oracle")  # oracle: only when --arms names it
# the axes an arm's runs vary along, in the order of an entry of args.runs after (label, arm): (label prefix, option,
# only the suggested arm has it). A label names the axes that vary ("suggested-e24-n32-disagreement"); an axis of the
# suggested arm alone is None in a random or oracle run, and a suggested or oracle run is paired with the random run
# that matches it on every other axis (pair_with_random).
AXES = (("e", "retrain_epochs", False), ("l", "lines_per_round", False), ("n", "near", True), ("", "measure", True),
        ("k", "kinds", True))
# --kinds: the kinds of line `suggest` may name; "other": the kind the arm's last line is not
KINDS = ("both", "inline", "crossline", "other")


def _ok(client: Any, job: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    record = client.wait(client.submit(job)["id"], timeout=timeout)
    if record["state"] != "succeeded":
        raise RuntimeError(f"{job['kind']} job {record['id']} ended {record['state']}: {record.get('error')}")
    return record["result"]


def train_job(args: argparse.Namespace, output: str, survey: str, picks: str,
              retrain: tuple[str, int] | None = None) -> dict[str, Any]:
    """The job file, made small unless --full; a retrain (model, epochs) resumes from that model for so many epochs."""
    job = yaml.safe_load((args.config or CONFIG).read_text())
    job.update(output=output, overwrite=True)
    job["data"].update(survey=survey, picks=picks)
    if not args.full:
        job["data"].update(crop={"size": [32, 32], "orientation": "inline"}, batches_per_epoch=15, val_batches=2)
        job["data"]["split"].update(block=8, gap=4)
        job["model"]["params"].update(base=8, depth=3, members=1)
        job["train"].update(epochs=args.epochs or 8, max_minutes=None)
        job["train"]["early_stop"] = {"enabled": False}
    elif args.epochs:
        job["train"]["epochs"] = args.epochs
    if retrain is not None:
        start, epochs = retrain
        from_model(job, start, "resume", epochs)
        if args.retrain_lr is not None:
            job["optim"]["lr"] = args.retrain_lr
    return job


def score(client: Any, model: str, survey: str) -> dict[str, float]:
    """Whole-cube accuracy of the model's prediction, which keeps the outputs `suggest` reads."""
    r = _ok(client, {"kind": "predict", "model": model, "survey": survey, "truth": "truth", "overwrite": True,
                     "outputs": ["labels", "confidence", "disagreement"], "figures": {"enabled": False}})
    return {"pixel": round(r["scores"]["pixel_accuracy"], 4), "class": round(r["scores"]["mean_class_accuracy"], 4)}


def write_regions(folder: Path, s: Any, names: list[str], regions: list[tuple[str, int, tuple[int, int]]]
                  ) -> list[str]:
    """Pick files (one per class present) of every sample of the traces of each region (kind, line index, traces
    [t0, t1] along it), from the truth; a voxel two regions share (where an inline crosses a crossline) once."""
    folder.mkdir(parents=True)
    ns = s.labels.shape[2]
    il, xl = [], []
    for kind, index, traces in regions:
        t = np.arange(traces[0], traces[1] + 1)
        il.append(np.full(len(t), index) if kind == "inline" else t)
        xl.append(t if kind == "inline" else np.full(len(t), index))
    trace = np.unique(np.stack([np.concatenate(il), np.concatenate(xl)], axis=1), axis=0)
    ii, kk = np.repeat(trace[:, 0], ns), np.tile(np.arange(ns), len(trace))
    xx = np.repeat(trace[:, 1], ns)
    truth = np.asarray(s.labels)[ii, xx, kk]
    files = []
    for name in names:
        sel = truth == list(s.class_names).index(name)
        if sel.any():
            path = folder / f"{name}.pts"
            path.write_text("".join(f"{a}\t{b}\t{c:g}\n" for a, b, c in zip(
                s.inlines[ii[sel]], s.crosslines[xx[sel]], s.samples_ms[kk[sel]])))
            files.append(str(path))
    return files


def _import(client: Any, survey: str, files: list[str], picks: str, add: bool) -> dict[str, Any]:
    return _ok(client, {"kind": "import", "survey": survey,
                        "picks": {"files": files, "class_pattern": PATTERN, "set": picks, "add": add}})


def one_seed(client: Any, work: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.monotonic()
    s = synth.generate(shape=tuple(args.shape), seed=seed, family=args.family)
    folder = work / f"s{seed}"
    synth.write(s, folder)
    names = sorted(s.class_names)  # a pick set of sorted files: the models' class order
    truth = np.array([names.index(n) for n in s.class_names], dtype=np.float32)[np.asarray(s.labels)]
    synth.write_segy(s, truth, folder / "truth.sgy", "truth labels in sorted class order")
    survey = f"s{seed}"
    _ok(client, {"kind": "import", "survey": survey, "segy": {"file": str(folder / "seismic.sgy")}})
    _ok(client, {"kind": "import", "survey": survey, "segy": {"file": str(folder / "truth.sgy"), "volume": "truth",
                                                               "add_volume": True}})
    first = sorted(str(p) for p in (folder / "picks").glob("*.pts"))
    width = len(np.unique(s.picks.crossline_index))  # traces of the first round's picks: a round's amount
    ni, nx, ns = s.labels.shape
    for label, *_ in args.runs:
        _import(client, survey, first, label, add=False)
    _ok(client, train_job(args, f"{survey}-r0", survey, args.runs[0][0]))
    out: dict[str, Any] = {"seed": seed, "first_round_points": int(len(s.picks.class_id)), "round_traces": width,
                           "round0": score(client, f"{survey}-r0", survey)}
    say(t0, f"seed {seed}: round 0 {out['round0']}")
    # (retrain epochs, each round's regions so far) -> (model, score): a run whose picks so far are an earlier run's
    # takes that run's model in place of training the same one again (the retrains are deterministic: the same
    # round-0 model, picks and epochs give the same model; docs/loop.md)
    trained: dict[tuple[Any, ...], tuple[str, dict[str, float]]] = {}
    for label, arm, epochs, split, near, measure, kinds in args.runs:
        # one seeded stream for every random arm: with N lines a round, round 1 takes the lines the one-line arm
        # takes in rounds 1..N (kind, line and start drawn in the same order), each with 1/N of the traces
        rng = np.random.default_rng(seed)
        last, accs, lines, picked = f"{survey}-r0", [], [], (epochs,)
        each = max(1, round(width / split))  # a round's traces, spread over `split` lines
        share = min(1.0, each / nx)  # each region's share of a line's traces (sized on the crosslines' count)
        for r in range(1, args.rounds + 1):
            if arm == "suggested":
                # the first picks lie on (part of) the middle inline
                allowed = suggest_kinds(kinds, lines[-1]["regions"][-1]["kind"] if lines else "inline")
                found = _ok(client, {"kind": "suggest", "model": last, "survey": survey, "lines": split,
                                     "measure": measure, "region": share, "region_samples": 1.0,
                                     "kinds": allowed,
                                     **({"picks": label, "near": near} if near else {})})
                regions = [(row["kind"], row["index"], tuple(row["trace_indices"])) for row in found["suggestions"]]
            elif arm == "oracle":
                regions = oracle_regions(client.home, last, survey, truth, split, share)
            else:
                regions = [random_region(rng, share, ni, nx) for _ in range(split)]
            if len(regions) != split:  # a small survey's spacing can leave fewer lines than asked for
                raise RuntimeError(f"seed {seed}: {arm} named {len(regions)} lines of the {split} asked for; "
                                   "use fewer --lines-per-round")
            files = write_regions(folder / f"{label}_r{r}", s, names, regions)
            added = _import(client, survey, files, label, add=True)["add"]
            picked += (tuple(regions),)
            reused = picked in trained
            if not reused:
                model = f"{survey}-{label}-r{r}"
                _ok(client, train_job(args, model, survey, label, (last, epochs)))
                trained[picked] = model, score(client, model, survey)
            model, acc = trained[picked]
            accs.append(acc)
            named = [{"kind": kind, "line": int((s.inlines if kind == "inline" else s.crosslines)[index]),
                      "traces": list(traces)} for kind, index, traces in regions]
            lines.append({"regions": named, "added": added["added"], "model": model,
                          **({"near": found["near"], "picks": found["picks"], "measure": found["measure"],
                              "kinds": allowed} if arm == "suggested" else {})})
            where = ", ".join(f"{n['kind']} {n['line']} traces {n['traces'][0]}-{n['traces'][1]}" for n in named)
            say(t0, f"seed {seed}: {label} round {r}, {where}: {acc}" + (f" (model {model}: the same picks)" * reused))
            last = model
        out[label], out[f"{label}_lines"] = accs, lines
        if args.anew and args.rounds:
            _ok(client, train_job(args, f"{survey}-{label}-anew", survey, label))
            out[f"{label}_anew"] = score(client, f"{survey}-{label}-anew", survey)
            say(t0, f"seed {seed}: {label} trained anew after round {args.rounds}: {out[f'{label}_anew']}")
    if not args.no_ceiling:
        step = ni // 8
        ceiling = write_regions(folder / "ceiling", s, names,
                                [("inline", step // 2 + k * step, (0, nx - 1)) for k in range(8)])
        if len(ceiling) != len(names):
            raise RuntimeError(f"seed {seed}: the 8 inlines of the ceiling lack a class; the class ids would shift")
        _import(client, survey, ceiling, "ceiling", add=False)
        _ok(client, train_job(args, f"{survey}-ceiling", survey, "ceiling"))
        out["ceiling"] = score(client, f"{survey}-ceiling", survey)
        say(t0, f"seed {seed}: ceiling {out['ceiling']}")
    out["seconds"] = round(time.monotonic() - t0, 1)
    return out


def suggest_kinds(kinds: str, last_kind: str) -> list[str]:
    """The kinds of line a suggested round may name (suggest's `kinds`), by --kinds and the kind of the arm's last
    line."""
    if kinds == "both":
        return ["inline", "crossline"]
    if kinds == "other":
        return ["crossline" if last_kind == "inline" else "inline"]
    return [kinds]


def oracle_regions(home: Path, model: str, survey: str, truth: np.ndarray, lines: int, region: float
                   ) -> list[tuple[str, int, tuple[int, int]]]:
    """The regions (kind, line index, traces) of the `lines` lines where the model's prediction of the survey (the
    one `score` made) has the largest share of wrong voxels against `truth` (class ids in the model's order): the
    suggest job's ranking (margin, spacing, windows of `region` of a line's traces by every sample) on errors in
    place of uncertainty."""
    folder = prediction_folder(home, f"{model}-{survey}")
    volumes = PredictionVolumes(folder, json.loads((folder / "summary.json").read_text()),
                                Survey.open(survey_folder(home, survey)))
    grid, edges = uncertainty_grid(
        lambda i: (np.asarray(volumes.labels[i]) != truth[i]).astype(np.float64), truth.shape)
    spec = SuggestSpec(model=model, survey=survey, lines=lines, region=region, region_samples=1.0)
    return [(row["kind"], row["index"], tuple(row["traces"])) for row in rank_lines(grid, edges, spec)]


def say(t0: float, message: str) -> None:
    """A step done, on stderr at once: a full-size survey takes half an hour, and the table comes at the end."""
    print(f"[{time.monotonic() - t0:6.0f} s] {message}", file=sys.stderr, flush=True)


def random_region(rng: np.random.Generator, share: float, ni: int, nx: int) -> tuple[str, int, tuple[int, int]]:
    """A line drawn at random (an inline or a crossline) and a window of `share` of its traces at a random place."""
    kind = ("inline", "crossline")[int(rng.integers(2))]
    count, lateral = (ni, nx) if kind == "inline" else (nx, ni)
    index, w = int(rng.integers(count)), max(1, min(lateral, round(share * lateral)))
    start = int(rng.integers(lateral - w + 1))
    return kind, index, (start, start + w - 1)


def mean_pixel(runs: list[dict[str, Any]], label: str, k: int | None = None) -> float:
    """The surveys' mean pixel accuracy of run `label` after round k+1, or of `label`'s one score (round0, ceiling)
    when k is None."""
    return float(np.mean([(r[label] if k is None else r[label][k])["pixel"] for r in runs]))


def has_all(runs: list[dict[str, Any]], key: str) -> bool:
    """Whether every survey has the score `key`: "ceiling" (none with --no-ceiling), a run's "<label>_anew" (only
    with --anew and rounds)."""
    return bool(runs) and all(key in r for r in runs)


def table(runs: list[dict[str, Any]], rounds: int, arms: tuple[str, ...]) -> str:
    ceiling = has_all(runs, "ceiling")
    anew = all(has_all(runs, f"{arm}_anew") for arm in arms)
    head = (["seed", "arm", "round 0"] + [f"round {r}" for r in range(1, rounds + 1)] + ["anew"] * anew +
            ["ceiling"] * ceiling)
    rows = []
    for arm in arms if rounds else ("-",):  # no rounds: both arms would be the same row
        for run in runs:
            rows.append([str(run["seed"]), arm, f"{run['round0']['pixel']:.3f}"] +
                        [f"{a['pixel']:.3f}" for a in run.get(arm, [])] +
                        ([f"{run[arm + '_anew']['pixel']:.3f}"] if anew else []) +
                        ([f"{run['ceiling']['pixel']:.3f}"] if ceiling else []))
        rows.append(["mean", arm, f"{mean_pixel(runs, 'round0'):.3f}"] +
                    [f"{mean_pixel(runs, arm, k):.3f}" for k in range(rounds)] +
                    ([f"{mean_pixel(runs, arm + '_anew'):.3f}"] if anew else []) +
                    ([f"{mean_pixel(runs, 'ceiling'):.3f}"] if ceiling else []))
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "whole-cube pixel accuracy\n" + "\n".join(lines)


def targets(runs: list[dict[str, Any]], rounds: int, labels: tuple[str, ...],
            pairs: dict[str, str]) -> dict[str, Any]:
    """The issue's two targets of the loop, from the surveys' scores. `lead_over_random`: for each suggested run
    (`pairs` maps it to the random run of the same retrain length and lines per round), its mean pixel accuracy
    minus the random run's after each round. `short_of_ceiling` (only when every survey has its ceiling): the
    ceiling's mean minus the mean of each run in `labels` after each round (negative: above the ceiling);
    `anew_short_of_ceiling` (with --anew): the same for each run's model trained anew after its last round."""
    out: dict[str, Any] = {"lead_over_random": {
        s: [round(mean_pixel(runs, s, k) - mean_pixel(runs, rnd, k), 4) for k in range(rounds)]
        for s, rnd in pairs.items()}}
    if has_all(runs, "ceiling"):
        ceiling = mean_pixel(runs, "ceiling")
        out["short_of_ceiling"] = {label: [round(ceiling - mean_pixel(runs, label, k), 4) for k in range(rounds)]
                                   for label in labels}
        anew = {label: round(ceiling - mean_pixel(runs, f"{label}_anew"), 4) for label in labels
                if has_all(runs, f"{label}_anew")}
        if anew:
            out["anew_short_of_ceiling"] = anew
    return out


def verdicts(found: dict[str, Any], rounds: int) -> str:
    """The targets as lines a reader checks against the issue: ahead of random after every round, and within 0.03
    of the ceiling after two added lines (when the run has two rounds and the ceiling)."""
    lines = []
    for label, lead in found["lead_over_random"].items() if rounds else ():
        ahead = "yes" if lead and all(x > 0 for x in lead) else "no"
        lines.append(f"{label}: lead over random in the mean, round 1..{rounds}: "
                     f"{' '.join(f'{x:+.3f}' for x in lead)} (ahead after every round: {ahead})")
    for label, short in found.get("short_of_ceiling", {}).items():
        if rounds >= 2:
            lines.append(f"{label}: short of the ceiling after two added lines: {short[1]:.3f} "
                         f"(within 0.03: {'yes' if short[1] <= 0.03 else 'no'})")
    for label, short in found.get("anew_short_of_ceiling", {}).items():
        lines.append(f"{label}: trained anew after round {rounds}, short of the ceiling: {short:.3f} "
                     f"(within 0.03: {'yes' if short <= 0.03 else 'no'})")
    return "\n".join(lines)


def pair_with_random(runs: list[tuple[Any, ...]]) -> dict[str, str]:
    """Each suggested (and oracle) run's label mapped to the label of the random run that matches it on every axis
    both arms have (AXES: the retrain length and the lines per round; an entry of `runs` is (label, arm, *the axes'
    values)); none where the random arm was not run."""
    def shared(values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(v for v, (_, _, own) in zip(values, AXES) if not own)

    random_by_key = {shared(values): label for label, arm, *values in runs if arm == "random"}
    return {label: random_by_key[shared(values)] for label, arm, *values in runs
            if arm != "random" and shared(values) in random_by_key}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the runs it asks for (`runs`: (label, arm, *the AXES' values)) and the survey shape."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=100, help="the first survey's seed (then +1, +2, ...)")
    ap.add_argument("--full", action="store_true", help="the job file as it is, on 256 x 256 x 128 surveys")
    ap.add_argument("--shape", type=int, nargs=3, default=None)
    ap.add_argument("--epochs", type=int, default=None, help="epochs of a new model (default 8; --full: the file's)")
    ap.add_argument("--retrain-epochs", type=int, nargs="+", default=[RETRAIN_EPOCHS],
                    help=f"epochs of each retrain (resume mode; default {RETRAIN_EPOCHS}, the retrain of seisctl "
                         "submit --from, client/retrain.py; docs/loop.md: 3 until session 13, 12 until session 26); "
                         "several: each arm once per length, from the same round 0")
    ap.add_argument("--retrain-lr", type=float, default=None,
                    help="learning rate of each retrain (default: the job file's optim.lr)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the ceiling (8 inlines of truth)")
    ap.add_argument("--config", type=Path, default=None, help="a train job file instead of " + str(CONFIG.name))
    ap.add_argument("--family", choices=synth.FAMILIES, default="varied", help="survey family (default varied)")
    ap.add_argument("--measure", choices=MEASURES, nargs="+", default=["confidence"],
                    help="what `suggest` ranks lines by (default confidence, as the suggest job); several: the "
                         "suggested arm once per measure, from the same round 0 (rows suggested-confidence, ...)")
    ap.add_argument("--near", type=int, nargs="+", default=None,
                    help="suggest's `near` (traces over which the weight of the arm's picks fades; default the "
                         "job's, 0: picks do not weigh); several: the suggested arm once per value, from the same "
                         "round 0 (rows suggested-n0, suggested-n32, ...)")
    ap.add_argument("--lines-per-round", type=int, nargs="+", default=[1],
                    help="the lines a round's picks are spread over (default 1): each of N lines gets 1/N of the "
                         "round's traces, the suggested arm on the N lines suggest ranks first, the random arm on N "
                         "random ones; several: each arm once per value, from the same round 0 (rows "
                         "suggested-l1, suggested-l2, ...)")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=["suggested", "random"],
                    help="the arms to run, in this order (default suggested random; oracle: the region of the "
                         "most errors, by the truth)")
    ap.add_argument("--kinds", choices=KINDS, nargs="+", default=["both"],
                    help="the kinds of line suggest may name (default both; other: the kind the arm's last line is "
                         "not, round 1 a crossline as the first picks lie on an inline); several: the suggested arm "
                         "once per value, from the same round 0 (rows suggested-kboth, suggested-kother, ...)")
    ap.add_argument("--anew", action="store_true",
                    help="after each run's last round, also train the job file anew on its grown pick set (as the "
                         "ceiling is trained) and score it (column anew)")
    args = ap.parse_args(argv)
    args.arms = tuple(dict.fromkeys(args.arms))
    for _, option, _ in AXES:  # each value once (--near: None unless given)
        if getattr(args, option) is not None:
            setattr(args, option, list(dict.fromkeys(getattr(args, option))))
    if min(args.lines_per_round) < 1:
        ap.error("--lines-per-round: at least 1")
    axes = [(prefix, (getattr(args, option) or [None]) if option == "near" else getattr(args, option), own)
            for prefix, option, own in AXES]
    args.runs = []
    for arm in args.arms:
        for combo in itertools.product(*[vals if arm == "suggested" or not own else [None] for _, vals, own in axes]):
            parts = [f"{prefix}{v}" for (prefix, vals, _), v in zip(axes, combo) if v is not None and len(vals) > 1]
            args.runs.append(("-".join([arm, *parts]), arm, *combo))
    args.shape = args.shape or ([256, 256, 128] if args.full else [64, 64, 64])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    labels = tuple(label for label, *_ in args.runs)
    runs = []
    with tempfile.TemporaryDirectory(prefix="seisd-loop-") as tmp:
        with RunningDaemon(Path(tmp) / "home", start_timeout=60) as d:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                runs.append(one_seed(d.client, Path(tmp), seed, args))
                print(f"seed {seed}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    mean = {arm: [round(mean_pixel(runs, arm, k), 4) for k in range(args.rounds)] for arm in labels}
    doc = {"arms": list(labels),
           "family": args.family, "shape": args.shape, "rounds": args.rounds, "seeds": [r["seed"] for r in runs],
           "full": args.full, "measure": args.measure, "near": args.near,
           "retrain_epochs": args.retrain_epochs, "retrain_lr": args.retrain_lr,
           "lines_per_round": args.lines_per_round, "kinds": args.kinds, "anew": args.anew, "runs": runs,
           "mean_pixel": mean,
           "mean_round0_pixel": round(mean_pixel(runs, "round0"), 4)}
    if has_all(runs, "ceiling"):
        doc["mean_ceiling_pixel"] = round(mean_pixel(runs, "ceiling"), 4)
    if all(has_all(runs, f"{label}_anew") for label in labels):
        doc["mean_anew_pixel"] = {label: round(mean_pixel(runs, f"{label}_anew"), 4) for label in labels}
    doc["targets"] = targets(runs, args.rounds, labels, pair_with_random(args.runs))
    print(table(runs, args.rounds, labels))
    said = verdicts(doc["targets"], args.rounds)
    if said:
        print(said)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
