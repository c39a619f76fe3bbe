"""Job kind `custom`: a user's Python script or Jupyter notebook, run like any other job.

    kind: custom
    script: /data/work/make_attribute.py      # or  notebook: /data/work/qc.ipynb
    args: [--window, "32"]                    # script: command-line arguments
    parameters: {survey: f3, window: 32}      # notebook: papermill parameters; script: JSON in $SEISJOB_PARAMETERS
    outputs: [attribute.npy]                  # files the job must leave in its outputs folder (checked at the end)

The runner starts the script (or papermill on the notebook) as a child process of the executor, in its own process
group, with the executor's device in CUDA_VISIBLE_DEVICES: so cancel terminates it (and what it started), and a
crash of user code never takes the executor down. Its stdout and stderr go line by line into the job's log (and as
job.log events). The child finds its folders in the environment: SEISJOB_DIR (the job folder), SEISJOB_OUTPUTS
(`outputs/` inside it, also its working directory), SEISJOB_DEVICE (the torch device to use), SEISJOB_PARAMETERS;
it may report progress by writing {"fraction": 0.5, "message": "..."} to $SEISJOB_PROGRESS (a JSON file).
A notebook is executed with papermill and the executed copy saved as `outputs/<name>.ipynb`.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from daemon.jobs.registry import CheckContext, JobKind, JobSpec, register

STOP_GRACE_S = 3.0      # after SIGTERM, how long the child and its descendants get before SIGKILL
POLL_S = 0.2            # how often cancel and the progress file are looked at


class CustomSpec(JobSpec):
    kind: Literal["custom"] = "custom"
    script: str | None = Field(None, description="a Python script to run")
    notebook: str | None = Field(None, description="a Jupyter notebook (.ipynb) to execute with papermill")
    args: list[str] = Field(default_factory=list, description="command-line arguments of the script")
    parameters: dict[str, Any] = Field(default_factory=dict, description="notebook parameters (papermill); for a "
                                       "script, JSON in $SEISJOB_PARAMETERS")
    outputs: list[str] = Field(default_factory=list, description="files the job must leave in outputs/")
    kernel: str = Field("python3", description="the notebook's Jupyter kernel")

    @model_validator(mode="after")
    def _one_source(self) -> "CustomSpec":
        if (self.script is None) == (self.notebook is None):
            raise ValueError("give exactly one of `script:` (a Python file) or `notebook:` (a .ipynb file)")
        if self.notebook is not None and self.args:
            raise ValueError("args: only a script takes command-line arguments; give a notebook `parameters:`")
        return self

    def input_files(self) -> list[tuple[str, str]]:
        return [("script", self.script)] if self.script else [("notebook", self.notebook or "")]


class CustomJobFailed(RuntimeError):
    """The user's script or notebook failed (its exit status and last lines are in the message)."""


def check_custom(spec: CustomSpec, ctx: CheckContext) -> list[str]:
    key, path = spec.input_files()[0]
    problems = []
    if not Path(path).is_absolute():
        problems.append(f"{key}: {path!r} must be an absolute path (the daemon does not know your folder)")
    elif not Path(path).is_file():
        problems.append(f"{key}: no file {path}")
    if spec.notebook is not None:
        if not path.endswith(".ipynb"):
            problems.append(f"notebook: {path} is not a .ipynb file")
        if importlib.util.find_spec("papermill") is None:
            problems.append("notebook: papermill is not installed in the daemon's environment "
                            "(pip install papermill ipykernel)")
    for out in spec.outputs:
        if Path(out).is_absolute() or ".." in Path(out).parts:
            problems.append(f"outputs: {out!r} must be a path inside the job's outputs folder (no '..')")
    return problems


def command(spec: CustomSpec, outputs: Path) -> list[str]:
    """What runs: the script with its arguments, or papermill writing the executed notebook into outputs/."""
    if spec.script is not None:
        return [sys.executable, "-u", spec.script, *spec.args]
    out_nb = outputs / Path(spec.notebook or "").name
    return [sys.executable, "-m", "papermill", spec.notebook or "", str(out_nb), "--kernel", spec.kernel,
            "--cwd", str(outputs), "--log-output", "--no-progress-bar",
            "--parameters_yaml", json.dumps(spec.parameters)]


def run(spec: CustomSpec, ctx: Any) -> dict[str, Any]:
    outputs = ctx.job_dir / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    progress_file = ctx.job_dir / "progress.json"
    env = dict(os.environ, SEISJOB_DIR=str(ctx.job_dir), SEISJOB_OUTPUTS=str(outputs), SEISJOB_DEVICE=ctx.device,
               SEISJOB_PARAMETERS=json.dumps(spec.parameters), SEISJOB_PROGRESS=str(progress_file),
               PYTHONUNBUFFERED="1")
    cmd = command(spec, outputs)
    ctx.log.info("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=str(outputs), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_executor)
    tail: list[str] = []
    reader = threading.Thread(target=_copy_lines, args=(proc, ctx, tail), daemon=True)
    reader.start()
    code = _wait(proc, ctx, progress_file)
    reader.join(timeout=5)
    if code is None:
        ctx.check_cancel()  # raises JobCancelled with the reason
    if code != 0:
        raise CustomJobFailed(f"{'script' if spec.script else 'notebook'} exited with status {code}; last lines:\n"
                              + "\n".join(tail[-10:]))
    missing = [o for o in spec.outputs if not (outputs / o).exists()]
    if missing:
        raise CustomJobFailed(f"outputs: the job did not write {', '.join(missing)} in {outputs}")
    ctx.progress(1.0, "finished")
    files = sorted(str(p.relative_to(outputs)) for p in outputs.rglob("*") if p.is_file())
    result: dict[str, Any] = {"outputs": str(outputs), "files": files[:1000]}
    if spec.notebook:
        result["notebook"] = str(outputs / Path(spec.notebook).name)
    return result


def _wait(proc: subprocess.Popen, ctx: Any, progress_file: Path) -> int | None:
    """Wait for the child, relaying its progress file; on cancel stop it and return None."""
    seen = 0.0
    while True:
        try:
            return proc.wait(POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if ctx.cancelled.is_set():
            ctx.log.info("cancel: stopping the child process %d and what it started", proc.pid)
            stop_tree(proc)
            return None
        seen = _relay_progress(progress_file, ctx, seen)


def _relay_progress(path: Path, ctx: Any, seen: float) -> float:
    try:
        mtime = path.stat().st_mtime
        if mtime == seen:
            return seen
        data = json.loads(path.read_text())
        ctx.progress(float(data.get("fraction", 0.0)), data.get("message"))
        return mtime
    except (OSError, ValueError, TypeError, AttributeError):
        return seen  # absent, or half-written: read it next time


def _copy_lines(proc: subprocess.Popen, ctx: Any, tail: list[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        ctx.log.info("| %s", line)
        tail.append(line)
        del tail[:-50]


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the child and every descendant (a notebook's kernel runs in a session of its own), then SIGKILL
    what is left after STOP_GRACE_S."""
    import psutil

    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=STOP_GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _load_libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not Linux: no PR_SET_PDEATHSIG
        return None


_LIBC = _load_libc()  # loaded here: between fork and exec nothing may import or allocate much


def _die_with_executor() -> None:
    """In the child, before exec: SIGKILL when the executor dies (PR_SET_PDEATHSIG), so no user code outlives it."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)


register(JobKind(name="custom", spec=CustomSpec, runner="daemon.jobs.custom:run", check=check_custom,
                 doc="a user's Python script or Jupyter notebook (papermill), with its log, outputs and cancel"))
