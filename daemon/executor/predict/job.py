"""The predict job's runner, inside an executor: model file + survey -> outputs, figures and scores.

Steps: load the model file and its apply recipe; run predict_volume chunk by chunk into predictions/<output>/arrays
(progress events with ETA; a cancel stops after the current batch); export SEG-Y (the source's geometry and
headers) and/or HDF5; draw the chosen slices (by default through the picks) into predictions/<output>/figures/,
beside the outputs they show; score against a truth volume.

Resume: the job is registered resumable, and predict_volume is always called with resume=True on the same
folder, so a job interrupted by a daemon kill or by the death of its executor continues at the first chunk not yet
recorded as written in arrays/progress.json and gives the same bytes as an uninterrupted run. Only a fresh first
attempt with overwrite: true clears an old prediction of the same name; a fresh attempt that finds the folder made
by another job since the submit fails rather than write into it.

The folder is registered with ctx.begin_output before it is made and finished once summary.json is written: a job
that finally fails or is cancelled leaves nothing under predictions/ (the daemon removes the folder), so its name
may be used again without overwrite.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from daemon.common.home import model_file, prediction_folder, survey_folder
from daemon.kinds.predict import OUTPUT_NAMES, PredictSpec
from daemon.executor.modelfile import load_model_file
from daemon.executor.predict.amplitude import amplitude_warning, survey_normalised
from daemon.executor.predict.apply import predict_volume
from daemon.executor.predict.figures import SparseLabels, SurveyAxes, lines_through_picks, slice_figures
from daemon.executor.predict.outputs import confusion_matrix, load_outputs, scores_of, write_hdf5, write_segy
from daemon.executor.predict.recipe import ApplyRecipe, recipe_of
from daemon.executor.predict.sharding import ShardPlan, ShardRunner, predict_sharded
from workers.picks import PickSet, pick_set_file, pick_set_names
from workers.survey import Survey

APPLY_SHARE = 0.9   # of the progress bar; exports and figures take the rest
SCORE_INLINES = 32  # inlines scored at a time, so truth and labels never have to fit in memory whole


def run_predict_job(spec: PredictSpec, ctx: Any) -> dict[str, Any]:
    """Run a predict job; returns paths, timing figures, and scores when spec.truth is given."""
    model, info = load_model_file(model_file(ctx.home, spec.model))
    recipe = recipe_of(info, spec.tile, spec.overlap, spec.orientation, spec.stride, smooth=spec.smooth,
                       precision=spec.precision)
    survey = Survey.open(survey_folder(ctx.home, spec.survey))
    recipe = survey_normalised(recipe, info, survey)
    warnings = [w for w in [amplitude_warning(info, survey, recipe.volumes[0])] if w]
    for w in warnings:
        ctx.log.warning("%s", w)
    out = prediction_folder(ctx.home, spec.output)
    if not ctx.resume and out.exists():
        if not spec.overwrite:
            raise RuntimeError(f"a prediction {spec.output!r} was made by another job after this one was submitted; "
                               "submit again with another output name, or with overwrite: true to replace it")
        shutil.rmtree(out)
    ctx.begin_output(out)
    out.mkdir(parents=True, exist_ok=True)
    volumes = [survey.volume(v) for v in recipe.volumes]
    # Labels are always made: figures and scores need them even when only probabilities are exported.
    computed = sorted(set(spec.outputs) | {"labels"}, key=OUTPUT_NAMES.index)
    ctx.log.info("predicting survey %s %s with model %s (%s, %s) on %s", spec.survey, survey.shape, spec.model,
                 recipe.kind, recipe.apply_kwargs(survey.shape), ctx.device)
    report = lambda f, eta, msg: ctx.progress(APPLY_SHARE * f, msg, eta_s=eta)  # noqa: E731
    if spec.shards > 1:
        plan = ShardPlan(str(model_file(ctx.home, spec.model)), str(survey.folder), tuple(recipe.volumes),
                         str(out / "arrays"), tuple(computed), recipe.apply_kwargs(survey.shape), spec.batch_size,
                         spec.chunk_inlines, str(ctx.device))
        runner, where = _shard_runner(ctx)
        result = predict_sharded(plan, spec.shards, model=model, progress=report, should_stop=ctx.cancelled.is_set,
                                 runner=runner)
        ctx.log.info("sharded over %d %s: %s", len(result["shards"]), where, result["shards"])
    else:
        result = predict_volume(model, volumes if len(volumes) > 1 else volumes[0], out_dir=out / "arrays",
                                outputs=computed, batch_size=spec.batch_size, device=ctx.device,
                                chunk_inlines=spec.chunk_inlines, resume=True, should_stop=ctx.cancelled.is_set,
                                progress=report, **recipe.apply_kwargs(survey.shape))
    if result["status"] != "complete":
        ctx.check_cancel()
        raise RuntimeError(f"prediction stopped at chunk {result['chunks_done']} of {result['n_chunks']}")
    if result["resumed_from_chunk"]:
        ctx.log.info("resumed at chunk %d of %d", result["resumed_from_chunk"], result["n_chunks"])
    arrays = load_outputs(result)
    exported = {o: arrays[o] for o in spec.outputs}
    paths = _export(spec, survey, out, exported, recipe, ctx)
    figures = _figures(spec, survey, volumes[0], arrays, recipe, ctx)
    scores = _score(spec, survey, arrays["labels"], len(recipe.classes), ctx) if spec.truth else None
    summary = {"model": spec.model, "survey": spec.survey, "output": str(out), "paths": paths,
               "figures": figures, "shape": result["shape"], "classes": list(recipe.classes),
               "recipe": recipe.describe() | {k: v for k, v in recipe.apply_kwargs(survey.shape).items()
                                               if k in ("tile", "overlap")} | {"precision": result["precision"]},
               "seconds": result["seconds"], "voxels_per_s": result["voxels_per_s"],
               "resumed_from_chunk": result["resumed_from_chunk"], "n_chunks": result["n_chunks"],
               "chunk_inlines": result["chunk_inlines"], "batch_size": result["batch_size"],
               "device": result["device"], "shards": result.get("shards"), "scores": scores,
               "warnings": warnings}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
    ctx.finish_output(out)
    if not spec.keep_arrays:
        del arrays, exported
        shutil.rmtree(out / "arrays", ignore_errors=True)
    ctx.progress(1.0, "done")
    return json.loads(json.dumps(summary, default=_jsonable))


def _shard_runner(ctx: Any) -> tuple[ShardRunner | None, str]:
    """Ray tasks on the Ray backend (any node, shared storage); else processes of this executor."""
    from daemon.executor import raytasks

    if raytasks.on_ray():  # this executor was started by the Ray backend: the same test as a train job's ranks
        from daemon.executor.predict.ray_shards import RayShardRunner

        return RayShardRunner(*raytasks.task_resources(str(ctx.device)), log=ctx.log), "Ray tasks"
    return None, "processes"


def _export(spec: PredictSpec, survey: Survey, out: Path, arrays: dict[str, np.ndarray], recipe: ApplyRecipe,
            ctx: Any) -> dict[str, str]:
    paths: dict[str, str] = {}
    if spec.format in ("segy", "both"):
        ctx.progress(APPLY_SHARE, "writing SEG-Y")
        paths.update({k: str(v) for k, v in write_segy(survey, out, arrays, recipe.classes).items()})
    if spec.format in ("hdf5", "both"):
        ctx.progress(APPLY_SHARE + 0.03, "writing HDF5")
        h5 = write_hdf5(out / "prediction.h5", arrays, survey.inlines, survey.crosslines, survey.samples,
                        recipe.classes, attrs={"model": spec.model, "survey": spec.survey})
        paths["hdf5"] = str(h5)
    ctx.log.info("outputs written: %s", paths)
    return paths


def _figures(spec: PredictSpec, survey: Survey, seismic: np.ndarray, arrays: dict[str, np.ndarray],
             recipe: ApplyRecipe, ctx: Any) -> list[str]:
    """The figures, in predictions/<output>/figures/ (the job's result lists their paths)."""
    if not spec.figures.enabled:
        return []
    ctx.progress(APPLY_SHARE + 0.06, "drawing figures")
    picks = figure_picks(recipe, survey)
    slices = figure_slices(spec, survey, picks)
    layers: dict[str, Any] = {"prediction": arrays["labels"], "confidence": arrays.get("confidence"),
                              "class_names": list(recipe.classes)}
    if spec.truth:
        layers["ground_truth"] = survey.volume(spec.truth)
    if picks is not None:
        layers["picks"] = SparseLabels(survey.shape, picks.positions(), picks.cls)
    folder = prediction_folder(ctx.home, spec.output) / "figures"
    written = slice_figures(folder, seismic, SurveyAxes.of(survey), slices, **layers)
    return [str(p) for p in written]


def figure_picks(recipe: ApplyRecipe, survey: Survey) -> PickSet | None:
    """The picks to draw and to choose the lines by: the model's own pick set when this survey has it, else the
    survey's first pick set, else none."""
    names = [recipe.picks] if recipe.picks and pick_set_file(survey.folder, recipe.picks).is_file() else []
    names = names or pick_set_names(survey.folder)[:1]
    return PickSet.load(survey.folder, names[0]) if names else None


def figure_slices(spec: PredictSpec, survey: Survey, picks: PickSet | None = None) -> dict[str, list[float]]:
    """The slices to draw: those of the job file, else the inline, crossline and time holding the most picks,
    else the middle ones."""
    f = spec.figures
    through = lines_through_picks(picks.positions(), survey.shape) if picks is not None else None
    default = [axis[through[k] if through else len(axis) // 2].item()
               for k, axis in enumerate((survey.inlines, survey.crosslines, survey.samples))]
    return {"inline": f.inlines if f.inlines is not None else default[:1],
            "crossline": f.crosslines if f.crosslines is not None else default[1:2],
            "time": f.times if f.times is not None else default[2:]}


def _score(spec: PredictSpec, survey: Survey, labels: np.ndarray, n_classes: int, ctx: Any) -> dict[str, Any]:
    truth = survey.volume(spec.truth)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    for i0 in range(0, labels.shape[0], SCORE_INLINES):
        sl = slice(i0, i0 + SCORE_INLINES)
        confusion += confusion_matrix(labels[sl], np.rint(truth[sl]), n_classes)
    scores = {**scores_of(confusion), "truth": spec.truth}
    ctx.log.info("scored against %s: pixel accuracy %.4f, mean class accuracy %.4f over %d voxels", spec.truth,
                 scores["pixel_accuracy"], scores["mean_class_accuracy"], scores["n_scored"])
    return scores


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, Path)):
        return list(value) if isinstance(value, tuple) else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-able")
