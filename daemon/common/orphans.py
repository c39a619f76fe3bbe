"""Processes seisd started that outlived what started them: found by a marker in their environment, and ended.

NOTE on why a marker. Every process seisd starts (executors, data workers, viewers, the user-model check, a custom
script and whatever that starts) inherits SEISD_OWNER=<owner_tag(home)> from the daemon's environment (`mark_owner`,
at daemon start). PR_SET_PDEATHSIG reaches only the direct children of a process that dies, and killing a process
group or session only those that stayed in it: a grandchild in a session of its own (setsid, a notebook's kernel, a
daemonising tool) is reparented to init when its parent is killed with SIGKILL, and lives on. Its /proc/PID/environ
still holds the environment it was started with, marker included, whatever it did to os.environ since.

The sweep (`sweep`, at daemon start and when an executor dies): a process carrying the home's marker that is not the
sweeping process, one of its ancestors, or one of its live descendants (the daemon's executors with their workers
and jobs, its viewers, a running check) is an orphan: SIGTERM, then SIGKILL after `grace_s` to what is left. Only
processes whose environment can be read count (this user's; another user's are skipped); a zombie is already dead.
Each is signalled through a pidfd opened after its marker was seen, so a pid reused in between is never hit.

A run's marker (`run_marker`): a custom job's child (and the user-model check) gets two more variables,
SEISD_OWNER_RUN=<unique>, so the job's end (`kill_run`) takes every process the job started, wherever it went, and
nothing else of the same daemon; and SEISD_OWNER_STARTER=<pid of the seisd process that started it>: a process a
live job daemonised (reparented to init while its job runs on another executor) is spared by the sweep after some
other executor's death, as long as its starter is the daemon or a live child of it. It ends with its job instead.

What escapes: a process started with a cleared environment (env -i): the job's cgroup takes those where cgroups may
be written (daemon/common/jobcgroup.py); and everything on systems without /proc (there is no sweep there).
"""
from __future__ import annotations

import hashlib
import logging
import os
import select
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

OWNER_ENV = "SEISD_OWNER"          # settings.py skips SEISD_OWNER* (they are not settings)
RUN_ENV = "SEISD_OWNER_RUN"
STARTER_ENV = "SEISD_OWNER_STARTER"
GRACE_S = 3.0                      # after SIGTERM, before SIGKILL
KILL_WAIT_S = 1.0                  # after SIGKILL, for the process to be gone
ROUNDS = 3                         # sweeps in a row, for what an orphan forked while it was being found
PROC = Path("/proc")

log = logging.getLogger("seisd.orphans")


def owner_tag(home: Path) -> str:
    """The marker's value for a home: the first 16 hex digits of SHA-256 of its absolute path."""
    return hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:16]


def mark_owner(home: Path) -> str:
    """Put the home's marker in this process's environment, for every process it starts from now on."""
    tag = owner_tag(home)
    os.environ[OWNER_ENV] = tag
    return tag


def run_marker() -> dict[str, str]:
    """The environment variables that mark one run of a job (or check), started by this process, and everything
    it starts."""
    return {RUN_ENV: uuid.uuid4().hex, STARTER_ENV: str(os.getpid())}


@dataclass(frozen=True)
class Orphan:
    """A process the sweep found and ended: its pid and command line, for the log."""

    pid: int
    command: str

    def __str__(self) -> str:
        return f"{self.pid} ({self.command})"


def sweep(home: Path, grace_s: float = GRACE_S) -> list[Orphan]:
    """End the orphans of this home's daemons: marked processes outside the caller's own family. Blocks up to about
    grace_s when there are some (run it off the daemon's loop)."""
    return _end_marked(OWNER_ENV, owner_tag(home), os.getpid(), grace_s)


def kill_run(marker: dict[str, str], grace_s: float = GRACE_S) -> list[Orphan]:
    """End every process carrying a run's marker (`run_marker`), the caller's own children included."""
    return _end_marked(RUN_ENV, marker[RUN_ENV], None, grace_s)


class OrphanSweeper:
    """The daemon's sweeps, logged: `now` at start (blocking, before anything is started), `soon` when an executor
    died (in a thread of its own, so the loop never waits through a grace period; one at a time, and one more
    after it when asked meanwhile). `extra(why)` runs after each sweep (the jobs' cgroups)."""

    def __init__(self, home: Path, extra: Callable[[str], None] | None = None, grace_s: float = GRACE_S):
        self.home = home
        self.extra = extra
        self.grace_s = grace_s
        self._lock = threading.Lock()
        self._again: str | None = None
        self._thread: threading.Thread | None = None

    def now(self, why: str) -> list[Orphan]:
        found = sweep(self.home, self.grace_s)
        if found:
            log.warning("orphan sweep (%s): killed %d process(es) carrying this home's marker: %s", why,
                        len(found), ", ".join(map(str, found)))
        else:
            log.info("orphan sweep (%s): no orphan", why)
        if self.extra is not None:
            self.extra(why)
        return found

    def soon(self, why: str) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._again = why
                return
            self._thread = threading.Thread(target=self._run, args=(why,), name="orphan-sweep", daemon=True)
            self._thread.start()

    def _run(self, why: str) -> None:
        while True:
            try:
                self.now(why)
            except Exception:  # noqa: BLE001 - a failed sweep is logged; the daemon goes on
                log.exception("orphan sweep (%s) failed", why)
            with self._lock:
                why, self._again = self._again, None
                if why is None:
                    self._thread = None
                    return


