"""The worker process: receive (epoch, k, slot), make batch k into the slot, answer with the slot index.

This module is the spawn target, so it imports only numpy and workers.* (the consumer has imported torch;
the worker must not pay for it, and fork after torch's threads is unsafe, hence spawn).

NOTE [worker protocol]
  1. The consumer starts the process with a picklable recipe, the seed, the ring's name and layout, and
     its end of a private duplex pipe. Nothing else is shared: no queue with a lock that a killed worker
     could leave held.
  2. The worker arms PR_SET_PDEATHSIG, lowers its priority (run_in_background), then attaches the ring and
     opens the volumes (memory maps, HDF5) itself, after start: handles must belong to the process that reads
     through them.
  3. Loop: a message is either ``(epoch, k, slot)`` or ``None``. For a work item it fills the slot and
     sends ``("done", epoch, k, slot, busy_seconds)``; if the recipe raises it sends
     ``("error", epoch, k, slot, traceback_text)`` and carries on. ``None`` means retire: it has already
     finished every item queued before it, so it exits with status 0.
  4. Parent watch: PDEATHSIG kills the worker when the thread that started it dies; as a second line,
     the worker checks os.getppid() whenever its pipe is idle for a second, and exits when the pipe reaches
     EOF (the consumer closed it or died).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection

from workers.ring import RingLayout, ShmRing
from workers.sampling import BatchRecipe

_PR_SET_PDEATHSIG = 1
_IDLE_POLL_S = 1.0
DEFAULT_NICE = 5  # WorkerPool's default, the same as the daemon setting workers.nice; see run_in_background


def run_in_background(nice: int) -> None:
    """Lower this process below the training process that it feeds by ``nice`` (0: leave it as it is).

    SCHED_BATCH (Linux): a worker woken by a request does not preempt the trainer on its core (the default policy
    runs the just-woken worker at once, stalling the Python thread between two steps or one of torch's intra-op
    threads mid-step); nice 5: when both want a core, the trainer gets about three times the share. A worker needs
    a few percent of a core (a unet batch of 8 crops is about 1 ms), so it is not starved: the consumer's data
    wait would show it. Settings: ``workers.nice``.
    """
    if nice <= 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    try:
        os.nice(nice)
    except OSError:
        pass


def arm_parent_death_signal() -> None:
    """Ask Linux to SIGKILL us when our parent dies; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # no prctl: the getppid watch below still ends the worker


def worker_main(recipe: BatchRecipe, seed: int, ring_name: str, layout: RingLayout, conn: Connection,
                parent_pid: int, nice: int) -> None:
    """Entry point of a worker process (see the protocol note at the top of this module)."""
    arm_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        return
    run_in_background(nice)
    ring = ShmRing.attach(ring_name, layout)
    # The volumes are opened by the first make_batch, in this process: a failure to open them is then
    # reported to the consumer as an "error" reply with its traceback, not a silent exit.
    try:
        _serve(recipe, seed, ring, conn, parent_pid)
    finally:
        conn.close()


def _serve(recipe: BatchRecipe, seed: int, ring: ShmRing, conn: Connection, parent_pid: int) -> None:
    while True:
        try:
            if not conn.poll(_IDLE_POLL_S):
                if os.getppid() != parent_pid:
                    return
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the consumer is gone
        if msg is None:
            return
        epoch, k, slot = msg
        t0 = time.perf_counter()
        try:
            x, y = ring.arrays(slot)
            recipe.make_batch(seed, epoch, k, x, y)
            reply = ("done", epoch, k, slot, time.perf_counter() - t0)
        except Exception:  # any recipe failure is reported to the consumer with its traceback
            reply = ("error", epoch, k, slot, traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
