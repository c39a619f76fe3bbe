"""Named shared-memory segments in /dev/shm: creation with a free-space check, attachment, and orphan sweeping.

Why not multiprocessing.shared_memory: before Python 3.13 every attach registers the segment with the
resource tracker, which then unlinks it (with warnings) when any attaching process exits. Our segments have
one owner (the consumer) and a hygiene rule of their own, so we open /dev/shm files directly.

Hygiene rule: a segment is named ``<prefix>-<owner_pid>-<creator_pid>x<token>-<role>``: the owner is the daemon
(standalone use: the creating process itself), the creator the process that made it and unlinks it on close. If
either was killed (SIGKILL leaves no chance to clean up), ``sweep_orphans`` removes the segment: the daemon runs it
at start (its predecessor is dead) and when one of its executors dies (the creator is dead, the daemon lives on).
"""
from __future__ import annotations

import mmap
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

SHM_DIR = Path("/dev/shm")
DEFAULT_PREFIX = "seisd"
FREE_BYTES_ENV = "SEISD_SHM_FREE_BYTES"
# Leave some room for everybody else using /dev/shm (NCCL, other jobs).
_HEADROOM_BYTES = 16 * 1024 * 1024


class ShmError(RuntimeError):
    """A shared-memory segment could not be created or opened."""


class ShmSpaceError(ShmError):
    """/dev/shm has too little free space for the requested segment."""

    def __init__(self, needed: int, free: int, name: str) -> None:
        self.needed = needed
        self.free = free
        super().__init__(
            f"shared memory segment {name!r} needs {needed:,} bytes (+{_HEADROOM_BYTES:,} headroom) but "
            f"{SHM_DIR} has only {free:,} bytes free. Fix: give the container more shared memory "
            f"(docker run --shm-size=2g ...), or use a smaller batch size or fewer ring slots."
        )


def shm_free_bytes(free_bytes: int | None = None) -> int:
    """Free bytes in /dev/shm; ``free_bytes`` or env SEISD_SHM_FREE_BYTES override the measurement (tests)."""
    if free_bytes is not None:
        return int(free_bytes)
    override = os.environ.get(FREE_BYTES_ENV)
    if override:
        try:
            return int(override)
        except ValueError as exc:
            raise ShmError(f"{FREE_BYTES_ENV}={override!r} is not an integer number of bytes") from exc
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


def check_free_space(needed: int, name: str, free_bytes: int | None = None) -> None:
    """Raise ShmSpaceError unless /dev/shm can hold ``needed`` bytes plus headroom."""
    free = shm_free_bytes(free_bytes)
    if needed + _HEADROOM_BYTES > free:
        raise ShmSpaceError(needed, free, name)


def segment_name(owner_pid: int, role: str, prefix: str = DEFAULT_PREFIX) -> str:
    """A fresh segment name that carries the owner's and this (creating) process's pids (the hygiene rule)."""
    if "-" in prefix or "/" in prefix or "-" in role or "/" in role:
        raise ValueError(f"prefix {prefix!r} and role {role!r} must not contain '-' or '/'")
    return f"{prefix}-{int(owner_pid)}-{os.getpid()}x{secrets.token_hex(4)}-{role}"


def _pids(name: str, prefix: str) -> tuple[int, int | None] | None:
    parts = name.split("-")
    if len(parts) != 4 or parts[0] != prefix or not parts[1].isdigit():
        return None
    creator = parts[2].split("x", 1)[0]
    return int(parts[1]), (int(creator) if "x" in parts[2] and creator.isdigit() else None)


def owner_pid_of(name: str, prefix: str = DEFAULT_PREFIX) -> int | None:
    """The owner pid encoded in a segment name, or None if the name is not one of ours."""
    pids = _pids(name, prefix)
    return pids[0] if pids else None


def creator_pid_of(name: str, prefix: str = DEFAULT_PREFIX) -> int | None:
    """The pid of the process that made the segment (None for names without one)."""
    pids = _pids(name, prefix)
    return pids[1] if pids else None


@dataclass
class ShmSegment:
    """A mapped /dev/shm file. ``owner`` segments unlink the file on close."""

    name: str
    size: int
    buffer: mmap.mmap
    owner: bool

    @classmethod
    def create(cls, name: str, size: int, free_bytes: int | None = None) -> "ShmSegment":
        """Create and map a new segment of ``size`` bytes after checking free space."""
        if size <= 0:
            raise ValueError(f"segment size must be positive, got {size}")
        check_free_space(size, name, free_bytes)
        path = SHM_DIR / name
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            # posix_fallocate reserves the pages now, so a full tmpfs fails here with ENOSPC
            # instead of a SIGBUS later when a worker first touches a page.
            os.posix_fallocate(fd, 0, size)
            buf = mmap.mmap(fd, size)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise ShmSpaceError(size, shm_free_bytes(free_bytes), name) from exc
        os.close(fd)
        return cls(name, size, buf, owner=True)

    @classmethod
    def attach(cls, name: str) -> "ShmSegment":
        """Map an existing segment (workers)."""
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError as exc:
            raise ShmError(f"shared memory segment {name!r} does not exist (was the pool closed?)") from exc
        try:
            size = os.fstat(fd).st_size
            buf = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        return cls(name, size, buf, owner=False)

    def close(self) -> None:
        """Unmap; the owner also unlinks. Safe to call twice."""
        try:
            self.buffer.close()
        except BufferError:
            # Views (numpy/torch) still alive: the mapping stays until they go; the unlink still frees the name.
            pass
        if self.owner:
            (SHM_DIR / self.name).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (zombies count as alive until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_segments(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Names of our segments currently in /dev/shm."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in SHM_DIR.iterdir() if owner_pid_of(p.name, prefix) is not None)


def sweep_orphans(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Remove segments whose owner or creator is dead; return the names removed. The daemon calls this at start and
    when an executor dies."""
    removed = []
    for name in list_segments(prefix):
        pids = _pids(name, prefix)
        if pids is not None and not all(pid_alive(p) for p in pids if p is not None):
            try:
                (SHM_DIR / name).unlink()
            except FileNotFoundError:
                continue  # another sweeper got there first
            removed.append(name)
    return removed
