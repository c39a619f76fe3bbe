"""The Ray task that runs one executor: it lives in a Ray worker process on whichever node Ray chose.

Kept apart from ray_backend.py so the worker imports nothing of the daemon's side. The executor runs as a child of
the Ray worker and asks for SIGKILL when that worker dies (PR_SET_PDEATHSIG, daemon/executor/process.py), so a
`ray.cancel(force=True)`, a crashed worker or a lost node ends the executor and its job's data workers with it.

NOTE on the executor endpoint (`ray.executor_endpoint`): the daemon binds it, often on a wildcard
(`tcp://0.0.0.0:5770`), which names no machine to connect to: an executor that connected to it as written would
reach its own node. The backend sends the daemon's addresses along (`DaemonAddresses`: Ray's address of the
daemon's node first, then every address of its network interfaces with its prefix), and the task, on its node,
picks the one to use (`reachable_endpoint`): the node's own address when the daemon runs on this node, else the
daemon's address on the node's network, else Ray's address of the daemon's node (the one the GCS and raylets use,
which every node reaches). An endpoint bound to a named host is used as it is.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

ADDRESS_ENV = "SEISJOB_RAY_ADDRESS"   # set for executors that the Ray backend started: the cluster they run on
CPUS_ENV = "SEISJOB_RAY_CPUS"         # the CPUs and GPUs each further task of the job (ranks, shards) asks for
GPUS_ENV = "SEISJOB_RAY_GPUS"
RESOURCES_ENV = "SEISJOB_RAY_RESOURCES"  # JSON: the custom resources every task of the job asks for (ray.resources)
NODE_ENV = "SEISJOB_RAY_NODE"         # "<node ip> <node id>": where this executor runs (its job's log says it)

_WILDCARD = re.compile(r"^tcp://(0\.0\.0\.0|\*|\[::\])(?=:(\d+|\*)$)")


@dataclass(frozen=True)
class DaemonAddresses:
    """Where the daemon can be reached: Ray's address of its node, and its interfaces' addresses ("ip/prefix")."""

    ray_node_ip: str
    interfaces: tuple[str, ...] = field(default_factory=tuple)


def is_wildcard(endpoint: str) -> bool:
    """Whether a tcp endpoint is bound on every address (its host names no machine to connect to)."""
    return bool(_WILDCARD.match(endpoint))


def reachable_endpoint(bound: str, daemon: DaemonAddresses, node_ip: str) -> str:
    """The executor endpoint as a node at `node_ip` reaches it: a wildcard host becomes the daemon's address that
    this node can reach (see the NOTE above); any other endpoint is returned as it is."""
    if not is_wildcard(bound):
        return bound
    return _WILDCARD.sub(f"tcp://{_host(_pick(daemon, node_ip))}", bound)


def _pick(daemon: DaemonAddresses, node_ip: str) -> str:
    try:
        node = ipaddress.ip_address(node_ip)
    except ValueError:
        return daemon.ray_node_ip
    nets = []
    for entry in daemon.interfaces:
        try:
            nets.append(ipaddress.ip_interface(entry))
        except ValueError:
            continue
    if node_ip == daemon.ray_node_ip or any(n.ip == node for n in nets):
        return node_ip  # the daemon runs on this very node
    same = [n for n in nets if n.version == node.version and node in n.network and not n.ip.is_loopback]
    return str(max(same, key=lambda n: n.network.prefixlen).ip) if same else daemon.ray_node_ip


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _with_endpoint(arguments: list[str], endpoint: str) -> list[str]:
    out = list(arguments)
    if "--endpoint" in out:
        out[out.index("--endpoint") + 1] = endpoint
    return out


def run_executor(arguments: list[str], env: dict[str, str], log_path: str, cwd: str,
                 daemon: DaemonAddresses | None = None) -> int:
    """Start `python -m daemon.executor ARGUMENTS --parent-pid <this worker>` and return its exit status.

    `env` overrides the worker's environment (seisd settings, PYTHONPATH, the resources SEISJOB_RAY_CPUS,
    SEISJOB_RAY_GPUS and SEISJOB_RAY_RESOURCES of further tasks); RAY_ADDRESS and SEISJOB_RAY_ADDRESS name this
    task's cluster, SEISJOB_RAY_NODE this node; CUDA_VISIBLE_DEVICES is the one Ray set for the GPUs it gave this
    task, or empty when it gave none (so torch cannot take a GPU it was not given). A wildcard `--endpoint` is
    resolved for this node with `daemon` (reachable_endpoint)."""
    import ray

    context = ray.get_runtime_context()
    node_ip, node_id = ray.util.get_node_ip_address(), context.get_node_id()
    # the daemon's settings (SEISD_* in env), not whatever SEISD_* variables this node's Ray was started with
    full = {k: v for k, v in os.environ.items() if not k.startswith("SEISD_")} | env
    # the executor may submit Ray tasks of its own (a predict job's shards, a train job's ranks): to this cluster
    full["RAY_ADDRESS"] = full[ADDRESS_ENV] = context.gcs_address
    full[NODE_ENV] = f"{node_ip} {node_id}"
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        full["CUDA_VISIBLE_DEVICES"] = ""
    if daemon is not None and "--endpoint" in arguments:
        bound = arguments[arguments.index("--endpoint") + 1]
        arguments = _with_endpoint(arguments, reachable_endpoint(bound, daemon, node_ip))
    cmd = [sys.executable, "-m", "daemon.executor", *arguments, "--parent-pid", str(os.getpid())]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as out:
        endpoint = arguments[arguments.index("--endpoint") + 1] if "--endpoint" in arguments else "?"
        out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} Ray task on node {node_ip} ({node_id}), worker pid "
                  f"{os.getpid()}: executor connects to {endpoint}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=full,
                                cwd=cwd if os.path.isdir(cwd) else None)
    return proc.wait()


def custom_resources(env: dict[str, str] | None = None) -> dict[str, float]:
    """The custom Ray resources every task of this job asks for (RESOURCES_ENV, set by the backend)."""
    raw = (os.environ if env is None else env).get(RESOURCES_ENV) or "{}"
    return {str(k): float(v) for k, v in json.loads(raw).items()}
