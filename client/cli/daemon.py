"""seisctl daemon start | stop | status, devices, doctor."""
from __future__ import annotations

import argparse
import os
import time
from typing import Any

from client.api import DaemonUnavailable
from client.cli._common import EXIT_ERROR, EXIT_OK, Command, Out, _duration, _table, client_of, command, group

group("daemon", "start, stop or inspect the daemon")


@command
class DaemonStart(Command):
    """Start `seisd` in the background (its output in `HOME/logs/seisd.out`) with the settings file `--config` if
    given, and return once it answers (at most `--wait-s`, default 60 s). Already running: says so, exit 0.
    `--exit-with PID`: the daemon stops, as on `daemon stop`, once process PID has ended (a host application that
    starts a daemon for itself passes its own pid; a daemon already running is left as it is).
    `--json`: `{"already_running", "pid", "home", "session"}` (plus `"log"` when it started one)."""

    name, help = "daemon start", "start seisd in the background; returns once it answers"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="settings file for the daemon")
        p.add_argument("--wait-s", type=float, default=60.0)
        p.add_argument("--exit-with", type=int, metavar="PID", help="stop the daemon once process PID has ended")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        from client.launch import start_daemon
        info = start_daemon(a.home, a.config, a.wait_s, exit_with=a.exit_with)
        out.emit(info, lambda: print(f"seisd {'already running' if info['already_running'] else 'started'}: pid "
                                     f"{info['pid']}, home {info['home']}"))
        return EXIT_OK


@command
class DaemonStop(Command):
    """Ask the daemon to shut down and wait (at most `--wait-s`, default 60 s) until its process is gone; running
    jobs are interrupted and resume at the next start; viewers are stopped. Still alive after the wait: exit 5.
    Not running: says so, exit 0. `--json`: `{"stopped": true, "pid"}`, or `{"stopped": false, "running":
    false}` when none ran."""

    name, help = "daemon stop", "stop seisd; running jobs resume at the next start"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait-s", type=float, default=60.0)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        c = client_of(a)
        try:
            pid = c.status()["pid"]
        except DaemonUnavailable:
            out.emit({"stopped": False, "running": False}, lambda: print("seisd is not running"))
            return EXIT_OK
        c.shutdown()
        deadline = time.monotonic() + a.wait_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        stopped = not _alive(pid)
        out.emit({"stopped": stopped, "pid": pid}, lambda: print(
            f"seisd (pid {pid}) stopped" if stopped else f"seisd (pid {pid}) is still stopping"))
        return EXIT_OK if stopped else EXIT_ERROR


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie waiting for its parent counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


@command
class DaemonStatus(Command):
    """Version, pid, uptime, home, session, job counts and device slots. `--json`: the `status` result."""

    name, help = "daemon status", "version, pid, session, devices and job counts"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        s = client_of(a).status()

        def human() -> None:
            up = time.time() - s["started"]
            print(f"seisd {s['version']} (protocol {s['protocol']}), pid {s['pid']}, up {_duration(up)}")
            print(f"home     {s['home']}")
            print(f"session  {s['session']}")
            print("jobs     " + ", ".join(f"{k} {v}" for k, v in s["jobs"].items()))
            _print_devices(s["devices"])
        out.emit(s, human)
        return EXIT_OK


def _print_devices(devices: list[dict[str, Any]]) -> None:
    _table(["SLOT", "STATE", "JOB", "EXECUTOR", "THREADS", "RESTARTS", "DEVICE"],
           [[d["slot"], d["state"], d["job"] or "-", d["executor_pid"] or "-", d.get("threads") or "-", d["restarts"],
             d["description"]] for d in devices])


@command
class Devices(Command):
    """Device slots and their executors. `--json`: `{"devices": [slot]}`."""

    name, help = "devices", "device slots and their executors"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        devices = client_of(a).devices()
        out.emit({"devices": devices}, lambda: _print_devices(devices))
        return EXIT_OK


@command
class Doctor(Command):
    """Checks Python and the packages (numpy, torch, pyzmq, h5py, segyio, psutil, tensorboard, pyyaml, pydantic),
    libzmq and CURVE, CUDA, /dev/shm, the home's disk, the runtime folder and the daemon, each `ok`, `WARN` or
    `FAIL` with a fix. Exit 5 if any check fails. `--json`: `{"checks": [{"name", "status", "detail", "fix"}]}`."""

    name, help = "doctor", "check Python, packages, devices, /dev/shm, sockets and the daemon"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        from client.doctor import run_checks
        checks = run_checks(a.home, a.timeout)
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        out.emit({"checks": checks}, lambda: [print(f"[{marks[c['status']]}] {c['name']:16} {c['detail']}" +
                                                    (f"\n       fix: {c['fix']}" if c.get("fix") else ""))
                                              for c in checks])
        return EXIT_ERROR if any(c["status"] == "fail" for c in checks) else EXIT_OK
