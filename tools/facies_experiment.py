"""The seed's experiment end to end: picks on part of one inline -> a train job in a real seisd -> the whole cube.

    python tools/facies_experiment.py [--quick] [--model unet|patchcnn] [--epochs N] [--shape 256 256 128]
    python tools/facies_experiment.py --seeds N [--first-seed 1] [--family varied] [--quick] [--epochs N]

Makes a synthetic survey (tools/synth.py) in a temporary folder, starts a real daemon there, imports the SEG-Y
and the picks through the client, and runs the job file configs/train_facies_unet.yaml (or train_facies.yaml)
twice: with the blocked validation split (the default) and with a random point split. Each trained model file is
loaded and applied to the whole cube with daemon.executor.predict.predict_volume, and scored against the ground
truth next to the depth-only and amplitude-only baselines. Prints one JSON line with every figure.

With --seeds N it runs the story once (blocked split, or the first of --splits) on each of N surveys, seeds
first-seed .. first-seed+N-1 of the `varied` family (tools/synth_varied.py) unless --family says otherwise, in one
daemon, and prints per survey and as mean / worst: whole-cube pixel and mean class accuracy, the accuracy more
than 20 inlines away from the picked inline, the depth-only and amplitude-only baselines, the training time and the
prediction speed (voxels per second end to end: loading the model file and the survey, applying, writing the
labels). A table, then one JSON line. --views adds the accuracy of each orientation alone, --keep the model files.
"""
from __future__ import annotations

import argparse
import json
import shutil
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

from tests.harness import RunningDaemon  # noqa: E402

CONFIGS = {"unet": ROOT / "configs" / "train_facies_unet.yaml", "patchcnn": ROOT / "configs" / "train_facies.yaml"}


def import_survey(client: Any, folder: Path, name: str = "demo") -> None:
    """SEG-Y and picks into the daemon's home, as `seisctl survey import` / `picks import` would."""
    job = client.submit({"kind": "import", "survey": name, "segy": {"file": str(folder / "seismic.sgy")}})
    _wait_ok(client, job["id"], 300)
    files = sorted(str(p) for p in (folder / "picks").glob("*.pts"))
    job = client.submit({"kind": "import", "survey": name,
                         "picks": {"files": files, "class_pattern": r"(?P<name>.+)\.pts"}})
    _wait_ok(client, job["id"], 120)


def _wait_ok(client: Any, job_id: int, timeout: float) -> dict[str, Any]:
    record = client.wait(job_id, timeout=timeout)
    if record["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {record['state']}: {record.get('error')}")
    return record


def job_file(model: str, output: str, split: str, epochs: int | None, quick: bool,
             config: Path | None = None, survey: str | None = None) -> dict[str, Any]:
    job = yaml.safe_load((config or CONFIGS[model]).read_text())
    job["output"], job["overwrite"] = output, True
    if survey:
        job["data"]["survey"] = survey
    job["data"]["split"]["kind"] = split
    if epochs:
        job["train"]["epochs"] = epochs
    if quick:
        job["data"]["crop"]["size"] = [32, 32] if model == "unet" else [17, 17]
        job["data"]["batches_per_epoch"] = 15
        job["data"]["split"]["block"] = 8
        job["data"]["split"]["gap"] = 4
        job["train"]["epochs"] = epochs or 3
    return job


def predict_cube(model_path: Path, survey_folder: Path, out_dir: Path, orientation: str | None = None,
                 precision: str = "auto") -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """Labels of the whole cube from a model file, applied the way a predict job applies it (the model file's
    recipe: whole sections, both orientations for a model trained on both, split between an ensemble's members;
    patch models on a stride-2 grid; the job's default precision), or along ``orientation``, or in another
    ``precision``."""
    from daemon.executor.modelfile import load_model_file
    from daemon.executor.predict import predict_volume
    from daemon.executor.predict.recipe import recipe_of
    from workers.survey import Survey

    model, info = load_model_file(model_path)
    survey = Survey.open(survey_folder)
    recipe = recipe_of(info, stride=2 if info.input_spec["apply_kind"] == "patch" else 1, orientation=orientation,
                       precision=precision)
    vols = [survey.volume(v) for v in recipe.volumes]
    run = predict_volume(model, vols if len(vols) > 1 else vols[0], out_dir=out_dir, outputs=["labels"],
                         device="cpu", **recipe.apply_kwargs(survey.shape))
    run["orientation"] = recipe.orientation
    return np.load(run["paths"]["labels"], mmap_mode="r"), run, info.classes


def to_truth_ids(labels: np.ndarray, model_classes: list[str], truth_classes: list[str]) -> np.ndarray:
    """Model class ids follow the pick set's class order (file names, sorted); the truth has synth's order."""
    table = np.array([truth_classes.index(name) for name in model_classes], dtype=np.uint8)
    return table[np.asarray(labels)]


