"""seisctl predict, models list | info | rm, predictions list | info | rm."""
from __future__ import annotations

import argparse
import time
from typing import Any

from client.api import Client
from client.cli._common import EXIT_OK, Command, Info, Out, Remove, _table, client_of, command, given, group
from client.cli._follow import submit_and_follow


@command
class Predict(Command):
    """Submits a `predict` job (docs/prediction.md) applying model `model` (see `models list`) to survey `survey`,
    writing prediction `--name` (default `MODEL-SURVEY`, so one model's predictions of two surveys do not clash;
    see `predictions list`). `--format` the output files; `--figure-inline N`, `--figure-crossline N`, `--figure-time T`
    the lines to draw (repeatable), `--no-figures` none; `--overlap` the fcn tile overlap; `--orientation` the direction
    of a 2D model's sections (`split`: both ways, each member of an ensemble along one of them, for half the
    time). Options not given are left out of the job and the daemon's defaults apply: outputs
    `labels,confidence`, format `segy`, figures (in predictions/NAME/figures/) of the inline, crossline and time
    holding the most picks (the middle ones without picks), stride 1, precision `auto`, batch size
    automatic, device `auto`; `--tile`, `--overlap` and `--orientation` default to the model's and the survey's
    sizes (docs/prediction.md).

    When it succeeds (without `--json` or `--detach`) it prints the output files, the figures and, with
    `--truth`, the scores (`scores  pixel accuracy ..., mean class accuracy ...`)."""

    name, help = "predict", "apply a model to a whole survey (a job): SEG-Y/HDF5 outputs and figures"
    runs_job = True
    keys = {"model": "MODEL", "survey": "SURVEY", "output": "--name {}", "outputs": "--outputs {}",
            "format": "--format {}", "truth": "--truth {}", "figures.inlines": "--figure-inline {}",
            "figures.crosslines": "--figure-crossline {}", "figures.times": "--figure-time {}",
            "figures.enabled": "--no-figures", "tile": "--tile {}", "overlap": "--overlap {}",
            "orientation": "--orientation {}", "stride": "--stride {}", "smooth": "--smooth {}",
            "precision": "--precision {}", "batch_size": "--batch-size {}",
            "device": "--device {}", "keep_arrays": "--keep-arrays", "overwrite": "--overwrite"}

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="model name (seisctl models list)")
        p.add_argument("survey", help="survey name")
        p.add_argument("--name", help="output name: predictions/NAME (default: MODEL-SURVEY)")
        p.add_argument("--outputs", help="comma-separated: labels, probabilities, confidence, disagreement "
                       "(default labels,confidence)")
        p.add_argument("--format", choices=["segy", "hdf5", "both"])
        p.add_argument("--truth", metavar="VOLUME", help="a label volume of the survey to score against")
        p.add_argument("--figure-inline", type=int, action="append", metavar="N", help="inline number to draw "
                       "(repeatable; default the one with the most picks)")
        p.add_argument("--figure-crossline", type=int, action="append", metavar="N")
        p.add_argument("--figure-time", type=float, action="append", metavar="T")
        p.add_argument("--no-figures", action="store_true")
        p.add_argument("--tile", help="fcn tile, e.g. 256,256")
        p.add_argument("--overlap", type=int)
        p.add_argument("--orientation", choices=["inline", "crossline", "both", "split"])
        p.add_argument("--stride", type=int, help="patch models: every n-th voxel, filled (quick preview)")
        p.add_argument("--smooth", metavar="SI,SX,SS", type=_sigmas, help="Gaussian sigmas over the "
                       "probabilities (inlines, crosslines, samples; default the model file's, 0,0,0: none)")
        p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], help="the forward pass's number "
                       "format (default auto: bfloat16 where the device computes it natively)")
        p.add_argument("--batch-size", type=int)
        p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
        p.add_argument("--keep-arrays", action="store_true", default=None, help="keep the .npy working arrays")
        p.add_argument("--overwrite", action="store_true", default=None,
                       help="replace an earlier prediction of that name")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        job: dict[str, Any] = {"kind": "predict", "model": a.model, "survey": a.survey, **given(
                               output=a.name, outputs=a.outputs.split(",") if a.outputs is not None else None,
                                       format=a.format, stride=a.stride, overwrite=a.overwrite,
                                       keep_arrays=a.keep_arrays, device=a.device)}
        figures = {**({"enabled": False} if a.no_figures else {}), **{
            key: values for key, values in (("inlines", a.figure_inline), ("crosslines", a.figure_crossline),
                                            ("times", a.figure_time)) if values}}
        if figures:
            job["figures"] = figures
        job.update(given(truth=a.truth, overlap=a.overlap, orientation=a.orientation, batch_size=a.batch_size,
                         tile=[int(n) for n in a.tile.split(",")] if a.tile else None,
                         smooth=a.smooth, precision=a.precision))
        code = submit_and_follow(a, out, job)
        if code == EXIT_OK and not out.json and not a.detach:
            _print_prediction(client_of(a), a)
        return code


