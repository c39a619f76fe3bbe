"""The `suggest` job kind: after a predict, the lines (inlines and crosslines) and regions where the model is least
sure, ranked, drawn and written beside the prediction (docs/loop.md).

The spec and its submit-time check are torch-free (the daemon's main process); the runner, in an executor, is
daemon.executor.runners.suggest.run_suggest_job. It reads the prediction's confidence (top-1 minus top-2
probability) or its disagreement (between ensemble members and orientations) or both, and its labels, and
writes predictions/<prediction>/suggest/suggestions.{json,csv,png}.
"""
from __future__ import annotations

import json
from typing import Any, Literal, get_args

from pydantic import Field, model_validator

from daemon.common.home import model_file, prediction_folder, survey_folder
from daemon.kinds.data import NAME, name_problem, pick_set_problem
from daemon.kinds.modelinfo import ModelFileError, read_model_info
from daemon.kinds.predict import default_output
from daemon.kinds.registry import CheckContext, JobKind, JobSpec, register
from workers.picks import pick_set_names

SUGGEST_FOLDER = "suggest"  # predictions/<prediction>/suggest/: the files a suggest job leaves
Measure = Literal["confidence", "disagreement", "both"]  # what ranks the lines; all but confidence read disagreement
MEASURES: tuple[str, ...] = get_args(Measure)


class SuggestSpec(JobSpec):
    kind: Literal["suggest"] = "suggest"
    model: str = Field(description="model name: the model whose prediction is read", json_schema_extra=NAME)
    survey: str = Field(description="survey name in the home", json_schema_extra=NAME)
    prediction: str = Field(None, validate_default=False,  # type: ignore[assignment]  # filled in below
                            description="the prediction to read: predictions/<prediction>/; default <model>-<survey>"
                            " (what `seisctl predict MODEL SURVEY` writes)")
    lines: int = Field(5, ge=1, le=200, description="how many lines to suggest")
    spacing: int | None = Field(None, ge=0, description="suggested lines of one kind lie more than this many lines "
                                "apart; default 1/16 of the survey's lines of that kind (at least 2)")
    region: float = Field(0.4, gt=0, le=1, description="the region's share of a line's traces (its lateral extent)")
    region_samples: float = Field(0.5, gt=0, le=1, description="the region's share of a line's samples")
    kinds: list[Literal["inline", "crossline"]] = Field(default_factory=lambda: ["inline", "crossline"],
                                                        min_length=1, description="which kinds of line to suggest")
    margin: int | None = Field(None, ge=0, description="lines (and traces of a region) this close to the survey's "
                               "edge are not suggested: a model is unsure at a section's edge whatever it learnt; "
                               "default 1/16 of the survey's lines of that kind (at least 2); 0: none")
    picks: str | None = Field(None, description="the pick set already picked on the survey: uncertainty within "
                              "`near` traces of its picks counts for less (nothing on a picked trace), so the list "
                              "favours what the picks do not cover; default the set the model was trained from on "
                              "this survey (its model file names it; none for older models)",
                              json_schema_extra=NAME)
    near: int = Field(0, ge=0, description="the lateral distance in traces over which a trace's weight grows from "
                      "0 on a picked trace to 1; 0 (the default): the picks do not weigh (1/8 of the lines changed "
                      "2 of 8 choices of the loop experiment and gained nothing, docs/loop.md)")
    measure: Measure = Field(
        "confidence", description="what ranks the lines: 1 - confidence (top-1 minus top-2 probability), the "
        "disagreement between the views the prediction blended (ensemble members, orientations; a predict job's "
        "`disagreement` output), or the mean of the two (docs/loop.md has what each found)")

    @model_validator(mode="after")
    def _default_prediction(self) -> "SuggestSpec":
        if self.prediction is None:
            self.prediction = default_output(self.model, self.survey)
        return self

    def default_name(self) -> str:
        return f"suggest {self.prediction}"


