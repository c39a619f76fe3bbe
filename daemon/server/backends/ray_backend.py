"""The Ray backend: each job runs in an executor that a Ray task starts on a node of the cluster.

seisd keeps the queue, priorities, cancellation, retries, logs and events; Ray only places and runs the work. A Ray
slot is a number of jobs run at once (`ray.slots`), not a device: each job's task asks Ray for
`ray.num_cpus_per_job` CPUs and, unless the job asks for the CPU or its kind is CPU-only, `ray.num_gpus_per_job`
GPUs, or what its kind's `resources` hook makes of them (daemon/kinds/registry.py: a sharded predict job's own task
asks for no CPU), and the custom resources `ray.resources_per_job` (which pin jobs to the nodes that have them). The
task (daemon/common/ray_task.py) starts `python -m daemon.executor --one-job`, which connects back to
the daemon's executor socket, says hello, receives the job, runs it, reports done and exits. A wildcard executor
endpoint (`tcp://0.0.0.0:5770`) is resolved on each node to an address of the daemon that node reaches
(daemon/common/ray_task.py, reachable_endpoint).

NOTE on the ways a Ray executor ends (the supervisor polls `RayProcess.poll`, which never blocks):
  - the job finished: the executor exits 0 after `done`; the slot is free again;
  - the worker or its node dies (or is killed): the task's ObjectRef fails (WorkerCrashedError, NodeDiedError ...)
    and the executor, a child of the worker, dies with it (PR_SET_PDEATHSIG); the daemon fails the job with that
    reason, or requeues a resumable one from its last checkpoint (`ray.max_retries`);
  - cancel: the cancel message first; after `executor.cancel_grace_s`, ray.cancel(force=True) kills the worker;
  - a hang: no heartbeat for `executor.heartbeat_timeout_s`, then ray.cancel(force=True) as above;
  - the daemon stops: executors are asked to exit (their jobs are interrupted, to resume at the next start); a Ray
    instance the daemon started (`address: local`) is shut down with it.
Ray retries nothing itself (max_retries=0 on the task): retries are seisd's, with a reason in the job's history.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from daemon.common import ray_task
from daemon.server.backends import BackendError, Ended
from daemon.common.children import exit_reason
from daemon.server.backends.local import LaunchArgs
from daemon.common.devices import DeviceSlot
from daemon.common.execproto import RunJob
from daemon.common.settings import Settings
from daemon.kinds import TaskResources, get_kind

log = logging.getLogger("seisd.ray")


class RayProcess:
    """A launched Ray task running one executor; `pid` is the executor's, learnt from its hello."""

    def __init__(self, ray: Any, ref: Any):
        self.ray = ray
        self.ref = ref
        self.pid: int | None = None
        self._ended: Ended | None = None

    def poll(self) -> Ended | None:
        if self._ended is None:
            ready, _ = self.ray.wait([self.ref], num_returns=1, timeout=0)
            if ready:
                self._ended = self._outcome()
        return self._ended

    def _outcome(self) -> Ended:
        try:
            code = int(self.ray.get(self.ref, timeout=5))
        except self.ray.exceptions.TaskCancelledError:
            return Ended(None, "its Ray task was cancelled")
        except self.ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Ended(None, f"its Ray worker or node was lost ({type(exc).__name__}: {first[:300]})")
        return Ended(code, exit_reason(code))

    def kill(self) -> None:
        if self.poll() is None:
            self.ray.cancel(self.ref, force=True)

    def wait(self, timeout: float) -> bool:
        ready, _ = self.ray.wait([self.ref], num_returns=1, timeout=max(0.0, timeout))
        return bool(ready)