def one_run(client: Any, home: Path, s: Any, model: str, split: str, args: argparse.Namespace,
            work: Path) -> dict[str, Any]:
    from daemon.executor.predict import score

    job = client.submit(job_file(model, f"facies_{split}", split, args.epochs, args.quick, args.config))
    t0 = time.monotonic()
    record = _wait_ok(client, job["id"], 3600)
    wall = time.monotonic() - t0
    labels, run, classes = predict_cube(home / "models" / f"facies_{split}.h5", home / "surveys" / "demo",
                                        work / f"pred_{split}")
    labels = to_truth_ids(labels, classes, list(s.class_names))
    cube = score(labels, s.labels, len(s.class_names))
    p = s.picks
    at_picks = float(np.mean(np.asarray(labels[p.inline_index, p.crossline_index, p.sample_index]) == p.class_id))
    r = record["result"]
    return {"split": split, "val": r["validation"], "best_epoch": r["best_epoch"], "epochs": r["epoch"],
            "steps": r["step"], "stopped": r["stopped"], "train_points": r["split"]["train_points"],
            "val_points": r["split"]["val_points"], "job_seconds": round(wall, 1),
            "train_seconds": round(r["train_seconds"], 1), "samples_per_s": r["samples_per_s"],
            "cube_pixel_accuracy": cube["pixel_accuracy"], "cube_mean_class_accuracy": cube["mean_class_accuracy"],
            "cube_per_class_accuracy": cube["per_class_accuracy"], "accuracy_at_picks": at_picks,
            "predict_seconds": round(run["seconds"], 1), "predict_orientation": run["orientation"]}


FAR_INLINES = 20  # "away from the picks": more than this many inlines from the picked one
DISTANCE_BINS = ((0, 0), (1, 5), (6, 20), (21, 60), (61, 10**6))  # inlines from the picked one, in the JSON line
# picks that show a voxel's look, in the JSON line: none, under one trace's worth, one to six traces' worth, more (a
# picked trace of a 128-sample cube holds 128 picks)
LOOK_PICK_BINS = (("0-0", 0, 0), ("1-99", 1, 99), ("100-799", 100, 799), (">=800", 800, 10**9))
COLUMNS = [("seed", 5, "d"), ("classes", 7, "d"), ("pixel", 6, ".3f"), ("mean_class", 10, ".3f"),
           ("far_pixel", 9, ".3f"), ("worst_class", 11, ".3f"), ("seen_share", 10, ".3f"),
           ("seen_pixel", 10, ".3f"), ("depth_only", 10, ".3f"),
           ("amplitude_only", 14, ".3f"), ("train_s", 7, ".0f"), ("epochs", 6, "d"),
           ("predict_voxels_per_s", 20, ".0f")]


