"""The predictions in the home (predictions/<name>/), for `predictions.list`, `predictions.info`, `predictions.rm`.

A prediction is a folder a predict job writes: its outputs (SEG-Y, HDF5), summary.json once the job finished,
arrays/ while it runs (kept with keep_arrays), and whatever else the job leaves there (figures). It is read as a
folder, whatever it holds: the files are listed as they are, and what summary.json says is added when it is there.
Which job made it comes from the job store (the newest predict job whose `output` is its name), so a folder whose
job was never finished, or whose summary is damaged, is still listed, and can be removed.

Answered on the daemon's loop: a listing reads each folder's summary.json (a page of JSON) and stats its files.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from client.protocol import ErrorCode, ProtocolError
from daemon.common.home import prediction_folder, predictions_folder
from daemon.kinds.data import name_problem
from daemon.server.store import JobRow

MAX_FILES = 1000  # listed per prediction: a folder of more is summarised by its count and size
UNFINISHED = ["queued", "running", "interrupted"]


class PredictJobs(Protocol):
    """What this module reads of the job store (store.JobStore)."""

    def list(self, states: list[str] | None = None, kind: str | None = None, limit: int = 100) -> list[JobRow]: ...


def _jobs_by_output(jobs: PredictJobs, states: list[str] | None = None) -> dict[str, list[JobRow]]:
    """Predict jobs by the prediction they write, newest first."""
    out: dict[str, list[JobRow]] = {}
    for job in jobs.list(states=states, kind="predict", limit=100_000):
        output = job.spec.get("output")
        if isinstance(output, str):
            out.setdefault(output, []).append(job)
    return out


def _folder(home: Path, name: str) -> Path:
    problem = name_problem("name", name)
    if problem:
        raise ProtocolError(ErrorCode.BAD_ARGS, problem)
    folder = prediction_folder(home, name)
    if not folder.is_dir():
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no prediction {name!r} in {predictions_folder(home)} "
                            "(`seisctl predictions list`)")
    return folder


def _files(folder: Path) -> tuple[list[dict[str, Any]], int, int]:
    """(up to MAX_FILES files as {path relative to the folder, size_bytes}, how many there are, their bytes)."""
    listed, count, size = [], 0, 0
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        n = path.stat().st_size
        count, size = count + 1, size + n
        if len(listed) < MAX_FILES:
            listed.append({"path": str(path.relative_to(folder)), "size_bytes": n})
    return listed, count, size


def _summary_file(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """summary.json as written when the job finished: (its content, None), (None, None) when absent, or
    (None, why) when it cannot be read."""
    path = folder / "summary.json"
    if not path.is_file():
        return None, None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"summary.json cannot be read: {exc}"
    return (doc, None) if isinstance(doc, dict) else (None, "summary.json is not a JSON object")


def _describe(folder: Path, jobs: list[JobRow]) -> dict[str, Any]:
    summary, problem = _summary_file(folder)
    spec = jobs[0].spec if jobs else {}
    files, count, size = _files(folder)
    entry = {"name": folder.name, "folder": str(folder),
             "model": (summary or {}).get("model", spec.get("model")),
             "survey": (summary or {}).get("survey", spec.get("survey")),
             "job": jobs[0].id if jobs else None, "job_state": jobs[0].state if jobs else None,
             "complete": summary is not None, "modified": folder.stat().st_mtime,
             "file_count": count, "size_bytes": size, "files": files}
    if problem:
        entry["error"] = problem
    return entry | {"summary": summary}


def list_predictions(home: Path, jobs: PredictJobs) -> dict[str, Any]:
    by_output = _jobs_by_output(jobs)
    out = []
    for folder in sorted(p for p in predictions_folder(home).glob("*") if p.is_dir() and not p.name.startswith(".")):
        entry = _describe(folder, by_output.get(folder.name, []))
        out.append({k: v for k, v in entry.items() if k not in ("files", "summary")})
    return {"predictions": out}


def prediction_info(home: Path, jobs: PredictJobs, name: str) -> dict[str, Any]:
    folder = _folder(home, name)
    entry = _describe(folder, _jobs_by_output(jobs).get(name, []))
    entry["jobs"] = [j.id for j in _jobs_by_output(jobs).get(name, [])]
    return entry


def remove_prediction(home: Path, jobs: PredictJobs, name: str) -> dict[str, Any]:
    folder = _folder(home, name)
    writers = [j.id for j in _jobs_by_output(jobs, UNFINISHED).get(name, [])]
    if writers:
        raise ProtocolError(ErrorCode.CONFLICT, f"prediction {name!r} is written by queued or running jobs "
                            f"{', '.join(map(str, writers))}; cancel them first", {"jobs": writers})
    # rename first, so a removal cut short leaves no half folder under the prediction's name
    doomed = folder.with_name(f".removing-{name}-{time.time_ns()}")
    folder.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)
    return {"removed": name}
