"""The `predict` job kind: a model file applied to a whole survey, outputs written as SEG-Y and/or HDF5.

The spec and its submit-time check are torch-free (they run in the daemon's main process): the model file's info
is read with h5py only, the survey's volumes from survey.json. The runner (in an executor) is
daemon.executor.predict.job.run_predict_job. docs/prediction.md documents every key.

Results go to <home>/predictions/<output>/ (outputs, progress record, scores, figures/).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from daemon.common.home import model_file, prediction_folder, survey_folder
from daemon.kinds.data import DEFAULT_VOLUME, NAME, name_problem
from daemon.kinds.registry import CheckContext, JobKind, JobSpec, TaskResources, register
from daemon.kinds.schema import Section

OutputName = Literal["labels", "probabilities", "confidence", "disagreement"]  # what a model's application can write
OUTPUT_NAMES: tuple[str, ...] = get_args(OutputName)  # in that order (predict jobs, streaming, the apply engine)
# the apply functions' default: disagreement costs a channel and a file, so it is made on request
PLAIN_OUTPUTS: tuple[str, ...] = tuple(o for o in OUTPUT_NAMES if o != "disagreement")
# the forward pass's number formats; "auto" resolves by device (daemon/executor/predict/spec.py resolve_precision)
Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# how a 2D model meets the volume: along inlines, along crosslines, both ways averaged, or both ways with each
# member of an ensemble along one of them only (daemon/executor/predict/engine.py; docs/prediction.md)
Orientation2D = Literal["inline", "crossline", "both", "split"]
ORIENTATIONS_2D: tuple[str, ...] = get_args(Orientation2D)
SPLIT_NEEDS_MEMBERS = ("'split' runs each member of an ensemble along inlines or along crosslines, and this "
                       "model has one member: use 'both'")


def split_problem(orientation: str | None, params: dict[str, Any] | None) -> str | None:
    """SPLIT_NEEDS_MEMBERS when `orientation` is split and the model file's params name fewer than two members."""
    if orientation == "split" and int((params or {}).get("members", 1) or 1) < 2:
        return SPLIT_NEEDS_MEMBERS
    return None
# Gaussian sigmas (inlines, crosslines, samples) over the class probabilities before the argmax
# (daemon/executor/predict/smoothing.py): a train job's apply.smooth, a predict job's smooth
SIGMA_MAX = 64
Sigma = Annotated[float, Field(ge=0, le=SIGMA_MAX)]
Smooth = tuple[Sigma, Sigma, Sigma]
SMOOTH_HELP = ("Gaussian sigmas [inlines, crosslines, samples] over the class probabilities before labels and "
               "confidence are made (0 = not along that axis; docs/prediction.md 'Smoothing')")


class FiguresSection(Section):
    """Slices drawn as PNG: real inline / crossline numbers and sample times. Absent: the line holding the most picks
    (without picks the middle one); daemon/executor/predict/job.py figure_slices."""

    inlines: list[int] | None = None
    crosslines: list[int] | None = None
    times: list[float] | None = None
    enabled: bool = Field(True, description="false: write no figures")


class PredictSpec(JobSpec):
    kind: Literal["predict"] = "predict"
    model: str = Field(description="model name: models/<model>.h5 in the home", json_schema_extra=NAME)
    survey: str = Field(description="survey name in the home", json_schema_extra=NAME)
    output: str = Field(None, validate_default=False,  # type: ignore[assignment]  # filled in below when absent
                        description="results go to predictions/<output>/ in the home; default <model>-<survey>, so "
                        "one model's predictions of two surveys do not clash")
    outputs: list[OutputName] = Field(
        default_factory=lambda: ["labels", "confidence"], min_length=1)
    format: Literal["segy", "hdf5", "both"] = "segy"
    tile: list[int] | None = Field(None, description="fcn tile [lateral, samples] (2D) or 3 sizes (3D); "
                                   "default whole sections up to 512 x 512")
    overlap: int | list[int] | None = Field(None, description="fcn tile overlap; default min(32, tile / 4)")
    orientation: Orientation2D | None = Field(
        None, description="2D models: slab direction (both: inline and crossline sections averaged; split: the "
        "same with each member of an ensemble along one of them, half the forward passes); default the model's own")
    stride: int = Field(1, ge=1, le=64, description="patch models: every n-th voxel per axis, filled (preview)")
    smooth: Smooth | None = Field(None, description=SMOOTH_HELP + "; default the model file's, [0, 0, 0]: none")
    precision: Precision = Field(
        "auto", description="the forward pass's number format: bfloat16 runs convolutions in bfloat16 (about 2x "
        "faster on a CPU with AVX-512 BF16); auto: bfloat16 where the device computes it natively, else float32")
    batch_size: int | Literal["auto"] = Field("auto", json_schema_extra=lambda s: s["anyOf"][0].update(
        minimum=1, maximum=65536))  # _batch
    chunk_inlines: int | None = Field(None, ge=1, description="inlines per resumable chunk; default by memory")
    shards: int = Field(1, ge=1, le=64, description="inline ranges predicted by parallel processes into the same "
                        "outputs (1: in the executor itself)")
    figures: FiguresSection = Field(default_factory=FiguresSection)
    truth: str | None = Field(None, description="a label volume of the survey (-1 = unlabelled) to score against")
    keep_arrays: bool = Field(False, description="keep the .npy working arrays after export")
    overwrite: bool = Field(False, description="replace an existing prediction of that name")

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 65536:
            raise ValueError("expected 'auto' or an integer 1..65536")
        return v

    @field_validator("outputs")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return [o for o in OUTPUT_NAMES if o in v]

    @model_validator(mode="after")
    def _default_output(self) -> "PredictSpec":
        if self.output is None:  # absent (an empty name is refused by the check, like any invalid name)
            self.output = default_output(self.model, self.survey)
        return self

    def default_name(self) -> str:
        return self.output


