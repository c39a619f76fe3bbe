"""The TensorBoard viewer process: `python -m daemon.viewers.run_tensorboard --home HOME --port N ...`.

TensorBoard reads one folder of runs. We give it `<home>/viewers/tensorboard-runs/`, a folder of symlinks
`job<id>-<name> -> <home>/jobs/<id>/tensorboard`, refreshed every few seconds by a thread of this process, so training
jobs that start after TensorBoard appear as new runs (TensorBoard rescans its folder every --reload-interval seconds).
A run is named by its job's id and name: the job file's `name`, else the model it writes (`output`); `job<id>` alone
when the job file says neither or cannot be read. With --jobs only those jobs are linked. This process, not the
daemon, does that file work: the daemon's loop stays free of it.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from pathlib import Path

import yaml

from daemon.common.home import jobs_folder, viewers_folder
from daemon.common.lifeline import die_with_parent, ignore_sigint

REFRESH_S = 3.0
_NAMES: dict[Path, str] = {}  # job folder -> run name (a job's file never changes)


def runs_folder(home: Path) -> Path:
    """The folder of job<id>-<name> symlinks that TensorBoard reads."""
    return viewers_folder(home) / "tensorboard-runs"


def refresh_links(home: Path, jobs: list[int] | None) -> list[str]:
    """Make runs_folder hold exactly job<id>-<name> -> jobs/<id>/tensorboard for the wanted jobs that have one."""
    runs = runs_folder(home)
    runs.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {}
    for d in jobs_folder(home).glob("*/tensorboard"):
        if d.parent.name.isdigit() and (jobs is None or int(d.parent.name) in jobs):
            wanted[run_name(d.parent)] = d
    for link in runs.iterdir():
        if link.name not in wanted or not link.is_symlink():
            _remove(link)
    for name, target in wanted.items():
        link = runs / name
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return sorted(wanted)


def run_name(job_folder: Path) -> str:
    """`job<id>-<name>`: the job file's name, else its output (the model a train job writes), made safe for a file
    name; `job<id>` when the job file names neither or cannot be read."""
    if job_folder in _NAMES:
        return _NAMES[job_folder]
    run = f"job{job_folder.name}"
    try:
        doc = yaml.safe_load((job_folder / "job.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return run  # not cached: it may be readable next time
    label = (doc.get("name") or doc.get("output")) if isinstance(doc, dict) else None
    if label:
        run += "-" + re.sub(r"[^\w.-]+", "_", str(label)).strip("_.")[:60]
    _NAMES[job_folder] = run
    return run


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except IsADirectoryError:  # a real folder someone put there: leave it, TensorBoard shows it as a run
        pass
    except FileNotFoundError:
        pass


def _refresh_forever(home: Path, jobs: list[int] | None) -> None:
    while True:
        time.sleep(REFRESH_S)
        try:
            refresh_links(home, jobs)
        except OSError as exc:  # a job folder removed while we looked: try again next round
            sys.stderr.write(f"tensorboard runs refresh: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m daemon.viewers.run_tensorboard")
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", required=True, type=int)
    ap.add_argument("--parent-pid", required=True, type=int)
    ap.add_argument("--jobs", type=int, nargs="*", help="job ids to show (default: every job)")
    a = ap.parse_args(argv)
    die_with_parent(a.parent_pid)
    ignore_sigint()
    jobs = a.jobs or None
    print(f"tensorboard runs: {refresh_links(a.home, jobs) or 'none yet'}", flush=True)
    threading.Thread(target=_refresh_forever, args=(a.home, jobs), name="runs-refresh", daemon=True).start()
    from tensorboard import program  # late: it is slow to import, and the guards above must come first
    tb = program.TensorBoard()
    tb.configure(argv=[sys.argv[0], "--logdir", str(runs_folder(a.home)), "--host", a.host, "--port", str(a.port),
                       "--reload_interval", "5", "--load_fast", "false"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return int(tb.main() or 0)


if __name__ == "__main__":
    sys.exit(main())