def one_survey(client: Any, home: Path, seed: int, shape: tuple[int, int, int], args: argparse.Namespace,
               work: Path) -> dict[str, Any]:
    """Generate, import, train the job file with the blocked split, predict the cube, score: one table row."""
    from daemon.executor.predict import score
    from daemon.executor.predict.tiling import TWO_WAYS

    name = f"s{seed}"
    s = synth.generate(shape=shape, seed=seed, family=args.family)
    synth.write(s, work / name)
    import_survey(client, work / name, name)
    job = client.submit(job_file(args.model, f"facies_{name}", args.splits[0], args.epochs, args.quick, args.config,
                                 survey=name))
    record = _wait_ok(client, job["id"], 7200)
    r = record["result"]
    t0 = time.monotonic()
    labels, run, classes = predict_cube(home / "models" / f"facies_{name}.h5", home / "surveys" / name,
                                         work / f"pred_{name}")
    labels = np.asarray(to_truth_ids(labels, classes, list(s.class_names)))
    predict_s = time.monotonic() - t0
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy2(home / "models" / f"facies_{name}.h5", args.keep / f"facies_{name}.h5")
    cube = score(labels, s.labels, len(s.class_names))
    views = {}
    if args.views and run["orientation"] in TWO_WAYS:
        for view in ("inline", "crossline"):
            one, _, _ = predict_cube(home / "models" / f"facies_{name}.h5", home / "surveys" / name,
                                     work / f"pred_{name}_{view}", orientation=view)
            views[view] = float(np.mean(np.asarray(to_truth_ids(one, classes, list(s.class_names))) == s.labels))
    exact_figures: dict[str, float] = {}
    if args.float32 and run["precision"] != "float32":
        t1 = time.monotonic()
        exact, _, _ = predict_cube(home / "models" / f"facies_{name}.h5", home / "surveys" / name,
                                   work / f"pred_{name}_float32", precision="float32")
        exact = np.asarray(to_truth_ids(exact, classes, list(s.class_names)))
        exact_cube = score(exact, s.labels, len(s.class_names))
        exact_figures = {"pixel": exact_cube["pixel_accuracy"], "mean_class": exact_cube["mean_class_accuracy"],
                         "labels_agree": float(np.mean(exact == labels)),
                         "predict_voxels_per_s": float(np.prod(shape)) / (time.monotonic() - t1)}
    pick_il = int(s.picks.inline_index[0])
    hit = labels == s.labels  # one comparison of the cube, read by every figure below
    distance = np.abs(np.arange(shape[0]) - pick_il)  # of each inline from the picked one
    far = distance > FAR_INLINES
    far_pixel = float(hit[far].mean()) if far.any() else float("nan")
    by_distance = {f"{a}-{b}": float(hit[sel].mean())
                   for a, b in DISTANCE_BINS if (sel := (distance >= a) & (distance <= b)).any()}
    per_class = [a for a in cube["per_class_accuracy"] if a is not None]
    return {"seed": seed, "classes": len(s.class_names), "pixel": cube["pixel_accuracy"],
            "mean_class": cube["mean_class_accuracy"], "far_pixel": far_pixel, "worst_class": min(per_class),
            "per_class": cube["per_class_accuracy"], "pixel_by_inline_distance": by_distance} | \
        seen_figures(s, hit) | {
            "depth_only": synth.depth_only_baseline(s.labels, s.picks),
            "amplitude_only": synth.amplitude_only_baseline(s.seismic, s.labels, s.picks),
            "train_s": r["train_seconds"], "epochs": r["epoch"], "best_epoch": r["best_epoch"],
            "stopped": r["stopped"], "val": r["validation"], "picks": int(len(s.picks.class_id)),
            **({"refit": r["refit"]} if "refit" in r else {}),
            "meta": {k: s.meta.get(k) for k in ("coverage", "noise", "peak_hz", "phase_deg")}
            | {"faults": len(s.meta.get("faults", []))},
            "predict_s": round(predict_s, 2), "predict_apply_s": round(run["seconds"], 2),
            "predict_voxels_per_s": float(np.prod(shape)) / predict_s, "precision": run["precision"]} | \
        _teacher_figures(record, classes, s) | \
        ({"pixel_by_view": views} if views else {}) | ({"float32": exact_figures} if exact_figures else {})


def seen_figures(s: Any, hit: np.ndarray) -> dict[str, Any]:
    """The share of the cube whose texture look the picks show, and the accuracy (`hit`: prediction == truth per
    voxel) on it and on the rest: whether a model misses looks it never saw or fails to carry the ones it saw
    (tools/synth.py seen_looks). `pixel_by_look_picks`: the same by how many picks show the voxel's look
    (LOOK_PICK_BINS), each part's share of the cube and accuracy."""
    counts = synth.look_picks(s)
    if counts is None:
        return {"seen_share": float("nan"), "seen_pixel": float("nan"), "unseen_pixel": float("nan"),
                "pixel_by_look_picks": {}}
    seen = counts > 0
    by_picks = {}
    for name, lo, hi in LOOK_PICK_BINS:
        part = (counts >= lo) & (counts <= hi)
        by_picks[name] = {"share": float(part.mean()), "pixel": float(hit[part].mean()) if part.any() else float("nan")}
    return {"seen_share": float(seen.mean()), "seen_pixel": float(hit[seen].mean()),
            "unseen_pixel": float(hit[~seen].mean()) if (~seen).any() else float("nan"),
            "pixel_by_look_picks": by_picks}


