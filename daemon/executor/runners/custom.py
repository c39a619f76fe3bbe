"""Runner of the `custom` kind (executor side): the user's script, or papermill on the notebook, as a child process.

The spec, its check and what the child sees are described in daemon/kinds/custom.py.

NOTE on what a job starts ending with it. The child runs in a session of its own, dies with this executor
(PR_SET_PDEATHSIG), and where cgroups may be made it and all it starts live in the job's cgroup
(daemon/common/jobcgroup.py); it also carries the job's run marker (SEISD_OWNER_RUN, daemon/common/orphans.py) and,
as everything seisd starts, the home's marker. When the child ends, however it ends, whatever it left running (a
grandchild in a session of its own, a server it daemonised) is ended through the run marker and the cgroup; when
this executor is killed instead, the daemon's sweep does it (by the home's marker and the leftover cgroup).
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from daemon.common.jobcgroup import JobCgroup
from daemon.common.orphans import kill_run, owner_tag, run_marker
from daemon.common.home import resolve
from daemon.kinds.custom import CustomSpec
from workers.regular_files import UnreadableFile, check_regular, read_regular

STOP_GRACE_S = 3.0      # after SIGTERM, how long the child and its descendants get before SIGKILL
POLL_S = 0.2            # how often cancel and the progress file are looked at


class CustomJobFailed(RuntimeError):
    """The user's script or notebook failed (its exit status and last lines are in the message)."""


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
    marker = run_marker()
    env = dict(os.environ, SEISJOB_DIR=str(ctx.job_dir), SEISJOB_OUTPUTS=str(outputs), SEISJOB_DEVICE=ctx.device,
               SEISJOB_PARAMETERS=json.dumps(spec.parameters), SEISJOB_PROGRESS=str(progress_file),
               PYTHONUNBUFFERED="1", **marker)
    spec = _with_checked_file(spec, ctx.home)
    cmd = command(spec, outputs)
    ctx.log.info("running %s", " ".join(cmd))
    cgroup = JobCgroup.create(owner_tag(ctx.home), ctx.job_id)
    tail: list[str] = []
    reader: threading.Thread | None = None
    try:
        proc = subprocess.Popen(cmd, cwd=str(outputs), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: _in_child(cgroup))
        reader = threading.Thread(target=_copy_lines, args=(proc, ctx, tail), daemon=True)
        reader.start()
        code = _wait(proc, ctx, progress_file)
    finally:
        _end_the_rest(ctx, marker, cgroup)  # first: what it left may hold its output pipe open
        if reader is not None:
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


def _with_checked_file(spec: CustomSpec, home: Path) -> CustomSpec:
    """The spec naming its script or notebook as the submit check resolved it (a relative path starts at the home;
    the child runs in outputs/), refused if a FIFO or a device took the file's place since (it would block)."""
    key, path = spec.input_files()[0]
    file = resolve(home, path)
    try:
        check_regular(file)
    except UnreadableFile as exc:
        raise CustomJobFailed(f"{key}: {exc}") from None
    return spec.model_copy(update={key: str(file)})


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
        data = json.loads(read_regular(path))  # the script writes it: a FIFO there must not block the job
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


def _end_the_rest(ctx: Any, marker: dict[str, str], cgroup: JobCgroup | None) -> None:
    """What the child left running ends with the job: by its run marker, then by its cgroup (for what cleared its
    environment)."""
    left = [str(o) for o in kill_run(marker, STOP_GRACE_S)]
    if cgroup is not None:
        left += [f"{pid} (in the job's cgroup)" for pid in cgroup.kill()]
    if left:
        ctx.log.info("stopped %d process(es) the job left running: %s", len(left), ", ".join(left))


def _load_libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # not Linux: no PR_SET_PDEATHSIG
        return None


_LIBC = _load_libc()  # loaded here: between fork and exec nothing may import or allocate much


def _in_child(cgroup: JobCgroup | None) -> None:
    """In the child, before exec: SIGKILL when the executor dies (PR_SET_PDEATHSIG), and into the job's cgroup."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)
    if cgroup is not None:
        cgroup.join()
