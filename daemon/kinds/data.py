"""Job kinds for seismic data: `import` (a SEG-Y into a survey, or picks into a survey) and `extract` (example sets).

The specs are checked at submit in the daemon (files exist, names are safe, surveys exist); the runners execute in
an executor and call the library in workers/ (segy_import, picks, examples). workers/ is imported inside the runners
so the daemon's main process stays light.
"""
from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from daemon.common.home import picks_file, survey_folder
from daemon.kinds.registry import CheckContext, JobKind, JobSpec, register
from daemon.kinds.schema import Section
from workers.names import name_error
from workers.picks import pick_set_names

DEFAULT_VOLUME = "seismic"  # the volume a SEG-Y import makes, and the one a job reads unless told
DEFAULT_PICKS = "default"   # the pick set a picks import makes, and the one a job reads unless told

# workers/names.py's rule, for the job files' JSON Schema
NAME = {"pattern": r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"}


def name_problem(key: str, name: str) -> str | None:
    """Names of surveys, volumes, pick sets, example sets, models and predictions become file names: the rule of
    workers/names.py (a letter or digit first, so no name is ever one of seisd's own temporary names)."""
    why = name_error(name)
    return f"{key}: {why}" if why else None


def pick_set_problem(key: str, home: Any, survey: str, name: str) -> str | None:
    """`key: survey S has no pick set N (it has ...)` when the survey lacks that pick set, else None."""
    if picks_file(home, survey, name).is_file():
        return None
    have = pick_set_names(survey_folder(home, survey))
    return f"{key}: survey {survey!r} has no pick set {name!r} (it has {', '.join(have) or 'none'})"


class SegySection(Section):
    file: str = Field(description="path of the post-stack 3D SEG-Y file")
    volume: str = Field(DEFAULT_VOLUME, description="name of the volume (attribute) in the survey",
                        json_schema_extra=NAME)
    add_volume: bool = Field(False, description="add the volume to an existing survey with the same grid")
    iline: int = Field(189, ge=1, le=237, description="byte position of the inline number in trace headers")
    xline: int = Field(193, ge=1, le=237, description="byte position of the crossline number")
    endian: Literal["auto", "big", "little"] = "auto"
    sample_unit: Literal["ms", "s", "m"] = "ms"
    offset: int | None = Field(None, description="for a pre-stack file: the one offset to import")


class PicksSection(Section):
    files: list[str] = Field(min_length=1, description="point files (inline, crossline, z, ...)")
    set: str = Field(DEFAULT_PICKS, description="name of the pick set in the survey", json_schema_extra=NAME)
    class_pattern: str = Field(r"multi_(?P<name>.+)_ilxl", description="regular expression with a (?P<name>...) "
                               "group taking the class name from each file name")
    class_column: int | None = Field(None, ge=0, description="0-based column of integer class ids, instead of "
                                     "one file per class")
    z_unit: Literal["ms", "s", "sample", "auto"] = "auto"
    drop_outside: bool = Field(False, description="drop points outside the survey instead of refusing the files")
    add: bool = Field(False, description="add the points to the existing pick set `set` (its points are kept; a "
                      "position picked again takes the new class) instead of replacing it")


class ImportSpec(JobSpec):
    model_config = ConfigDict(json_schema_extra={"oneOf": [  # _one_source
        {"required": ["segy"], "properties": {"segy": {"type": "object"}}},
        {"required": ["picks"], "properties": {"picks": {"type": "object"}}}]})

    kind: Literal["import"] = "import"
    survey: str = Field(description="survey name in the home", json_schema_extra=NAME)
    segy: SegySection | None = None
    picks: PicksSection | None = None

    def input_files(self) -> list[tuple[str, str]]:
        if self.segy is not None:
            return [("segy.file", self.segy.file)]
        return [(f"picks.files.{k}", f) for k, f in enumerate(self.picks.files if self.picks else [])]

    @model_validator(mode="after")
    def _one_source(self) -> "ImportSpec":
        if (self.segy is None) == (self.picks is None):
            raise ValueError("give exactly one of `segy:` (a SEG-Y file) or `picks:` (point files)")
        return self

    def default_name(self) -> str:
        return self.survey


def check_import(spec: ImportSpec, ctx: CheckContext) -> list[str]:
    problems = [p for p in [name_problem("survey", spec.survey)] if p]
    # an invalid name never reaches the file system (one past NAME_MAX would raise there, not answer)
    folder = survey_folder(ctx.home, spec.survey) if not problems else None
    if spec.segy is not None:  # the files themselves: daemon/kinds/job_files.py
        if (p := name_problem("segy.volume", spec.segy.volume)):
            problems.append(p)
        if folder is not None and spec.segy.add_volume and not (folder / "survey.json").is_file():
            problems.append(f"survey: no survey {spec.survey!r} to add a volume to")
        if folder is not None and not spec.segy.add_volume and folder.exists():
            problems.append(f"survey: a survey {spec.survey!r} already exists (give `segy.add_volume: true` to add "
                            f"this volume to it, `survey: NEW` for a new survey, or remove it: `seisctl survey rm "
                            f"{spec.survey}`)")
    if spec.picks is not None:
        if folder is not None and not (folder / "survey.json").is_file():
            problems.append(f"survey: no survey {spec.survey!r}; import its SEG-Y first")
        if (p := name_problem("picks.set", spec.picks.set)):
            problems.append(p)
        elif spec.picks.add and folder is not None and (folder / "survey.json").is_file() and \
                not picks_file(ctx.home, spec.survey, spec.picks.set).is_file():
            problems.append(f"picks.add: survey {spec.survey!r} has no pick set {spec.picks.set!r} to add to (leave "
                            "`add` out to make it)")
        try:
            if "(?P<name>" not in spec.picks.class_pattern and spec.picks.class_column is None:
                problems.append("picks.class_pattern: needs a (?P<name>...) group, or give picks.class_column")
            re.compile(spec.picks.class_pattern)
        except re.error as exc:
            problems.append(f"picks.class_pattern: not a regular expression ({exc})")
    return problems


class PickSource(Section):
    """Picks and volumes of a survey in the home, as a job reads them."""

    survey: str = Field(description="survey name in the home (seisctl survey import ... --name NAME)",
                        json_schema_extra=NAME)
    picks: str = Field(DEFAULT_PICKS, description="pick set of the survey", json_schema_extra=NAME)
    volumes: list[str] = Field(default_factory=lambda: [DEFAULT_VOLUME], min_length=1,
                               description="volumes stacked as input channels")


class CropSection(Section):
    model_config = ConfigDict(json_schema_extra={"allOf": [  # _fits
        {"properties": {"size": {"items": {"minimum": 1, "maximum": 1024}}}},
        {"if": {"properties": {"orientation": {"const": "3d"}}, "required": ["orientation"]},
         "then": {"properties": {"size": {"minItems": 3}}}, "else": {"properties": {"size": {"maxItems": 2}}}}]})

    size: list[int] = Field(min_length=2, max_length=3, description="[a, b] for 2D crops, [a, b, c] for 3D")
    orientation: Literal["inline", "crossline", "time", "3d"] = "inline"

    @model_validator(mode="after")
    def _fits(self) -> "CropSection":
        if any(n < 1 or n > 1024 for n in self.size):
            raise ValueError("every crop size must be between 1 and 1024")
        if (len(self.size) == 3) != (self.orientation == "3d"):
            raise ValueError("3 sizes go with orientation 3d, 2 sizes with inline, crossline or time")
        return self


class ExtractSpec(JobSpec):
    kind: Literal["extract"] = "extract"
    examples: str = Field(description="name of the example set to write (examples/<name>.h5)",
                          json_schema_extra=NAME)
    sources: list[PickSource] = Field(min_length=1)
    crop: CropSection
    notes: str = ""

    def default_name(self) -> str:
        return self.examples


def crop_problem(key: str, crop: CropSection, doc: dict[str, Any], survey: str) -> str | None:
    """The one crop rule (workers.crops.crop_fit_problem) against a survey.json document, as `key: message`."""
    from workers.crops import CropSpec, crop_fit_problem
    from workers.survey import Geometry

    try:
        shape = Geometry.from_json(doc).shape
    except (KeyError, TypeError, ValueError):
        return None  # a damaged survey.json is refused by the checks that open the survey
    problem = crop_fit_problem(CropSpec(tuple(crop.size), crop.orientation), shape, survey)
    return f"{key}: {problem}" if problem else None


def check_extract(spec: ExtractSpec, ctx: CheckContext) -> list[str]:
    problems = [p for p in [name_problem("examples", spec.examples)] if p]
    for k, src in enumerate(spec.sources):
        folder = survey_folder(ctx.home, src.survey)
        if (p := name_problem(f"sources.{k}.survey", src.survey)):
            problems.append(p)
            continue
        if not (folder / "survey.json").is_file():
            problems.append(f"sources.{k}.survey: no survey {src.survey!r}")
            continue
        if (p := name_problem(f"sources.{k}.picks", src.picks)):
            problems.append(p)
        elif (p := pick_set_problem(f"sources.{k}.picks", ctx.home, src.survey, src.picks)):
            problems.append(p)
        have = json.loads((folder / "survey.json").read_text()).get("volumes", {})
        for v in src.volumes:
            if v not in have:
                problems.append(f"sources.{k}.volumes: survey {src.survey!r} has no volume {v!r} "
                                f"(it has {', '.join(have)})")
        if (p := crop_problem("crop.size", spec.crop, json.loads((folder / "survey.json").read_text()),
                              src.survey)):
            problems.append(p)
    if len({len(s.volumes) for s in spec.sources}) > 1:
        problems.append("sources: every source needs the same number of volumes (they become channels)")
    return problems


register(JobKind(name="import", spec=ImportSpec, runner="daemon.executor.runners.data:run_import", devices="cpu",
                 idempotent=True, check=check_import, writes=lambda s: (f"surveys/{s.survey}",),
                 doc="SEG-Y into a survey, or picks into a survey"))
register(JobKind(name="extract", spec=ExtractSpec, runner="daemon.executor.runners.data:run_extract", devices="cpu",
                 idempotent=True, check=check_extract, writes=lambda s: (f"examples/{s.examples}",),
                 doc="crops around picks into an example set"))
