"""seisctl suggest, models compare: the interpreter's loop (docs/loop.md): where the model is unsure, and whether
a retrained model is better."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from client.api import Client, SeisdError
from client.cli._common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, Command, Out, _table, client_of, command, given
from client.cli._follow import submit_and_follow


class _Kept(Out):
    """An Out that keeps what `follow` would print, so a command prints its own result when the job succeeded."""

    def __init__(self, as_json: bool) -> None:
        super().__init__(as_json)
        self.kept: tuple[Any, Callable[[], None]] | None = None

    def emit(self, obj: Any, human: Callable[[], None]) -> None:
        self.kept = (obj, human)


def run_quietly(a: argparse.Namespace, out: Out, job: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Submit and follow `job`; on success return its result and print nothing, else print what follow would."""
    kept = _Kept(out.json)
    code = submit_and_follow(a, kept, job)
    if code == EXIT_OK and not a.detach and kept.kept is not None:
        return code, kept.kept[0].get("result") or {}
    if kept.kept is not None:
        out.emit(*kept.kept)
    return code, None


@command
class Suggest(Command):
    """Submits a `suggest` job (docs/loop.md): after `seisctl predict MODEL SURVEY`, the lines (inlines and
    crosslines) where the model's prediction is least sure, ranked by the mean uncertainty over each line's most
    uncertain region (`--region`: its share of the line's traces, default 0.4; `--region-samples`: of its samples,
    default 0.5). `--measure`: what uncertainty is: `confidence` (the default: 1 - top-1 minus top-2
    probability), `disagreement` (between the views the prediction blended: ensemble members, orientations; needs
    a prediction made with `--outputs labels,confidence,disagreement`) or `both` (their mean). `--lines` how many
    (default 5); `--spacing` the fewest lines between two suggestions of one kind (default 1/16 of the survey's
    lines); `--margin` lines kept out at the
    survey's edges, where any model is unsure (default 1/16 of the lines); `--kind inline|crossline` one kind
    only; `--prediction` another prediction than `MODEL-SURVEY`. `--near N` makes what is picked count for less:
    uncertainty weighted by the distance from the picks of `--picks` (default the set the model was trained from),
    nothing on a picked trace and in full from N traces on (default 0: not weighted; docs/loop.md).
    Without a finished prediction it names the `seisctl predict` to run. Prints the table (rank, line, score, the
    region's own uncertainty, the line's mean, the region in the survey's numbering and times) and the files it
    wrote under predictions/PREDICTION/suggest/: suggestions.json, suggestions.csv and suggestions.png (each
    line's predicted classes and confidence, the region outlined). The same prediction gives the same list.
    `--json`: the job's result (`suggestions`, `files`, `picks`, `near`)."""

    name, help = "suggest", "the lines where a model's prediction is least sure: where to pick next (a job)"
    runs_job = True
    keys = {"model": "MODEL", "survey": "SURVEY", "prediction": "--prediction {}", "lines": "--lines {}",
            "spacing": "--spacing {}", "region": "--region {}", "region_samples": "--region-samples {}",
            "kinds": "--kind {}", "measure": "--measure {}", "margin": "--margin {}", "picks": "--picks {}",
            "near": "--near {}"}

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("model")
        p.add_argument("survey")
        p.add_argument("--prediction", help="the prediction to read (default MODEL-SURVEY)")
        p.add_argument("--lines", type=int, help="how many lines (default 5)")
        p.add_argument("--spacing", type=int, help="fewest lines between two suggestions of one kind")
        p.add_argument("--region", type=float, help="the region's share of a line's traces (default 0.4)")
        p.add_argument("--region-samples", type=float, help="the region's share of a line's samples (default 0.5)")
        p.add_argument("--kind", choices=["inline", "crossline"], help="suggest lines of this kind only")
        p.add_argument("--margin", type=int, help="lines this close to the survey's edge are not suggested "
                       "(default 1/16 of the lines, at least 2; 0: none)")
        p.add_argument("--measure", choices=["confidence", "disagreement", "both"],
                       help="what ranks the lines (default confidence)")
        p.add_argument("--picks", help="with --near: the pick set whose picks count for less (default the one the "
                       "model was trained from)")
        p.add_argument("--near", type=int, help="traces from a pick at which uncertainty counts in full; nearer, "
                       "less (default 0: picks do not weigh)")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        job = {"kind": "suggest", "model": a.model, "survey": a.survey, **given(
            prediction=a.prediction, lines=a.lines, spacing=a.spacing, region=a.region,
            region_samples=a.region_samples, kinds=[a.kind] if a.kind else None, measure=a.measure,
            margin=a.margin, picks=a.picks, near=a.near)}
        code, r = run_quietly(a, out, job)
        if r is not None:
            out.emit(r, lambda: _print_suggestions(r))
        return code


