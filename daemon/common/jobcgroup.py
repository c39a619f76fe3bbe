"""A cgroup (v2) of its own for a job's child, where this process may make one: whatever the job starts, in any
session and with any environment, is in it, and `kill()` ends them all at once (cgroup.kill).

Where: a child of the cgroup this process runs in (the `0::` line of /proc/self/cgroup, below the cgroup2 mount of
/proc/self/mountinfo), named seisd-<owner tag>-job<id>-x<executor pid>. The executor makes it and its child joins
it before exec (`join`, from Popen's preexec_fn), so nothing the job starts is ever outside; the job's end kills it;
when the executor is killed instead, the daemon (a child of the same cgroup as its executors) kills what is left
(`kill_leftovers`, after the marker sweep of daemon/common/orphans.py).

NOTE on where this works: making a cgroup needs write access to the parent cgroup's folder: root, or a systemd
service with Delegate=yes. A daemon started from a login shell runs in a session scope that systemd keeps for itself,
and a machine may have cgroup v1 only: `cgroup_base()` is None there, and a job relies on its session and the marker.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("seisd.cgroups")

KILL_WAIT_S = 5.0


def cgroup_base() -> Path | None:
    """The cgroup2 folder this process runs in, when it may make cgroups there; else None."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = next(line.split("::", 1)[1].strip() for line in f if line.startswith("0::"))
        with open("/proc/self/mountinfo") as f:
            mount = next(line.split()[4] for line in f if " - cgroup2 " in line)
    except (OSError, StopIteration, IndexError):
        return None
    base = Path(mount + rel.rstrip("/")) if rel != "/" else Path(mount)
    if not (base / "cgroup.procs").is_file() or not os.access(base, os.W_OK | os.X_OK):
        return None
    return base


class JobCgroup:
    """One job's cgroup (see the module's note)."""

    def __init__(self, path: Path):
        self.path = path
        self._procs = str(path / "cgroup.procs").encode()  # ready before fork: `join` runs between fork and exec

    @classmethod
    def create(cls, owner_tag: str, job_id: int) -> "JobCgroup | None":
        """Make the job's cgroup; None where cgroups cannot be made here (then nothing else changes)."""
        base = cgroup_base()
        if base is None:
            return None
        path = base / f"seisd-{owner_tag}-job{job_id}-x{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            log.info("no cgroup for job %d (%s): its processes are followed by session and marker only", job_id, exc)
            return None
        return cls(path)

    def join(self) -> None:
        """In the child, before exec: move this process into the cgroup. A failure leaves it outside (the session
        and the marker still follow it) rather than failing the job."""
        try:
            fd = os.open(self._procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError:
            pass

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> list[int]:
        """SIGKILL everything in the cgroup (cgroup.kill, or one by one before Linux 5.14), wait for it to empty,
        remove it. Returns the pids it held."""
        held = self.pids()
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            for pid in held:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + KILL_WAIT_S
        while True:
            try:
                self.path.rmdir()  # refused (EBUSY) while a process is still in it
                return held
            except FileNotFoundError:
                return held
            except OSError:
                if time.monotonic() > deadline:
                    log.warning("cgroup %s still holds %s after SIGKILL", self.path, self.pids())
                    return held
                for pid in self.pids():  # forked after cgroup.kill, or no cgroup.kill
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                time.sleep(0.05)


def kill_leftovers(owner_tag: str, why: str, executor_alive: Callable[[int], bool]) -> int:
    """Kill the cgroups this home's executors left (their executor pid not alive); returns the processes killed."""
    base = cgroup_base()
    if base is None:
        return 0
    total = 0
    for path in sorted(base.glob(f"seisd-{owner_tag}-job*-x*")):
        named = re.fullmatch(rf"seisd-{owner_tag}-job(\d+)-x(\d+)", path.name)
        if named is None or executor_alive(int(named[2])):
            continue
        job, executor = named[1], named[2]
        pids = JobCgroup(path).kill()
        total += len(pids)
        if pids:
            log.warning("orphan sweep (%s): killed %d process(es) of the cgroup of job %s (executor %s gone): %s",
                        why, len(pids), job, executor, ", ".join(map(str, pids)))
    return total
