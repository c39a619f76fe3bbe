"""The local backend: one long-lived executor per device slot, started with Popen on this machine."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.server import scheduler
from daemon.common.children import exit_reason  # noqa: F401  (ray_backend imports it from here)
from daemon.server.backends import Ended
from daemon.common.devices import DeviceSlot, discover
from daemon.common.execproto import RunJob
from daemon.common.settings import Settings


@dataclass(frozen=True)
class LaunchArgs:
    """What every executor is started with, wherever it runs."""

    endpoint: str                 # the daemon's executor socket (ipc on one machine, tcp with CURVE beyond)
    home: Path                    # the home as the executor sees it
    config: Path | None           # the daemon's --config file
    logs_dir: Path                # where executor logs go

    def arguments(self, slot_identity: str, one_job: bool = False) -> list[str]:
        """The executor's arguments after `python -m daemon.executor`, but for --parent-pid (the launcher's)."""
        args = ["--slot", slot_identity, "--endpoint", self.endpoint, "--home", str(self.home)]
        if self.config:
            args += ["--config", str(self.config)]
        if one_job:
            args.append("--one-job")
        return args

    def log_path(self, slot_name: str) -> Path:
        return self.logs_dir / f"executor-{slot_name.replace(':', '')}.log"


class LocalProcess:
    """An executor started with Popen in its own session (so a Ctrl-C in the daemon's terminal is not its)."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=str(cwd), env=env, start_new_session=True)
        self.pid: int | None = self.proc.pid

    def poll(self) -> Ended | None:
        code = self.proc.poll()
        return None if code is None else Ended(code, exit_reason(code))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False


class LocalBackend:
    name = "local"
    long_lived = True

    def __init__(self, settings: Settings, launch: LaunchArgs):
        self.launch_args = launch
        self.start_timeout_s = settings.executor.start_timeout_s
        self.threads = settings.executor.threads
        self._slots = discover(settings.devices)

    def slots(self) -> list[DeviceSlot]:
        return self._slots

    def device_names(self) -> list[DeviceSlot]:
        return self._slots

    def accepts(self, slot: DeviceSlot, wanted: str, kind_devices: str) -> bool:
        return scheduler.slot_accepts(slot.name, wanted, kind_devices)

    def torch_device(self, slot: DeviceSlot, wanted: str, kind_devices: str) -> str:
        return slot.torch_device

    def launch(self, slot: DeviceSlot, identity: str, job: RunJob | None) -> LocalProcess:
        a = self.launch_args
        env = dict(os.environ, **slot.env())
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)   # torch reads it at start (daemon.common.devices.cpu_threads)
        cmd = [sys.executable, "-m", "daemon.executor", *a.arguments(identity), "--parent-pid", str(os.getpid())]
        return LocalProcess(cmd, env, a.home, a.log_path(slot.name))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def shutdown(self) -> None:
        pass
