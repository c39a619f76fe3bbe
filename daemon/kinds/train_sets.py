"""A train job's example sets (data.examples, or the examples folder's default set): which, and whether they fit.

Torch-free: the submit check runs it in the daemon's main process; the executor calls `job_sets` again to open the
same sets (daemon/executor/training/set_data.py). Sets are read through workers.example_index.read_sets, so a set
with another crop or channel count is refused with the same words at submit and at run time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.common.home import example_set_file, examples_folder
from daemon.kinds.train_spec import DataSection


class NoTrainingData(ValueError):
    """The job names no survey and no sets, and the examples folder has no default set."""


def job_sets(d: DataSection, home: Path) -> list[tuple[str, Path]]:
    """(name, path) of the job's sets: data.examples, else the default set; NoTrainingData names what to do."""
    from workers.examples import ExampleSetError, get_default

    names = d.examples
    if names is None:
        try:
            default = get_default(examples_folder(home))
        except ExampleSetError as exc:
            raise NoTrainingData(f"data: {exc}") from None
        if default is None:
            raise NoTrainingData("data: the job names no data.survey and no data.examples, and the examples folder "
                                 "has no default set; give data.examples: [SET, ...], or data.survey (+ data.picks), "
                                 "or choose a default set: seisctl examples default NAME")
        names = [default]
    return [(n, example_set_file(home, n)) for n in names]


def set_problems(d: DataSection, home: Path, model: str) -> list[str]:
    """Every problem of the job's sets, each naming its key; empty when they can feed the job."""
    from workers.crops import CropSpec
    from workers.example_index import read_sets
    from workers.examples import ExampleSetError
    from workers.split import SplitError

    from daemon.kinds.data import name_problem

    bad = [p for k, n in enumerate(d.examples or []) if (p := name_problem(f"data.examples.{k}", n))]
    if bad:
        return bad  # an invalid name never reaches the file system
    try:
        sets = job_sets(d, home)
    except NoTrainingData as exc:
        return [str(exc)]
    key = "data.examples" if d.examples is not None else "data (the default example set)"
    missing = [n for n, p in sets if not p.is_file()]
    if missing:
        return [f"{key}: no example set {n!r} in this home (seisctl examples list; make one with seisctl examples "
                f"extract)" for n in missing]
    problems = []
    if d.context:
        problems.append("data.context: example sets hold their crops as cut, without context slices; use context: 0")
    crop = CropSpec(tuple(d.crop.size), d.crop.orientation)
    try:
        index = read_sets(sets, crop, len(d.volumes))
    except ExampleSetError as exc:
        return problems + [f"{key}: {exc}"]
    if needs_sections(d):
        for s in index.surveys:
            if (why := section_problem(home, s["name"], d.volumes)):
                problems.append(f"data.augment.p_swap: an example set holds {d.crop.orientation} sections only; the "
                                f"inline/crossline swap cuts the other section from the source survey, and {why} "
                                "(use p_swap: 0, or import the survey again)")
    if len(set(index.labels.tolist())) < 2:
        problems.append(f"{key}: the set(s) hold examples of {len(set(index.labels.tolist()))} class; training "
                        "needs at least two")
    if model == "unet" and (index.positions < 0).any():
        problems.append(f"{key}: a segmentation model learns from the picks each crop covers, which needs the "
                        "examples' grid positions; a set imported from OpendTect has none")
    from daemon.kinds.train_split import split_by_source

    try:
        split_by_source(index.positions, index.survey_of, [s["name"] for s in index.surveys], d, crop)
    except SplitError as exc:
        problems.append(f"data.split: {exc}")
    return problems


def needs_sections(d: DataSection) -> bool:
    """The swap of a vertical crop cuts the other section from the source surveys (workers.example_batches)."""
    return d.crop.orientation in ("inline", "crossline") and d.augment.p_swap > 0


def section_problem(home: Path, survey: str, volumes: list[str]) -> str | None:
    """Why survey ``survey`` cannot give its sections (not in this home, or lacks a volume), or None."""
    import json

    from daemon.common.home import survey_folder

    doc = survey_folder(home, survey) / "survey.json"
    if not survey or not doc.is_file():
        return f"survey {survey!r} is not in this home"
    missing = [v for v in volumes if v not in json.loads(doc.read_text()).get("volumes", {})]
    return f"survey {survey!r} has no volume {missing[0]!r}" if missing else None


def set_classes(d: DataSection, home: Path) -> list[str]:
    """The job's class list: the union of its sets' classes, as read_sets makes it, from the sets' headers alone
    (not their examples' arrays, which the job reads once, in set_data)."""
    from workers.examples import class_union, info

    return class_union([list(info(path).meta["class_names"]) for _, path in job_sets(d, home)])[0]


def describe(index: Any) -> dict[str, Any]:
    """A short account of the sets for the job's log."""
    return {"sets": index.names, "surveys": [s["name"] for s in index.surveys], "examples": int(len(index.labels)),
            "classes": index.classes}
