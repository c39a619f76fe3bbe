"""Executor backends: WHERE and HOW an executor process is launched and watched.

The executor process and its message protocol (daemon/common/execproto.py) are the same everywhere; seisd keeps the
queue, priorities, cancellation, retries, logs and events. A backend only answers:
  - which slots exist (`slots()`), which jobs a slot may take (`accepts`), and the device the job sees;
  - `launch(slot, identity, job)`: start an executor that connects to the daemon's executor socket and return an
    `ExecutorProcess` the supervisor polls without blocking (`poll()`), kills (`kill()`) and waits for (`wait()`);
  - whether its executors are long-lived (local: one per device slot, restarted when it dies) or run one job each
    (Ray: started for a job on whichever node Ray picks, gone when the job ends).

Backends: `local` (daemon/server/backends/local.py, Popen on this machine) and `ray`
(daemon/server/backends/ray_backend.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from daemon.common.devices import DeviceSlot
    from daemon.common.execproto import RunJob
    from daemon.common.settings import Settings


@dataclass(frozen=True)
class Ended:
    """How an executor process ended: its exit status when one is known, and the reason in words."""

    code: int | None
    reason: str


class ExecutorProcess(Protocol):
    """One launched executor, as the supervisor sees it. Every method returns at once except `wait`."""

    pid: int | None                      # known at launch (local) or from the executor's hello (Ray)

    def poll(self) -> Ended | None:
        """None while it runs; how it ended otherwise."""

    def kill(self) -> None:
        """Stop it now (SIGKILL, or ray.cancel with force)."""

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for it to end; True when it ended."""


class ExecutorBackend(Protocol):
    name: str
    long_lived: bool                     # True: one executor per slot, restarted; False: one executor per job
    start_timeout_s: float               # how long a launched executor may take to say hello

    def slots(self) -> list["DeviceSlot"]:
        """The slots the scheduler fills."""

    def device_names(self) -> list["DeviceSlot"]:
        """The device names a job file may ask for (checked at submit)."""

    def accepts(self, slot: "DeviceSlot", wanted: str, kind_devices: str) -> bool:
        """Can a job asking for `wanted` (auto, cpu, cuda, cuda:N) of a kind limited to `kind_devices` run there?"""

    def torch_device(self, slot: "DeviceSlot", wanted: str, kind_devices: str) -> str:
        """The torch device name the job's runner uses inside its executor."""

    def launch(self, slot: "DeviceSlot", identity: str, job: "RunJob | None") -> ExecutorProcess:
        """Start an executor for `slot` (for `job`, the run message, when executors run one job each)."""

    def describe(self) -> dict[str, Any]:
        """What `status` shows of the backend."""

    def shutdown(self) -> None:
        """Release what the backend holds (a Ray instance it started); called once, after the executors ended."""


class BackendError(RuntimeError):
    """The backend cannot start (Ray is not installed, its cluster cannot be reached ...)."""


def make_backend(settings: "Settings", launch_args: Any) -> ExecutorBackend:
    """The backend the settings name; `launch_args` says how to start an executor (daemon/server/backends/local.py)."""
    if settings.backend == "ray":
        from daemon.server.backends.ray_backend import RayBackend

        return RayBackend(settings, launch_args)
    from daemon.server.backends.local import LocalBackend

    return LocalBackend(settings, launch_args)
