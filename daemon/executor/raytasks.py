"""What every Ray task of a job needs on the executor side: is this executor on Ray, the cluster to join, and the
resources and threads each further task (a train job's rank, a predict job's shard) takes.

The Ray backend (daemon/server/backends/ray_backend.py) passes them in the environment; the names are in
daemon/common/ray_task.py.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from daemon.common.devices import omp_threads
from daemon.common.ray_task import ADDRESS_ENV, CPUS_ENV, GPUS_ENV, NODE_ENV, custom_resources


def task_resources(device: str) -> tuple[float, float]:
    """(CPUs, GPUs) a further task of this executor's job asks for (a rank, a shard): what the job's own task
    asked for (the backend sets them), GPUs only for a CUDA job."""
    cpus = float(os.environ.get(CPUS_ENV) or 1)
    gpus = float(os.environ.get(GPUS_ENV) or 0) if str(device).startswith("cuda") else 0.0
    return cpus, gpus


def task_custom_resources() -> dict[str, float]:
    """The custom Ray resources each further task asks for: those of the job's own task (ray.resources_per_job)."""
    return custom_resources()


def task_node() -> str:
    """Inside a Ray task (a rank, a shard): "Ray node <ip> <node id>", the node that runs it."""
    import ray

    return f"Ray node {ray.util.get_node_ip_address()} {ray.get_runtime_context().get_node_id()}"


def executor_node() -> str:
    """Inside an executor started by the Ray backend: "Ray node <ip> <node id>", the node its Ray task ran on
    (NODE_ENV; the executor's own Ray client may be attached to another node's raylet); "" elsewhere."""
    where = os.environ.get(NODE_ENV, "").split()
    return f"Ray node {where[0]} {where[1]}" if len(where) == 2 else ""


def task_threads() -> int:
    """Intra-op threads inside a Ray task: Ray sets OMP_NUM_THREADS to the CPUs it gave; torch follows it only
    when told."""
    return omp_threads() or 1


def on_ray() -> bool:
    """Whether this executor was started by seisd's Ray backend (its ranks and shards then go to Ray too)."""
    return bool(os.environ.get(ADDRESS_ENV))


def connect() -> Any:
    """The Ray client of this process, connected once to the cluster that runs this executor."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get(ADDRESS_ENV) or os.environ.get("RAY_ADDRESS")
        if not address:
            raise RuntimeError(f"{ADDRESS_ENV} is not set: only an executor started by seisd's Ray backend can "
                               "submit Ray tasks")
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, namespace="seisd")
    return ray
