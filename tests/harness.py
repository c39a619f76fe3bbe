"""RunningDaemon: a real `seisd` process in a temporary home, for tests and tools.

    with RunningDaemon(tmp_path / "home") as d:
        job = d.client.submit({"kind": "test.steps", "steps": 3})
        d.client.wait(job["id"], timeout=30)

The daemon runs as `python -m daemon.server.main --home HOME --exit-with PID` (PID: the process that made the
RunningDaemon, so the daemon does not outlive a killed test run) with the test-only job kind `test.steps` loaded
(SEISD_PLUGINS) and short timers, so cancel grace periods and executor restarts take a fraction of a second. Its
sockets live in the runtime folder derived from the home (client.protocol.runtime_dir), so several daemons run side
by side.

NOTE on cleanup: see tests/procs.py; a failing test leaves no process and no job cgroup behind, even when it killed
the daemon itself with SIGKILL.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from client import protocol as P
from client.api import Client, DaemonUnavailable
from tests.procs import ProcessFamily, StartedInWith, _alive

ROOT = Path(__file__).resolve().parent.parent

# Settings suited to tests: one CPU slot (deterministic scheduling), quick cancel and restart, frequent heartbeats.
TEST_SETTINGS: dict[str, str] = {
    "SEISD_DEVICES": "cpu",
    "SEISD_PLUGINS": "[tests.daemon.testkinds]",
    "SEISD_EXECUTOR__CANCEL_GRACE_S": "1",
    "SEISD_EXECUTOR__RESTART_BACKOFF_S": "0.2",
    "SEISD_EXECUTOR__HEARTBEAT_S": "0.2",
    "SEISD_LOG_LEVEL": "info",
}


class DaemonDidNotStart(RuntimeError):
    """The daemon exited at start or did not answer `status` in time; the message holds the end of its output."""


def stand_in_gpus(folder: Path, count: int) -> dict[str, str]:
    """Settings of a daemon with `count` GPU slots on a machine without any: a stand-in nvidia-smi (what
    daemon/common/devices.py asks the driver tool for) listing `count` GPUs, first on PATH, and those slots and
    the CPU as the devices. Jobs that do not use CUDA (test.steps) run on them as on real ones."""
    smi = folder / "bin" / "nvidia-smi"
    smi.parent.mkdir(parents=True, exist_ok=True)
    smi.write_text("#!/bin/sh\n" + "".join(f"echo '{i}, Stand-in GPU, 1024 MiB'\n" for i in range(count)))
    smi.chmod(0o755)
    return {"SEISD_DEVICES": "[" + ", ".join([*(f"cuda:{i}" for i in range(count)), "cpu"]) + "]",
            "PATH": f"{smi.parent}{os.pathsep}{os.environ['PATH']}"}


def daemon_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test daemon (and of a seisctl run against it): SEISD_HOME, PYTHONPATH, test settings.

    Inherited SEISD_* variables are dropped so a developer's own settings cannot change what a test sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEISD_")}
    env.update(TEST_SETTINGS)
    env["SEISD_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env.update(extra or {})
    return env


_UP = {"ready", "busy", "finishing"}  # executor states after its hello


class RunningDaemon(StartedInWith):
    """A real seisd process; a context manager that leaves no process behind."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, start_timeout: float = 30.0,
                 client_timeout: float = 10.0, exit_with: int | None = None):
        """exit_with: the process whose end stops the daemon (`seisd --exit-with`); by default this test process,
        so a test run killed outright (SIGKILL of pytest or of an xdist worker) leaves no daemon behind."""
        self.exit_with = os.getpid() if exit_with is None else exit_with
        self.home = Path(home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = daemon_env(self.home, env)
        self.start_timeout = start_timeout
        self.client_timeout = client_timeout
        self.family = ProcessFamily()
        self.client: Client = Client(home=self.home, timeout=client_timeout)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.family.proc

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the daemon is not started"
        return self.proc.pid

    @property
    def out_path(self) -> Path:
        return self.home / "logs" / "seisd.out"

    def start(self) -> dict[str, Any]:
        """Start the daemon and return its `status` once it answers (and its executors said hello)."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "ab") as out:
            self.family.started(subprocess.Popen(
                [sys.executable, "-m", "daemon.server.main", "--home", str(self.home), "--exit-with",
                 str(self.exit_with)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT), env=self.env))
        probe = Client(home=self.home, timeout=0.5)
        deadline = time.monotonic() + self.start_timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise DaemonDidNotStart(f"seisd exited with status {self.proc.returncode} at start:\n"
                                            f"{self.output_tail()}")
                try:
                    status = probe.status()
                except DaemonUnavailable:  # no socket yet (the call returned at once) or no answer yet: look again
                    time.sleep(0.05)
                    continue
                # another daemon of this home may answer: only ours, with its executors up, counts (busy too: a
                # restart may hand a requeued job to an executor at once, and it stays busy until that job ends)
                if status["pid"] == self.proc.pid and all(d["state"] in _UP for d in status["devices"]):
                    self.client = Client(home=self.home, timeout=self.client_timeout)
                    self.snapshot()
                    return status
                time.sleep(0.05)
        finally:
            probe.close()
        raise DaemonDidNotStart(f"seisd did not become ready within {self.start_timeout:g} s:\n"
                                f"{self.output_tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """Ask the daemon to shut down (`shutdown` op) and wait for it to exit; returns its exit status."""
        assert self.proc is not None
        self.snapshot()
        self.client.shutdown()
        code = self.proc.wait(timeout)
        self.client.close()
        return code

    def kill9(self) -> list[int]:
        """SIGKILL the daemon and reap it; returns the pids of its descendants just before the kill."""
        assert self.proc is not None
        children = self.snapshot()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.client.close()
        return children

    def restart(self) -> dict[str, Any]:
        """Start a new daemon on the same home (after kill9 or stop); returns its status."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()

    # -- processes -------------------------------------------------------------------------------------------------

    def snapshot(self) -> list[int]:
        """Record the daemon's live descendants (executors, workers) so cleanup can find them after the daemon dies."""
        return self.family.snapshot()

    def executor_pids(self) -> list[int]:
        """Pids of the executors as the daemon reports them (`devices`)."""
        pids = [d["executor_pid"] for d in self.client.devices() if d["executor_pid"]]
        for p in pids:
            self.family.remember(p)
        return pids

    def cleanup(self) -> None:
        """Kill the daemon and everything it started that is still alive (tests/procs.py)."""
        self.client.close()
        self.family.kill_all(self.home, P.runtime_dir(self.home))

    def output_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.out_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no output)"