def default_picks(spec: SuggestSpec, home: Any) -> str | None:
    """The pick set whose picks weigh: the spec's, else the one the model file says the model was trained from on
    this survey when the survey still has it, else None (a model trained from example sets, or older)."""
    if spec.picks is not None:
        return spec.picks
    try:
        info = read_model_info(model_file(home, spec.model))
    except ModelFileError:
        return None
    names = [s.get("picks") for s in info.trained_on.get("surveys", []) if s.get("name") == spec.survey]
    have = pick_set_names(survey_folder(home, spec.survey))
    return next((n for n in names if n and n in have), None)


def check_suggest(spec: SuggestSpec, ctx: CheckContext) -> list[str]:
    """The model, the survey and a finished prediction of the model on the survey, with confidence."""
    problems = [p for p in (name_problem("model", spec.model), name_problem("survey", spec.survey),
                            name_problem("prediction", spec.prediction),
                            spec.picks is not None and name_problem("picks", spec.picks)) if p]
    if problems:
        return problems
    if not model_file(ctx.home, spec.model).is_file():
        problems.append(f"model: no model {spec.model!r} in this home (`seisctl models list`)")
    if not (survey_folder(ctx.home, spec.survey) / "survey.json").is_file():
        problems.append(f"survey: no survey {spec.survey!r} in this home (`seisctl survey list`)")
    elif spec.picks is not None and (p := pick_set_problem("picks", ctx.home, spec.survey, spec.picks)):
        problems.append(p)
    if problems:
        return problems
    if spec.picks is not None and spec.near == 0:
        return ["picks: the pick set weighs the ranking only with near > 0 (the distance in traces at which a "
                "trace counts in full); give near, or leave picks out"]
    if spec.near > 0 and spec.picks is None and default_picks(spec, ctx.home) is None:
        return [f"near: model {spec.model!r} names no pick set of survey {spec.survey!r} it was trained from "
                "(trained from example sets, or an older model file, or the set is gone): give picks"]
    run = f"seisctl predict {spec.model} {spec.survey}" + (
        "" if spec.prediction == default_output(spec.model, spec.survey) else f" --name {spec.prediction}")
    summary_file = prediction_folder(ctx.home, spec.prediction) / "summary.json"
    if not summary_file.is_file():
        return [f"prediction: model {spec.model!r} has no finished prediction {spec.prediction!r} of survey "
                f"{spec.survey!r}; run `{run}` first"]
    try:
        summary: dict[str, Any] = json.loads(summary_file.read_text())
    except (OSError, ValueError) as exc:
        return [f"prediction: {summary_file} cannot be read ({exc}); run `{run} --overwrite`"]
    if (summary.get("model"), summary.get("survey")) != (spec.model, spec.survey):
        return [f"prediction: {spec.prediction!r} was made by model {summary.get('model')!r} on survey "
                f"{summary.get('survey')!r}, not {spec.model!r} on {spec.survey!r}; run `{run}`"]
    paths = summary.get("paths") or {}
    needs = ["labels", "confidence"] + (["disagreement"] if spec.measure != "confidence" else [])
    if "hdf5" in paths:  # one file: which datasets it holds is known when the runner opens it
        return []
    if missing := [o for o in needs if o not in paths]:
        return [f"prediction: {spec.prediction!r} holds no {' or no '.join(missing)} (its outputs: "
                f"{', '.join(paths) or 'none'}); run `{run} --outputs {','.join(needs)} --overwrite`"]
    return []



register(JobKind(name="suggest", spec=SuggestSpec, runner="daemon.executor.runners.suggest:run_suggest_job",
                 devices="cpu", idempotent=True, check=check_suggest,
                 writes=lambda s: (f"predictions/{s.prediction}",),   # its suggest/ folder; and it reads the rest
                 doc="the lines and regions where a model's prediction is least sure (after a predict)"))
