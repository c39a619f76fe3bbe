"""What the kernel says of an executor that the daemon cannot hear from, or that died of SIGKILL: its process
state and CPU time (/proc/PID/stat), and whether the out-of-memory killer struck (/proc/vmstat). Linux, no root
needed; where /proc cannot be read (another system, an executor on another Ray node) every reading is None and the
supervisor goes by heartbeats and exit statuses alone.

NOTE on slow work against a hang. Heartbeats come from the executor's I/O thread, which needs Python's GIL; a job in
one long C call that keeps the GIL (np.unique over the rows of a 10-million-line picks file: 40 s) silences it
although nothing is wrong. So silence is only a reason to look: when an executor has been silent for
executor.heartbeat_timeout_s, the supervisor reads its state and CPU time. Stopped (state T: SIGSTOP, or t: a
debugger) is a hang. Using CPU (at least BUSY_CPU_SHARE of one core since the last look) is work: it is left alone
and looked at again later. A whole heartbeat_timeout_s without CPU is a hang (a native call blocked with the GIL
held, a deadlock, a process in D state on a dead file server). Work that spins forever holding the GIL looks like
work; the job's time_limit_s is what bounds it.

NOTE on naming an out-of-memory kill. The kernel's OOM killer ends its victim with SIGKILL, which the exit status
cannot tell from a kill -9. The kernel counts its kills in /proc/vmstat (`oom_kill`, Linux 4.13 and later), system
wide, whichever cgroup's limit was hit, readable by anyone. The supervisor samples that counter about once a
second and keeps OOM_WINDOW_S of samples; an executor that died of a SIGKILL seisd did not send while the counter
rose in that window is named out of memory. Signals considered and not used: the kernel log (dmesg) needs root
where kernel.dmesg_restrict is set (the default of most distributions); memory.events of the executor's cgroup
is found through /proc/PID/cgroup only while the process lives, and that cgroup is usually shared with the daemon
and the rest of the session; memory.oom_control is cgroup v1 only. The counter may name an executor that a
person killed with kill -9 in the very second another process ran out of memory: a rare wrong name, and a harmless
one (the job is retried either way).
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path

BUSY_CPU_SHARE = 0.02    # CPU seconds per second of silence above which a silent executor counts as working
OOM_WINDOW_S = 5.0       # how far back an out-of-memory kill may lie and still name an executor's SIGKILL
OOM_SAMPLE_S = 1.0       # how often the kernel's counter is read

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_STATES = {"R": "running", "S": "sleeping", "D": "in uninterruptible sleep (waiting on a disk or a network file "
           "system)", "T": "stopped (SIGSTOP, or a debugger)", "t": "stopped by a debugger", "Z": "a zombie",
           "I": "idle"}


@dataclass(frozen=True)
class ProcessLook:
    """One look at a process: its state letter (as in ps) and the CPU seconds all its threads have used."""

    state: str
    cpu_s: float

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")

    def describe(self) -> str:
        return f"state {self.state}: {_STATES.get(self.state, 'unknown')}"


def look(pid: int | None) -> ProcessLook | None:
    """The process's state and CPU time from /proc/PID/stat, or None when it cannot be read."""
    if not pid:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()   # after "pid (comm) ": the comm may hold spaces and brackets
    try:
        return ProcessLook(fields[0], (int(fields[11]) + int(fields[12])) / _TICK)
    except (IndexError, ValueError):
        return None


def oom_kills(vmstat: Path = Path("/proc/vmstat")) -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot, or None where it does not say."""
    try:
        for line in vmstat.read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class OomCounter:
    """The kernel's OOM kill counter over the last OOM_WINDOW_S, sampled by `sample(now)` (cheap to call often)."""

    def __init__(self, read=oom_kills):
        self.read = read
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def sample(self, now: float) -> None:
        if self.samples and now - self.samples[-1][0] < OOM_SAMPLE_S:
            return
        value = self.read()
        if value is None:
            return
        self.samples.append((now, value))
        while len(self.samples) > 1 and now - self.samples[1][0] >= OOM_WINDOW_S:
            self.samples.popleft()

    def rose(self) -> tuple[int, int] | None:
        """(then, now) when the counter is higher now than OOM_WINDOW_S ago (or at the first sample), else None."""
        now = self.read()
        if now is None or not self.samples or now <= self.samples[0][1]:
            return None
        return self.samples[0][1], now
