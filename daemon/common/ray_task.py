"""The Ray task that runs one executor: it lives in a Ray worker process on whichever node Ray chose.

Kept apart from ray_backend.py so the worker imports nothing of the daemon's side. The executor runs as a child of
the Ray worker and asks for SIGKILL when that worker dies (PR_SET_PDEATHSIG, daemon/executor/process.py), so a
`ray.cancel(force=True)`, a crashed worker or a lost node ends the executor and its job's data workers with it.
"""
from __future__ import annotations

import os
import subprocess
import sys

ADDRESS_ENV = "SEISJOB_RAY_ADDRESS"   # set for executors that the Ray backend started: the cluster they run on
CPUS_ENV = "SEISJOB_RAY_CPUS"         # the CPUs and GPUs each further task of the job (ranks, shards) asks for
GPUS_ENV = "SEISJOB_RAY_GPUS"


def run_executor(arguments: list[str], env: dict[str, str], log_path: str, cwd: str) -> int:
    """Start `python -m daemon.executor ARGUMENTS --parent-pid <this worker>` and return its exit status.

    `env` overrides the worker's environment (seisd settings, PYTHONPATH, the resources SEISJOB_RAY_CPUS and
    SEISJOB_RAY_GPUS of further tasks); RAY_ADDRESS and SEISJOB_RAY_ADDRESS name this task's cluster;
    CUDA_VISIBLE_DEVICES is the one Ray set for the GPUs it gave this task, or empty when it gave none (so torch
    cannot take a GPU it was not given)."""
    import ray

    full = dict(os.environ, **env)
    # the executor may submit Ray tasks of its own (a predict job's shards, a train job's ranks): to this cluster
    full["RAY_ADDRESS"] = full[ADDRESS_ENV] = ray.get_runtime_context().gcs_address
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        full["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "daemon.executor", *arguments, "--parent-pid", str(os.getpid())]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full,
                                cwd=cwd if os.path.isdir(cwd) else None)
    return proc.wait()
