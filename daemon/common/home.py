"""The layout of a daemon's home: the one module that knows where each thing lives in it.

    seisd.db                SQLite: jobs, their state history, viewers, catalogue
    seisd.lock              held by the running daemon; holds its pid
    logs/                   seisd.log (the daemon's), executor-<slot>.log
    keys/                   CURVE keys of executors on other machines
    viewers/                viewers' working files
    surveys/<name>/         a survey (its inside: workers/survey.py, pick sets: workers/picks.py)
    examples/<name>.h5      example sets
    models/<name>.h5        model files
    predictions/<name>/     outputs of predict jobs
    jobs/<id>/              a job's folder: job.yaml, log, checkpoints/, summary.h5, tensorboard/ ...

The home travels as a Path (a job's ctx.home, CheckContext.home, the daemon's home); these functions take it first.
Names are used as given: the callers check them (daemon.kinds.data.name_problem) where they come from outside.
Beside the objects above, seisd writes only names that start with a dot (workers/names.py: work_path), which no
user's name may start with: a survey being imported is `surveys/.<name>.partial`, a model being written
`models/.<name>.h5.tmp`.
"""
from __future__ import annotations

from pathlib import Path

FOLDERS = ("jobs", "logs", "surveys", "examples", "models", "keys")  # made when the daemon starts


def make_folders(home: Path) -> None:
    """Create the home and the folders every daemon has."""
    for sub in FOLDERS:
        (home / sub).mkdir(parents=True, exist_ok=True)


def database(home: Path) -> Path:
    return home / "seisd.db"


def lock_file(home: Path) -> Path:
    return home / "seisd.lock"


def logs_folder(home: Path) -> Path:
    return home / "logs"


def daemon_log(home: Path) -> Path:
    return logs_folder(home) / "seisd.log"


def keys_folder(home: Path) -> Path:
    return home / "keys"


def viewers_folder(home: Path) -> Path:
    return home / "viewers"


def surveys_folder(home: Path) -> Path:
    return home / "surveys"


def survey_folder(home: Path, name: str) -> Path:
    return surveys_folder(home) / name


def picks_file(home: Path, survey: str, name: str) -> Path:
    """A survey's pick set, where workers.picks keeps it (surveys/<survey>/picks/<name>.npz)."""
    from workers.picks import pick_set_file

    return pick_set_file(survey_folder(home, survey), name)


def examples_folder(home: Path) -> Path:
    return home / "examples"


def example_set_file(home: Path, name: str) -> Path:
    return examples_folder(home) / f"{name}.h5"


def models_folder(home: Path) -> Path:
    return home / "models"


def model_file(home: Path, name: str) -> Path:
    return models_folder(home) / f"{name}.h5"


def predictions_folder(home: Path) -> Path:
    return home / "predictions"


def prediction_folder(home: Path, name: str) -> Path:
    return predictions_folder(home) / name


def jobs_folder(home: Path) -> Path:
    return home / "jobs"


def job_folder(home: Path, job_id: int) -> Path:
    return jobs_folder(home) / str(job_id)


def resolve(home: Path, path: str) -> Path:
    """A path of a job file (train.init_from, a script ...): relative ones start at the home (models/old.h5,
    jobs/7/...). Whether a client may name it was decided at submit (daemon/kinds/job_files.py)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else home / p