def _sigmas(text: str) -> list[float]:
    try:
        values = [float(n) for n in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers SI,SX,SS (e.g. 16,16,1), got {text!r}")
    return values


def _print_prediction(c: Client, a: argparse.Namespace) -> None:
    r = c.show(a.job_id).get("result") or {}
    paths = r.get("paths") or {}
    for p in paths.values() if isinstance(paths, dict) else paths:
        print(f"output  {p}")
    for f in r.get("figures") or []:
        print(f"figure  {f}")
    if r.get("scores"):
        s = r["scores"]
        print(f"scores  pixel accuracy {s['pixel_accuracy']:.4f}, mean class accuracy {s['mean_class_accuracy']:.4f}")


group("models", "trained models: list, info, rm")


@command
class ModelsList(Command):
    """A table (name, architecture, classes, input crop and channels, the job that made it, when); `--json`:
    `{"models": [...]}` as the `models.list` result."""

    name, help = "models list", "models in the home"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        rows = client_of(a).call("models.list")["models"]
        out.emit({"models": rows}, lambda: _table(
            ["NAME", "ARCHITECTURE", "CLASSES", "INPUT", "JOB", "CREATED"],
            [[m["name"], m.get("architecture", "?"), len(m.get("classes") or []),
              "x".join(map(str, m.get("input_shape") or [])) + f" x{m.get('in_channels', '?')}ch",
              (m.get("provenance") or {}).get("job_id", "-"), (m.get("provenance") or {}).get("time_utc", "-")]
             for m in rows]))
        return EXIT_OK


command(Info("models info", "architecture, classes, input, training, metrics, provenance", "models.info",
             "The `models.info` result as YAML (architecture, classes, input, normalisation, training, metrics, "
             "provenance); `--json` as JSON."))
command(Remove("models rm", "remove a model", "models.rm", "model",
               "Remove the model file; refused (exit 5) while a queued or running job uses it; `--json` "
               "`{\"removed\": NAME}`."))


group("predictions", "predictions in the home: list, info, rm",
      "A prediction is the folder predictions/NAME/ a `predict` job writes (its outputs, summary.json, and what "
      "else the job leaves there); they are listed as they are, finished or not.")


@command
class PredictionsList(Command):
    """A table (name, model, survey, the job that wrote it and its state, finished or not, files and size, when
    modified); `--json`: the `predictions.list` result, `{"predictions": [...]}`."""

    name, help = "predictions list", "predictions in the home"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        rows = client_of(a).predictions()
        out.emit({"predictions": rows}, lambda: _table(
            ["NAME", "MODEL", "SURVEY", "JOB", "FINISHED", "FILES", "SIZE", "MODIFIED"],
            [[p["name"], p.get("model") or "-", p.get("survey") or "-",
              f"{p['job']} ({p['job_state']})" if p.get("job") else "-", "yes" if p["complete"] else "no",
              p["file_count"], _size(p["size_bytes"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(p["modified"]))]
             for p in rows]))
        return EXIT_OK


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


command(Info("predictions info", "model, survey, job, files, scores", "predictions.info",
             "The `predictions.info` result as YAML (name, folder, model, survey, the jobs that wrote it, whether it "
             "finished, every file with its size, and its summary: outputs, figures, scores, timing); `--json` as "
             "JSON."))
command(Remove("predictions rm", "remove a prediction", "predictions.rm", "prediction",
               "Remove the prediction's folder; refused (exit 5) while a queued or running job writes it; `--json` "
               "`{\"removed\": NAME}`."))
