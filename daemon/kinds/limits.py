"""What a job may ask of the machine: data worker processes by its CPUs, memory for what a train job keeps (its
validation batches, its ring of batch slots) by the memory and shared memory it has.

Checked at submit (the daemon's machine: where the local backend runs executors; on Ray the figures are this
machine's, an estimate of a node's) so that a job asking for more is refused with the limit and the machine's
figure, instead of ending in the out-of-memory killer, a MemoryError without a message, or a hundred processes on
two cores. The executor applies the same worker limit to a running job's `workers` control.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

WORKERS_PER_CPU = 4            # data workers are niced and partly wait on the disk: a few per CPU still help
MAX_BATCHES_PER_EPOCH = 1_000_000  # an epoch ends in validation, a checkpoint and the early-stop test
MEMINFO = Path("/proc/meminfo")


def cpu_count() -> int:
    """CPUs this process may run on (its affinity, which a container or taskset narrows), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def max_workers() -> int:
    """The most data worker processes one job may have in all (all its ranks together)."""
    return WORKERS_PER_CPU * cpu_count()


def memory_available() -> int | None:
    """Bytes of memory available to new work (MemAvailable of /proc/meminfo); None where it cannot be read."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def shm_available() -> int | None:
    """Free bytes of /dev/shm, where workers' ring segments live; None where it cannot be read."""
    from workers.shm import ShmError, shm_free_bytes

    try:
        return shm_free_bytes()
    except (OSError, ShmError):
        return None


def size(n: float) -> str:
    """Bytes as a short figure (512 MiB, 1.5 TiB)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def worker_problem(workers: int, ranks: int) -> str | None:
    """`data.workers` per rank x `ranks` against max_workers()."""
    total, cap = workers * ranks, max_workers()
    if total <= cap:
        return None
    per = f" per rank x {ranks} ranks = {total}" if ranks > 1 else ""
    return (f"data.workers: {workers} worker processes{per} is more than this machine runs: at most {cap} "
            f"({WORKERS_PER_CPU} per CPU, {cpu_count()} CPU{'s' if cpu_count() > 1 else ''}); ask for fewer")


def train_memory_problems(d: Any, workers: int) -> list[str]:
    """What a train job's data section (with `workers` data workers per rank) keeps in memory, against what the
    machine has: the validation batches (made once, kept for the whole run) and, with workers, the ring
    (ring_slots batches in /dev/shm; with several ranks each has a ring of its share of the rows: the same bytes)."""
    from workers.ring import RingLayout

    crop = list(d.crop.size)
    batch_x = (d.batch_size, d.channels, *crop)
    per_batch = RingLayout(1, batch_x, (d.batch_size,)).slot_bytes
    what = f"{d.batch_size} crops of {' x '.join(map(str, [d.channels, *crop]))} float32, {size(per_batch)}"
    problems = []
    avail, shm = memory_available(), shm_available()
    val = d.val_batches * per_batch
    if avail is not None and val > avail:
        problems.append(f"data.val_batches: {d.val_batches} validation batches are kept in memory for the whole "
                        f"run: {size(val)} (a batch: {what}); this machine has {size(avail)} of memory available "
                        f"(ask for at most {max(0, math.floor(avail / per_batch))})")
    ring = d.ring_slots * per_batch
    known = [x for x in (avail, shm) if x is not None]
    if workers != 0 and known and ring > min(known):
        problems.append(f"data.ring_slots: {d.ring_slots} slots of one batch each take {size(ring)} of shared "
                        f"memory (a batch: {what}); this machine has {size(avail or 0)} of memory available and "
                        f"{size(shm or 0)} free in /dev/shm (fewer slots or a smaller batch_size)")
    return problems