def default_output(model: str, survey: str) -> str:
    """A prediction's name when the job gives none: the model's and the survey's names."""
    return f"{model}-{survey}"


def check_predict(spec: PredictSpec, ctx: CheckContext) -> list[str]:
    """Every semantic problem of a predict job file, each naming its key; empty when it can run."""
    problems = [p for p in (name_problem("model", spec.model), name_problem("survey", spec.survey),
                            name_problem("output", spec.output)) if p]
    if problems:
        return problems
    if prediction_folder(ctx.home, spec.output).exists() and not spec.overwrite:
        problems.append(f"output: a prediction {spec.output!r} already exists (give `overwrite: true` to replace "
                        f"it, `output: NEW` to keep both, or remove it: `seisctl predictions rm {spec.output}`)")
    folder = survey_folder(ctx.home, spec.survey)
    if not (folder / "survey.json").is_file():
        return problems + [f"survey: no survey {spec.survey!r} in this home (import it: seisctl survey import "
                           f"FILE.sgy --name {spec.survey})"]
    doc = json.loads((folder / "survey.json").read_text())
    have = list(doc.get("volumes", {}))
    if spec.truth is not None and spec.truth not in have:
        problems.append(f"truth: survey {spec.survey!r} has no volume {spec.truth!r} (it has {', '.join(have)})")
    return problems + _figure_problems(spec, doc) + _model_problems(spec, ctx.home, have)


def _figure_problems(spec: PredictSpec, doc: dict[str, Any]) -> list[str]:
    """Figure slices must be real line numbers and sample times of the survey."""
    from workers.survey import Geometry

    try:
        g = Geometry.from_json(doc)
    except (KeyError, TypeError, ValueError):
        return []
    samples = [g.sample_start + g.sample_step * k for k in range(g.sample_count)]
    axes = (("inlines", spec.figures.inlines, list(g.inlines)), ("crosslines", spec.figures.crosslines,
                                                                   list(g.crosslines)),
            ("times", spec.figures.times, samples))
    problems = []
    for key, values, axis in axes:
        for v in values or []:
            if not any(abs(v - a) < 1e-6 * max(1.0, abs(a)) for a in axis):
                problems.append(f"figures.{key}: {v:g} is not in the survey ({key} {axis[0]:g} to {axis[-1]:g}, "
                                f"step {axis[1] - axis[0] if len(axis) > 1 else 0:g})")
    return problems


def _model_problems(spec: PredictSpec, home: Path, have: list[str]) -> list[str]:
    from daemon.kinds.modelinfo import ModelFileError, read_model_info

    path = model_file(home, spec.model)
    if not path.is_file():
        return [f"model: no model {spec.model!r} in this home (models/{spec.model}.h5; `seisctl models list`)"]
    try:
        info = read_model_info(path)
    except ModelFileError as exc:
        return [f"model: {exc}"]
    input_spec = info.input_spec or {}
    per_volume = 2 * int(input_spec.get("context", 0) or 0) + 1  # its section and the context on each side
    volumes = list(input_spec.get("volumes") or ([DEFAULT_VOLUME] if info.in_channels == per_volume else []))
    problems = [f"model: the model reads volume {v!r}, which survey {spec.survey!r} lacks (it has "
                f"{', '.join(have)})" for v in volumes if v not in have]
    if len(volumes) * per_volume != info.in_channels:
        problems.append(f"model: the model takes {info.in_channels} channels but its input spec names "
                        f"{len(volumes)} volumes" + (f" x {per_volume} sections" if per_volume > 1 else ""))
    if input_spec.get("orientation") == "time":
        problems.append("model: trained on time slices, which predict does not apply (inline, crossline, 3d)")
    crop = list(input_spec.get("crop") or info.input_shape)
    if spec.tile is not None and len(spec.tile) != len(crop):
        problems.append(f"tile: {len(crop)} sizes expected for this model (its crop is {crop}), got {spec.tile}")
    if spec.orientation is not None and len(crop) == 3:
        problems.append("orientation: a 3D model has no slab orientation; remove the key")
    elif problem := split_problem(spec.orientation, info.params):
        problems.append(f"orientation: {problem}")
    return problems


def shard_resources(spec: PredictSpec, default: TaskResources) -> TaskResources:
    """The kind's `resources` hook. A sharded job's executor only plans, waits and exports: its shards, tasks of
    their own, ask for the CPUs (daemon/executor/predict/ray_shards.py); holding CPUs meanwhile could leave none for
    them."""
    return TaskResources(0.0, default.gpus) if spec.shards > 1 else default


register(JobKind(name="predict", spec=PredictSpec, runner="daemon.executor.predict.job:run_predict_job", resumable=True,
                 check=check_predict, resources=shard_resources, writes=lambda s: (f"predictions/{s.output}",),
                 doc="apply a model to a whole survey (SEG-Y / HDF5 outputs, figures, scores)"))