def _print_suggestions(r: dict[str, Any]) -> None:
    unit = r.get("sample_unit", "ms")
    _table(["RANK", "LINE", "SCORE", "UNSURE", "LINE MEAN", "REGION", f"TIME ({unit})"],
           [[s["rank"], f"{s['kind']} {s['line']}", f"{s['score']:.3f}", f"{s['uncertainty']:.3f}",
             f"{s['line_mean']:.3f}",
             f"{s['across']}s {s['from']}-{s['to']}", f"{s['time_from']:g}-{s['time_to']:g}"]
            for s in r["suggestions"]])
    print(f"score: {r['measure_text']} (0 sure); whole survey {r['mean_uncertainty']:.3f}")
    if r.get("picks"):
        print(f"weighted by the distance from pick set {r['picks']} (0 on a picked trace, 1 from {r['near']} "
              "traces on); UNSURE: the region's own")
    for kind, path in r["files"].items():
        print(f"{kind:<5} {path}")


@command
class ModelsCompare(Command):
    """Per-class precision, recall (the class's accuracy), F1 and support of models `a` and `b` side by side, and
    overall pixel accuracy, mean class accuracy and macro F1: from each model's stored validation report (its
    last validation, `models info`). With `--survey S --truth VOLUME` also against that label volume of the survey
    (class ids in the models' class order; -1 unlabelled), on each model's prediction of S: the prediction
    `MODEL-S` when its summary holds scores against VOLUME, else a `predict` job with `--truth` is run first
    (written as `MODEL-S`, or `MODEL-S-VOLUME` when `MODEL-S` exists). `--json`: `{"models": [A, B], "validation":
    {A: report, B: report}, "truth": {A: report, B: report} or null}`."""

    name, help = "models compare", "per-class metrics of two models side by side (validation, or a truth volume)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("a", help="a model")
        p.add_argument("b", help="another model")
        p.add_argument("--survey", help="score both on this survey's predictions (with --truth)")
        p.add_argument("--truth", metavar="VOLUME", help="a label volume of --survey")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        if (a.survey is None) != (a.truth is None):
            print("seisctl: --survey and --truth go together: the truth is a label volume of that survey",
                  file=sys.stderr)
            return EXIT_USAGE
        a.detach = False  # the predict jobs it may run are followed here
        c = client_of(a)
        infos = {m: c.call("models.info", name=m) for m in (a.a, a.b)}
        validation = {m: (i.get("metrics") or {}).get("report") for m, i in infos.items()}
        truth = None
        if a.survey:
            truth = {}
            for m in (a.a, a.b):
                scores, code = _truth_scores(c, a, out, m)
                if scores is None:
                    return code
                truth[m] = report_of(scores["confusion"], infos[m].get("classes") or [])
        doc = {"models": [a.a, a.b], "validation": validation, "truth": truth}
        out.emit(doc, lambda: _print_compare(doc, infos))
        return EXIT_OK


