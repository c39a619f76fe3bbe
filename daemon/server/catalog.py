"""The catalogue of things in the home: surveys (surveys/<name>/) and example sets (examples/<name>.h5).

Requests about them are answered on the daemon's loop: they read small metadata files (survey.json, an HDF5
attribute), never volumes. Removing a survey that a queued or running job uses is refused. Listings skip the names
seisd makes for its own work (workers/names.py: a survey being imported, a model being written).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from client.protocol import ErrorCode, ProtocolError
from daemon.common.home import (example_set_file, examples_folder, model_file, models_folder, survey_folder,
                               surveys_folder)
from daemon.kinds.data import name_problem
from workers.names import is_internal


def _checked_name(key: str, name: str) -> str:
    problem = name_problem(key, name)
    if problem:
        raise ProtocolError(ErrorCode.BAD_ARGS, problem)
    return name


def _survey(home: Path, name: str) -> Any:
    from workers.survey import Survey, SurveyError

    folder = survey_folder(home, _checked_name("name", name))
    if not (folder / "survey.json").is_file():
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no survey {name!r} in {surveys_folder(home)}")
    try:
        return Survey.open(folder, sync=False)  # the daemon answers at once; the first job to use it fsyncs
    except SurveyError as exc:
        raise ProtocolError(ErrorCode.INTERNAL, f"survey {name!r} is damaged: {exc}") from None


def survey_summary(s: Any) -> dict[str, Any]:
    from workers.picks import pick_set_names

    return {"name": s.name, "shape": list(s.shape), "volumes": list(s.volumes),
            "inlines": [int(s.inlines[0]), int(s.inlines[-1])],
            "crosslines": [int(s.crosslines[0]), int(s.crosslines[-1])],
            "samples": [float(s.samples[0]), float(s.samples[-1])], "sample_unit": s.geometry.sample_unit,
            "picks": pick_set_names(s.folder)}


def list_surveys(home: Path) -> list[dict[str, Any]]:
    out = []
    for folder in sorted(surveys_folder(home).glob("*/survey.json")):
        if is_internal(folder.parent.name):
            continue
        try:
            out.append(survey_summary(_survey(home, folder.parent.name)))
        except ProtocolError as exc:
            out.append({"name": folder.parent.name, "error": exc.message})
    return out


def survey_info(home: Path, name: str) -> dict[str, Any]:
    s = _survey(home, name)
    info = survey_summary(s)
    info.update(folder=str(s.folder), source=s.source, stats={v: s.stats(v) for v in s.volumes},
                dead_traces=int(s.dead_mask().sum()))
    return info


def remove_survey(home: Path, name: str, users: list[int]) -> dict[str, Any]:
    s = _survey(home, name)
    if users:
        raise ProtocolError(ErrorCode.CONFLICT, f"survey {name!r} is used by queued or running jobs "
                            f"{users}; cancel them first", {"jobs": users})
    shutil.rmtree(s.folder)
    return {"removed": name}


# -- example sets ----------------------------------------------------------------------------------------------

def _example_path(home: Path, name: str) -> Path:
    path = example_set_file(home, _checked_name("name", name))
    if not path.is_file():
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no example set {name!r} in {examples_folder(home)}")
    return path


def _example_json(info: Any, default: str | None) -> dict[str, Any]:
    m = info.meta
    return {"name": info.name, "count": info.count, "locked": info.locked, "default": info.name == default,
            "classes": info.class_counts, "crop": m.get("crop"), "surveys": m.get("surveys"),
            "volumes": m.get("volumes"), "created": m.get("created"), "job": m.get("job_id"),
            "notes": m.get("notes", ""), "file": str(info.path), "broken": False}


def _broken_example_json(broken: Any, default: str | None) -> dict[str, Any]:
    """A listed set that cannot be read: its name, file and the error `examples info` gives; the other keys of a
    listing entry are there, empty, so a client reading them does not fail on it."""
    return {"name": broken.name, "count": None, "locked": False, "default": broken.name == default, "classes": {},
            "crop": None, "surveys": None, "volumes": None, "created": None, "job": None, "notes": "",
            "file": str(broken.path), "broken": True, "error": broken.error}


EXAMPLE_ACTIONS = ("list", "info", "rename", "lock", "unlock", "rm", "default", "note")


def examples_op(home: Path, action: str, name: str | None, value: str | None) -> dict[str, Any]:
    """list, info, rename, lock, unlock, rm, default, note: one entry point so the rules live in one place."""
    from workers import examples as ex

    folder = examples_folder(home)
    if action == "list":
        default = ex.get_default(folder)
        return {"examples": [_broken_example_json(i, default) if isinstance(i, ex.BrokenExampleSet)
                             else _example_json(i, default) for i in ex.list_sets(folder)], "default": default}
    if action not in EXAMPLE_ACTIONS:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"unknown examples action {action!r}; one of "
                            f"{', '.join(EXAMPLE_ACTIONS)}")
    if name is None:
        raise ProtocolError(ErrorCode.BAD_ARGS, f"examples {action} needs a name")
    path = _example_path(home, name)
    try:
        if action == "rename":
            if not value:
                raise ProtocolError(ErrorCode.BAD_ARGS, "examples rename needs the new name as value")
            path = ex.rename(path, _checked_name("value", value))
        elif action in ("lock", "unlock"):
            ex.set_locked(path, action == "lock")
        elif action == "note":
            ex.set_note(path, value or "")
        elif action == "default":
            ex.set_default(folder, name)
        elif action == "rm":
            ex.remove(path)
            return {"removed": name}
        return _example_json(ex.info(path), ex.get_default(folder))
    except ex.ExampleSetError as exc:  # locked, damaged, name taken: the message says which
        raise ProtocolError(ErrorCode.CONFLICT, str(exc)) from None


# -- models ----------------------------------------------------------------------------------------------------

def _model_path(home: Path, name: str) -> Path:
    path = model_file(home, _checked_name("name", name))
    if not path.is_file():
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no model {name!r} in {models_folder(home)}")
    return path


def _model_json(path: Path) -> dict[str, Any]:
    from dataclasses import asdict

    from daemon.kinds.modelinfo import ModelFileError, read_model_info

    try:
        info = asdict(read_model_info(path))
    except ModelFileError as exc:
        return {"name": path.stem, "error": str(exc)}
    info.pop("user_source", None)
    return {"name": path.stem, "architecture": info.pop("name"), "file": str(path),
            "size_bytes": path.stat().st_size, **info}


def list_models(home: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(p for p in models_folder(home).glob("*.h5") if not is_internal(p.name)):
        m = _model_json(path)
        out.append({k: m.get(k) for k in ("name", "architecture", "classes", "input_shape", "in_channels",
                                          "provenance", "error") if k in m})
    return out


def model_info_path(home: Path, name: str) -> Path:
    """The file of a model by name, or not_found."""
    return _model_path(home, name)


def model_info(home: Path, name: str) -> dict[str, Any]:
    info = _model_json(_model_path(home, name))
    if "error" in info:  # a listing shows a damaged file among the others; asked for alone, it is an error
        raise ProtocolError(ErrorCode.CONFLICT, f"model {name!r}: {info['error']}")
    return info


def remove_model(home: Path, name: str, users: list[int]) -> dict[str, Any]:
    path = _model_path(home, name)
    if users:
        raise ProtocolError(ErrorCode.CONFLICT, f"model {name!r} is used by queued or running jobs {users}; "
                            "cancel them first", {"jobs": users})
    path.unlink()
    return {"removed": name}
