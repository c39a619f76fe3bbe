"""The `train` job kind: a model trained on example sets or on crops around a survey's picks, fed by the
shared-memory worker pool.

The job file's schema, whole, is daemon.kinds.train_spec.TrainSpec (torch-free, validated at submit). Here are the
submit-time checks that look at the home (the output, the survey, its picks and volumes, the split; example sets:
daemon/kinds/train_sets.py), at the machine
(daemon/kinds/limits.py: workers, memory) and at a user model (built in a child process), and the kind's hooks. The
files it names (init_from, a user model) are checked by daemon/kinds/job_files.py like every job's. The runner (in
an executor) is daemon.executor.training.job.run_train_job. docs/train-job.md documents every key.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from daemon.common.home import model_file, picks_file, survey_folder
from daemon.kinds.data import crop_problem, name_problem, pick_set_problem
from daemon.kinds.job_files import job_file
from daemon.kinds.limits import train_memory_problems, worker_problem
from daemon.kinds.model_params import COMMON_PARAMS
from daemon.kinds.registry import CheckContext, JobKind, register
from daemon.kinds.train_spec import DataSection, TrainSpec
from daemon.kinds.train_split import default_gap, split_by_source, split_picks  # noqa: F401 (their home before)


def check_train(spec: TrainSpec, ctx: CheckContext) -> list[str]:
    """Every problem of a train job file that its schema cannot see, each naming its key; empty when it can run."""
    problems = [p for p in [name_problem("output", spec.output)] if p]
    if not problems and not spec.overwrite and model_file(ctx.home, spec.output).exists():
        problems.append(f"output: a model {spec.output!r} already exists (give `overwrite: true` to replace it, "
                        f"`output: NEW` to keep both, or remove it: `seisctl models rm {spec.output}`)")
    if spec.data.from_sets:
        from daemon.kinds.train_sets import set_problems

        return problems + _machine_problems(spec, ctx) + set_problems(spec.data, ctx.home, spec.model.name)
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
    if d.from_sets:
        from daemon.kinds.train_sets import set_classes

        n_classes = max(len(set_classes(d, ctx.home)), 2)
    else:
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
    if (p := crop_problem("data.crop.size", d.crop, doc, d.survey)):
        problems.append(p)
    if (p := name_problem("data.picks", d.picks)):
        return [*problems, p]
    if (p := pick_set_problem("data.picks", home, d.survey, d.picks)):
        return [*problems, f"{p}: seisctl picks import {d.survey} FILES --set {d.picks}"]
    picks = picks_file(home, d.survey, d.picks)
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


register(JobKind(name="train", spec=TrainSpec, runner="daemon.executor.training.job:run_train_job", resumable=True,
                 check=check_train, slow_check=check_user_model_file, slots=gpu_ranks,
                 writes=lambda s: (f"models/{s.output}",),
                 doc="train a model on crops around picks (new, resume, transfer)"))