class RayBackend:
    name = "ray"
    long_lived = False

    def __init__(self, settings: Settings, launch: LaunchArgs):
        if settings.ray.address == "local":
            keep_local_ray_on_loopback()
        try:
            import ray
        except ImportError:
            raise BackendError("backend: ray needs the ray package; install it with "
                               "`pip install 'seisd[ray]'` (or `pip install ray`)") from None
        self.ray = ray
        self.settings = settings.ray
        self.start_timeout_s = settings.ray.start_timeout_s
        self.launch_args = launch
        self.started_instance = False
        self._connect()
        self.daemon_addresses = daemon_addresses(ray.util.get_node_ip_address())
        log.info("Ray: this daemon's node is %s; executors connect to %s%s", self.daemon_addresses.ray_node_ip,
                 launch.endpoint,
                 " (a wildcard: each node picks the daemon's address it reaches)"
                 if ray_task.is_wildcard(launch.endpoint) else "")
        self._task = ray.remote(_load_task())
        self._slots = [DeviceSlot(f"ray:{i}", "ray", None, self._slot_description())
                       for i in range(settings.ray.slots)]

    def _connect(self) -> None:
        s = self.settings
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                                  "namespace": "seisd"}
        if s.address == "local":
            # a private instance on loopback: nothing of it is reachable from other machines
            kwargs.update(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                          num_cpus=s.local_num_cpus)
            self.started_instance = True
        elif s.address is not None:
            kwargs["address"] = s.address
        try:
            self.ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendError(f"ray.address {s.address!r}: cannot start or reach Ray: {exc}") from None
        if self.started_instance:
            self._check_loopback()
        log.info("Ray %s: %s", "started" if self.started_instance else "connected",
                 self.ray.cluster_resources())

    def _check_loopback(self) -> None:
        """Refuse a private instance that came up on a reachable address (its servers would listen there)."""
        node_ip = self.ray.util.get_node_ip_address()
        if not node_ip.startswith("127.") and node_ip != "::1":
            self.ray.shutdown()
            raise BackendError(f"ray.address 'local': Ray started on {node_ip}, not on loopback; was ray imported "
                               f"before the backend set {LOOPBACK_ENV}=0? (see docs/security.md, Ray)")

    def _slot_description(self) -> str:
        s = self.settings
        return (f"Ray ({s.address or 'default address'}): {s.num_cpus_per_job:g} CPU"
                f"{f', {s.num_gpus_per_job:g} GPU' if s.num_gpus_per_job else ''} per job")

    # -- what runs where -------------------------------------------------------------------------------------------

    def slots(self) -> list[DeviceSlot]:
        return self._slots

    def device_names(self) -> list[DeviceSlot]:
        names = [DeviceSlot("cpu", "cpu", None, "CPUs of the Ray cluster")]
        if self.settings.num_gpus_per_job > 0:
            names.append(DeviceSlot("cuda", "cuda", None, "GPUs of the Ray cluster"))
        return names

    def _gpus(self, wanted: str, kind_devices: str) -> float:
        return 0.0 if kind_devices == "cpu" or wanted == "cpu" else self.settings.num_gpus_per_job

    def accepts(self, slot: DeviceSlot, wanted: str, kind_devices: str) -> bool:
        # every Ray slot is alike; a job for a GPU needs jobs to be given GPUs (cuda:N names no device on a cluster)
        return wanted in ("auto", "cpu") or kind_devices == "cpu" or (
            wanted == "cuda" and self.settings.num_gpus_per_job > 0)

    def torch_device(self, slot: DeviceSlot, wanted: str, kind_devices: str) -> str:
        return "cuda:0" if self._gpus(wanted, kind_devices) > 0 else "cpu"

    # -- launching -------------------------------------------------------------------------------------------------

    def launch(self, slot: DeviceSlot, identity: str, job: RunJob | None) -> RayProcess:
        a = self.launch_args
        gpus = self.settings.num_gpus_per_job if job and job.device.startswith("cuda") else 0.0
        env = {k: v for k, v in os.environ.items() if k.startswith("SEISD_") or k == "PYTHONPATH"}
        env["SEISD_HOME"] = str(a.home)
        per_job = TaskResources(self.settings.num_cpus_per_job, gpus)
        kind = get_kind(job.kind) if job else None
        own = kind.task_resources(job.spec or {}, per_job) if kind and job else per_job
        # what the job's further tasks ask for (a train job's ranks, a predict job's shards): as much as a job gets
        env[ray_task.CPUS_ENV], env[ray_task.GPUS_ENV] = str(per_job.cpus), str(per_job.gpus)
        env[ray_task.RESOURCES_ENV] = json.dumps(self.settings.resources_per_job)
        name = f"seisd-job-{job.job}" if job else f"seisd-{identity}"
        ref = self._task.options(num_cpus=own.cpus, num_gpus=own.gpus, resources=self.settings.resources_per_job,
                                 max_retries=0, name=name).remote(a.arguments(identity, one_job=True), env,
                                                                  str(a.log_path(slot.name)), str(a.home),
                                                                  self.daemon_addresses)
        return RayProcess(self.ray, ref)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.settings.address, "slots": self.settings.slots,
                "started_instance": self.started_instance}

    def shutdown(self) -> None:
        try:
            self.ray.shutdown()  # stops the instance when this daemon started it (address: local)
        except Exception as exc:  # noqa: BLE001 - the daemon is stopping anyway; say what failed
            log.warning("ray.shutdown failed: %s: %s", type(exc).__name__, exc)


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_local_ray_on_loopback() -> None:
    """Make the Ray instance this process starts use the loopback address only.

    Ray turns `_node_ip_address="127.0.0.1"` into the machine's reachable address (resolve_ip_for_localhost) unless
    Ray clusters are switched off, as on macOS: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 the node address is
    loopback, and then the GCS, the raylet, the workers' gRPC servers, the object manager and the agents all bind
    127.0.0.1 (checked by tests/daemon/test_ray_backend.py::test_local_ray_listens_on_loopback_only). Ray reads the
    variable when it is imported, so this runs before `import ray`; Ray's own processes inherit it."""
    os.environ[LOOPBACK_ENV] = "0"


def daemon_addresses(ray_node_ip: str) -> ray_task.DaemonAddresses:
    """This daemon's addresses for executors on other nodes: Ray's address of its node first (every node reaches
    it: the raylets do), then each address of its network interfaces with its prefix (a node on another network
    of this machine picks the address on its own, ray_task.reachable_endpoint)."""
    import psutil

    found = []
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            try:
                prefix = int(ipaddress.ip_address(a.netmask.split("/")[0])).bit_count()
            except ValueError:
                continue
            found.append(f"{a.address.split('%')[0]}/{prefix}")
    return ray_task.DaemonAddresses(ray_node_ip, tuple(found))


def _load_task() -> Any:
    from daemon.common.ray_task import run_executor

    return run_executor


def shared_home(settings: Settings, home: Path) -> Path:
    """The home as every node sees it (ray.shared_home), else this daemon's path."""
    return Path(settings.ray.shared_home) if settings.ray.shared_home else home