def command_line(proc: psutil.Process) -> str:
    """`proc`'s command line as one string; "" once it has ended or is a zombie (children come and go while a
    test walks the tree: Ray's workers, a spawn helper)."""
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
        return ""


def inet_sockets(proc: psutil.Process) -> list[Any]:
    """`proc`'s inet sockets (psutil's connection records); none once it has ended."""
    try:
        return proc.net_connections(kind="inet")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def pid_alive(pid: int) -> bool:
    """True when `pid` names a live process (a zombie counts as dead)."""
    try:
        return _alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def stage_step(client: Any, job_id: int, stage: str) -> int:
    """The furthest step a job's progress events report for one stage of a two-run train job (0: none yet)."""
    steps = [e["data"].get("step") or 0 for e in client.job_events(job_id)
             if e["type"] == "job.progress" and e["data"].get("stage") == stage]
    return max(steps, default=0)


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def job_states(job: dict[str, Any]) -> list[str]:
    """The states a job record went through, oldest first."""
    return [h["state"] for h in job["history"]]


def steps_job(steps: int = 3, step_s: float = 0.01, **extra: Any) -> dict[str, Any]:
    """A `test.steps` job file."""
    return {"kind": "test.steps", "steps": steps, "step_s": step_s, **extra}


def running_with_checkpoint(d: RunningDaemon, steps: int = 60, step_s: float = 0.05) -> int:
    """Submit a `test.steps` job and wait until it has checkpointed a few steps; returns its id.

    Once past a tenth of its steps the first attempt goes at 0.5 s a step, so it is still running tens of seconds
    later for the caller to stop or kill it, however slowly a loaded machine answers; a resumed attempt goes at
    `step_s` (docs/testing.md: work a test catches in progress outlasts the look)."""
    tenth = 0.1   # the progress waited for; the slow steps begin just past it
    job = steps_job(steps=steps, step_s=step_s, at_step=int(steps * tenth) + 1, slow_step_s=max(step_s, 0.5))
    job_id = d.client.submit(job)["id"]
    wait_for(lambda: d.client.show(job_id)["progress"] >= tenth, what=f"job {job_id} to make progress")
    return job_id


def wait_state(client: Client, job_id: int, states: tuple[str, ...] | str = P.TERMINAL_STATES,
               timeout: float = 30.0) -> dict[str, Any]:
    """Poll `show` until the job is in one of `states`; returns the record."""
    wanted = (states,) if isinstance(states, str) else states
    return wait_for(lambda: (lambda j: j if j["state"] in wanted else None)(client.show(job_id)), timeout,
                    what=f"job {job_id} to reach {'/'.join(wanted)}")


def free_port() -> int:
    """A loopback tcp port nobody listens on now (for a daemon's tcp endpoints)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seisctl(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real seisctl (python -m client.cli) against the daemon of `home`, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=ROOT, env=daemon_env(home),
                          capture_output=True, text=True, timeout=timeout)


def seisctl_json(home: Path, *args: str, code: int = 0) -> Any:
    """seisctl --json ARGS: its exit status checked, its one JSON document returned."""
    r = seisctl(home, "--json", *args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    return json.loads(r.stdout)