def _truth_scores(c: Client, a: argparse.Namespace, out: Out, model: str) -> tuple[dict[str, Any] | None, int]:
    """A prediction's scores against --truth: stored ones, or from a predict job run here."""
    name = f"{model}-{a.survey}"
    have = {p["name"] for p in c.predictions()}
    if name in have:
        try:
            summary = c.call("predictions.info", name=name).get("summary") or {}
        except SeisdError:
            summary = {}
        s = summary.get("scores") or {}
        if summary.get("model") == model and s.get("truth") == a.truth and s.get("confusion"):
            return s, EXIT_OK
        name = f"{name}-{a.truth}"
    print(f"predicting {a.survey} with {model} to score against {a.truth} (prediction {name})", file=sys.stderr)
    job = {"kind": "predict", "model": model, "survey": a.survey, "truth": a.truth, "output": name,
           "overwrite": True, "figures": {"enabled": False}}
    code, r = run_quietly(a, out, job)
    if r is None:
        return None, code or EXIT_ERROR
    return r.get("scores"), EXIT_OK


def report_of(confusion: list[list[int]], classes: list[str]) -> dict[str, Any]:
    """The validation report's layout from a confusion matrix (rows true, columns predicted)."""
    n = len(confusion)
    names = classes if len(classes) == n else [str(k) for k in range(n)]
    support = [sum(row) for row in confusion]
    predicted = [sum(confusion[t][k] for t in range(n)) for k in range(n)]
    per, f1s = {}, []
    for k, name in enumerate(names):
        hit = confusion[k][k]
        p = hit / predicted[k] if predicted[k] else 0.0
        r = hit / support[k] if support[k] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        per[name] = {"precision": p, "recall": r, "f1": f1, "support": support[k]}
        if support[k]:
            f1s.append(f1)
    total = sum(support)
    present = [per[n]["recall"] for k, n in enumerate(names) if support[k]]
    return {"classes": per, "pixel_accuracy": sum(confusion[k][k] for k in range(n)) / total if total else 0.0,
            "mean_class_accuracy": sum(present) / len(present) if present else 0.0,
            "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0, "support": total}


def _print_compare(doc: dict[str, Any], infos: dict[str, dict[str, Any]]) -> None:
    a, b = doc["models"]
    for title, reports in (("validation (stored in the model files)", doc["validation"]),
                           ("against the truth volume", doc["truth"])):
        if reports is None:
            continue
        print(f"{title}:")
        ra, rb = reports.get(a) or {}, reports.get(b) or {}
        names = list((ra.get("classes") or {})) + [n for n in (rb.get("classes") or {}) if n not in
                                                   (ra.get("classes") or {})]
        rows = []
        for n in names:
            ca, cb = (ra.get("classes") or {}).get(n), (rb.get("classes") or {}).get(n)
            rows.append([n] + _cells(ca) + _cells(cb) + [_delta(ca, cb, "f1")])
        for key, label in (("pixel_accuracy", "pixel accuracy"), ("mean_class_accuracy", "mean class acc."),
                           ("macro_f1", "macro F1")):
            va, vb = ra.get(key), rb.get(key)
            rows.append([label, "", _num(va), "", "", "", _num(vb), "", "",
                         f"{vb - va:+.3f}" if va is not None and vb is not None else "-"])
        _table(["CLASS", f"{a} P", "R", "F1", "N", f"{b} P", "R", "F1", "N", "F1 B-A"], rows)
        if not ra or not rb:
            print(f"  (no stored validation report for {', '.join(m for m, r in ((a, ra), (b, rb)) if not r)})")


def _cells(c: dict[str, Any] | None) -> list[str]:
    return [_num(c.get(k)) for k in ("precision", "recall", "f1")] + [str(c.get("support", "-"))] if c else ["-"] * 4


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def _delta(ca: dict[str, Any] | None, cb: dict[str, Any] | None, key: str) -> str:
    return f"{cb[key] - ca[key]:+.3f}" if ca and cb else "-"
