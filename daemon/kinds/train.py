"""The `train` job kind: a model trained on crops around a survey's picks, fed by the shared-memory worker pool.

The job file's schema, whole, is daemon.kinds.train_spec.TrainSpec (torch-free, validated at submit). Here are the
submit-time checks that look at the home (the output, the survey, its picks and volumes, the split), at the machine
(daemon/kinds/limits.py: workers, memory) and at a user model (built in a child process), and the kind's hooks. The
files it names (init_from, a user model) are checked by daemon/kinds/job_files.py like every job's. The runner (in
an executor) is daemon.executor.training.job.run_train_job. docs/train-job.md documents every key.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from daemon.common.home import model_file, picks_file, survey_folder
from daemon.kinds.data import CropSection, name_problem
from daemon.kinds.job_files import job_file
from daemon.kinds.limits import train_memory_problems, worker_problem
from daemon.kinds.model_params import COMMON_PARAMS
from daemon.kinds.registry import CheckContext, JobKind, register
from daemon.kinds.train_spec import DataSection, TrainSpec


def check_train(spec: TrainSpec, ctx: CheckContext) -> list[str]:
    """Every problem of a train job file that its schema cannot see, each naming its key; empty when it can run."""
    problems = [p for p in [name_problem("output", spec.output)] if p]
    if not problems and not spec.overwrite and model_file(ctx.home, spec.output).exists():
        problems.append(f"output: a model {spec.output!r} already exists (give `overwrite: true` to replace it, "
                        f"`output: NEW` to keep both, or remove it: `seisctl models rm {spec.output}`)")
    return problems + _machine_problems(spec, ctx) + _check_data(spec.data, ctx.home)


def _machine_problems(spec: TrainSpec, ctx: CheckContext) -> list[str]:
    """Worker processes and memory the job asks for, against what this machine has (daemon/kinds/limits.py)."""
    d, ranks = spec.data, spec.train.distributed.world_size
    workers = ctx.default_workers if d.workers is None else d.workers
    problem = worker_problem(workers, ranks)
    if problem and d.workers is None:
        problem += " (data.workers not given: the daemon's setting workers.default_count)"
    return ([problem] if problem else []) + train_memory_problems(d, workers)


def check_user_model_file(spec: TrainSpec, ctx: CheckContext) -> list[str]:
    """A user model is built and run once on zeros in a child process (seconds: a slow check, off the loop)."""
    if spec.model.name != "user":
        return []
    from daemon.kinds.user_model_check import check_user_model

    d = spec.data
    with np.load(picks_file(ctx.home, d.survey, d.picks)) as z:
        n_classes = max(len(z["class_names"]), 2)
    params = {k: v for k, v in spec.model.params.items() if k != "path" and k not in COMMON_PARAMS}  # seisd's keys
    path, problem = job_file(ctx, "model.params.path", spec.model.params["path"])
    if path is None:  # validate_job refused it before; kept for a caller that did not
        return [problem or ""]
    return [f"model.params.path: {p}" for p in
            check_user_model(path, d.channels, n_classes, list(d.crop.size), params)]


def gpu_ranks(spec: TrainSpec) -> int:
    """The kind's `slots` hook: a data-parallel job's ranks each want a GPU slot of their own."""
    return spec.train.distributed.world_size


def _check_data(d: DataSection, home: Path) -> list[str]:
    """Problems with the survey, pick set, volumes, crop and split."""
    if (p := name_problem("data.survey", d.survey)):
        return [p]
    folder = survey_folder(home, d.survey)
    if not (folder / "survey.json").is_file():
        return [f"data.survey: no survey {d.survey!r} in this home (import it: seisctl survey import FILE.sgy "
                f"--name {d.survey})"]
    doc = json.loads((folder / "survey.json").read_text())
    problems = [f"data.volumes: survey {d.survey!r} has no volume {v!r} (it has {', '.join(doc['volumes'])})"
                for v in d.volumes if v not in doc.get("volumes", {})]
    shape = _survey_shape(doc)
    axes = {"inline": (1, 2), "crossline": (0, 2), "time": (0, 1), "3d": (0, 1, 2)}[d.crop.orientation]
    if shape and any(n > shape[a] for n, a in zip(d.crop.size, axes)):
        problems.append(f"data.crop.size: {list(d.crop.size)} does not fit the survey's "
                        f"{[shape[a] for a in axes]} along the {d.crop.orientation} crop's axes")
    picks = picks_file(home, d.survey, d.picks)
    if not picks.is_file():
        problems.append(f"data.picks: survey {d.survey!r} has no pick set {d.picks!r} (seisctl picks import "
                        f"{d.survey} FILES --set {d.picks})")
        return problems
    with np.load(picks) as z:
        cls, names = z["cls"], [str(n) for n in z["class_names"]]
        points = np.stack([z["i"], z["x"], z["s"]], axis=1)
    present = np.unique(cls)
    if len(present) < 2:
        problems.append(f"data.picks: pick set {d.picks!r} has points of {len(present)} class"
                        f"{'' if len(present) == 1 else 'es'} ({', '.join(names[int(c)] for c in present)}); "
                        "training needs at least two")
    return problems + _split_problems(d, points)


def _split_problems(d: DataSection, points: np.ndarray) -> list[str]:
    """Try the split at submit (numpy only, fast) so a split that leaves no training points is refused here."""
    from workers.crops import CropSpec
    from workers.split import SplitError

    try:
        split_picks(points, d, CropSpec(tuple(d.crop.size), d.crop.orientation))
    except SplitError as exc:
        return [f"data.split: {exc}"]
    return []


def _survey_shape(doc: dict[str, Any]) -> tuple[int, int, int] | None:
    try:
        from workers.survey import Geometry

        return Geometry.from_json(doc).shape
    except (KeyError, TypeError, ValueError):
        return None


def default_gap(crop: CropSection) -> int:
    """Half the crop's extent in the inline-crossline plane: no training crop then covers a validation point."""
    lateral = {"inline": crop.size[:1], "crossline": crop.size[:1], "time": crop.size, "3d": crop.size[:2]}
    return max(lateral[crop.orientation]) // 2


def split_picks(points: np.ndarray, d: Any, crop: Any) -> Any:
    """The job's split of pick points: blocked (default) or random."""
    from workers.split import block_split, random_split

    s = d.split
    if s.kind == "random":
        return random_split(points, s.val_fraction, s.seed)
    gap = default_gap(crop) if s.gap is None else s.gap
    return block_split(points, s.block, gap, s.val_fraction, s.seed)


register(JobKind(name="train", spec=TrainSpec, runner="daemon.executor.training.job:run_train_job", resumable=True,
                 check=check_train, slow_check=check_user_model_file, slots=gpu_ranks,
                 doc="train a model on crops around picks (new, resume, transfer)"))