def _teacher_figures(record: dict[str, Any], classes: list[str], s: Any) -> dict[str, Any]:
    """A distilled job's teacher over the cube (its prediction of the survey, in the job folder), beside the
    student's row: whether the student kept, lost or gained on its teacher."""
    from daemon.executor.predict import score

    r = record["result"]
    if not r.get("distill"):
        return {}
    teacher = np.load(Path(record["dir"]) / "distill" / "teacher_prediction" / "labels.npy", mmap_mode="r")
    cube = score(np.asarray(to_truth_ids(teacher, classes, list(s.class_names))), s.labels, len(s.class_names))
    d = r["distill"]
    return {"teacher_pixel": cube["pixel_accuracy"], "teacher_mean_class": cube["mean_class_accuracy"],
            "teacher_epochs": d["teacher"]["epoch"], "teacher_train_s": d["teacher"]["train_seconds"],
            "student_train_s": d["student_train_seconds"], "student_stopped": d["student_stopped"],
            "labelled_fraction": d["pseudo_labels"]["labelled_fraction"],
            "teacher_predict_voxels_per_s": d["pseudo_labels"]["predict_voxels_per_s"]}


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and worst (lowest accuracy, highest baseline, longest time, slowest prediction) over the surveys."""
    keys = ["pixel", "mean_class", "far_pixel", "worst_class", "seen_share", "seen_pixel", "depth_only",
            "amplitude_only", "train_s", "predict_voxels_per_s"]
    worst = {"depth_only": max, "amplitude_only": max, "train_s": max}
    return {"mean": {k: float(np.mean([r[k] for r in rows])) for k in keys},
            "worst": {k: float(worst.get(k, min)(r[k] for r in rows)) for k in keys}}


def run_seeds(args: argparse.Namespace) -> int:
    if args.seeds < 2 and args.first_seed == 0:
        print("facies_experiment: --seeds never runs seed 0 alone (the seed the default job was tuned on); "
              "use --first-seed", file=sys.stderr)
        return 2
    shape = tuple(args.shape or ((64, 64, 64) if args.quick else (256, 256, 128)))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows: list[dict[str, Any]] = []
    print(" ".join(f"{c:>{w}}" for c, w, _ in COLUMNS), flush=True)
    with tempfile.TemporaryDirectory(prefix="seisd-facies-") as tmp, \
            RunningDaemon(Path(tmp) / "home", start_timeout=60) as d:
        for seed in seeds:
            rows.append(one_survey(d.client, d.home, seed, shape, args, Path(tmp)))
            print(" ".join(f"{rows[-1][c]:>{w}{f}}" for c, w, f in COLUMNS), flush=True)
    agg = summary(rows)
    for label in ("mean", "worst"):
        print(" ".join(f"{label:>{w}}" if c == "seed" else f"{agg[label][c]:>{w}{f}}" if c in agg[label]
                       else " " * w for c, w, f in COLUMNS))
    print(json.dumps({"experiment": "facies_seeds", "family": args.family, "shape": list(shape), "seeds": seeds,
                      "model": args.model, "config": str(args.config or CONFIGS[args.model]), "quick": args.quick,
                      "epochs": args.epochs, **agg, "surveys": rows}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=None, help="run on this many surveys (table, mean / worst)")
    ap.add_argument("--first-seed", type=int, default=1, help="with --seeds: the first seed (default 1)")
    ap.add_argument("--family", choices=synth.FAMILIES, default=None,
                    help="survey family: varied with --seeds, classic otherwise")
    ap.add_argument("--quick", action="store_true", help="a 64^3 survey and a few short epochs (about a minute)")
    ap.add_argument("--model", choices=sorted(CONFIGS), default="unet")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs of the job file")
    ap.add_argument("--shape", type=int, nargs=3, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", nargs="+", default=["block", "random"], choices=["block", "random"],
                    help="the validation splits to run (with --seeds: the first one only, default block)")
    ap.add_argument("--views", action="store_true", help="with --seeds: also score a model applied both ways "
                    "along inlines only and crosslines only (pixel_by_view in the JSON line)")
    ap.add_argument("--float32", action="store_true", help="with --seeds: also apply each model in float32 where "
                    "the default precision resolves to bfloat16 (`float32` in the JSON line: pixel, mean class, "
                    "labels alike, voxels/s)")
    ap.add_argument("--keep", type=Path, default=None, help="with --seeds: copy each survey's model file into this "
                    "folder (facies_s<seed>.h5; the survey is made again from its seed) for a closer look")
    ap.add_argument("--config", type=Path, default=None, help="a train job file to use instead of the model's "
                    "configs/ file (output, overwrite and the split kind are still set here)")
    args = ap.parse_args(argv)
    if args.seeds is not None:
        if args.seeds < 1:
            ap.error("--seeds must be at least 1")
        args.family = args.family or "varied"
        return run_seeds(args)
    args.family = args.family or "classic"
    shape = tuple(args.shape or ((64, 64, 64) if args.quick else (256, 256, 128)))
    with tempfile.TemporaryDirectory(prefix="seisd-facies-") as tmp:
        work = Path(tmp)
        s = synth.generate(shape=shape, seed=args.seed, family=args.family)
        synth.write(s, work / "synth")
        out: dict[str, Any] = {"shape": list(shape), "seed": args.seed, "model": args.model,
                               "picks": int(len(s.picks.class_id)),
                               "depth_only_baseline": synth.depth_only_baseline(s.labels, s.picks),
                               "amplitude_only_baseline": synth.amplitude_only_baseline(s.seismic, s.labels,
                                                                                        s.picks)}
        with RunningDaemon(work / "home", start_timeout=60) as d:
            import_survey(d.client, work / "synth")
            runs = [one_run(d.client, d.home, s, args.model, split, args, work) for split in args.splits]
        out["runs"] = runs
        if len(runs) == 2:
            out["random_minus_block_val_pixel_accuracy"] = (runs[1]["val"]["pixel_accuracy"]
                                                            - runs[0]["val"]["pixel_accuracy"])
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