# -- reading /proc ------------------------------------------------------------------------------------------------

def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process now."""
    out: dict[int, tuple[int, str]] = {}
    try:
        names = os.listdir(PROC)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            raw = (PROC / name / "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        out[int(name)] = (int(fields[1]), fields[0].decode())
    return out


def _family(root: int, table: dict[int, tuple[int, str]]) -> set[int]:
    """root and its descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def _ancestors(pid: int, table: dict[int, tuple[int, str]]) -> set[int]:
    out = set()
    while pid in table and pid not in out:
        out.add(pid)
        pid = table[pid][0]
    return out


def _carries(pid: int, needle: bytes) -> bool:
    try:
        env = (PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or another user's
        return False
    return needle in b"\0" + env + b"\0"


def _starter_lives(pid: int, root: int, table: dict[int, tuple[int, str]]) -> bool:
    """Was pid started by a run whose starter (SEISD_OWNER_STARTER) is root or a live child of root?"""
    try:
        env = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    key = f"\0{STARTER_ENV}=".encode()
    at = (b"\0" + env).find(key)
    if at < 0:
        return False
    value = (b"\0" + env)[at + len(key):].split(b"\0", 1)[0]
    if not value.isdigit():
        return False
    starter = int(value)
    return starter == root or (starter in table and table[starter][0] == root and table[starter][1] != "Z")


def _command(pid: int) -> str:
    try:
        cmd = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return (cmd or "?")[:160]


# -- ending them --------------------------------------------------------------------------------------------------

def _end_marked(var: str, value: str, spare_family_of: int | None, grace_s: float) -> list[Orphan]:
    needle = f"\0{var}={value}\0".encode()
    ended: list[Orphan] = []
    for _ in range(ROUNDS):
        table = _table()
        spared = _ancestors(os.getpid(), table)
        if spare_family_of is not None:
            spared |= _family(spare_family_of, table)
        spared |= {o.pid for o in ended}  # killed already, and maybe not quite gone
        found = [pid for pid, (_, state) in table.items()
                 if pid not in spared and state != "Z" and _carries(pid, needle)
                 and (spare_family_of is None or not _starter_lives(pid, spare_family_of, table))]
        if not found:
            break
        ended += _end(found, needle, grace_s)
    return ended


def _end(pids: list[int], needle: bytes, grace_s: float) -> list[Orphan]:
    """SIGTERM each (through a pidfd opened after its marker was seen again), SIGKILL what is left after grace_s."""
    held: list[tuple[Orphan, int | None]] = []
    for pid in pids:
        fd = _pidfd(pid)
        if fd == -1 or not _carries(pid, needle):  # gone, or the pid was taken by another process meanwhile
            _close(fd)
            continue
        held.append((Orphan(pid, _command(pid)), fd))
    try:
        for orphan, fd in held:
            _signal(orphan.pid, fd, signal.SIGTERM)
        left = _wait_ended(held, grace_s)
        for orphan, fd in left:
            _signal(orphan.pid, fd, signal.SIGKILL)
        _wait_ended(left, KILL_WAIT_S)
    finally:
        for _, fd in held:
            _close(fd)
    return [o for o, _ in held]


def _wait_ended(held: list[tuple[Orphan, int | None]], timeout: float) -> list[tuple[Orphan, int | None]]:
    """Those of `held` still running after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    left = [(o, fd) for o, fd in held if not _ended(o.pid, fd)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [(o, fd) for o, fd in left if not _ended(o.pid, fd)]
    return left


def _pidfd(pid: int) -> int | None:
    """A pidfd for pid; None where the system has none (then plain kill), -1 when the process is gone."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except OSError:  # ENOSYS: a kernel before 5.3
        return None


def _signal(pid: int, fd: int | None, sig: int) -> None:
    try:
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _ended(pid: int, fd: int | None) -> bool:
    if fd is not None:  # a pidfd reads as ready once its process has exited (a zombie has)
        return bool(select.select([fd], [], [], 0)[0])
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return True
    return raw[raw.rfind(b")") + 2:].split()[0] == b"Z"


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        os.close(fd)


def is_live_child(pid: int) -> bool:
    """Is pid a live (not zombie) child of this process? (A job's cgroup outlives an executor that is not.)"""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return False
    fields = raw[raw.rfind(b")") + 2:].split()
    return fields[0] != b"Z" and int(fields[1]) == os.getpid()
