"""WorkerPool: N spawned workers fill a shared-memory ring; the consumer gets batches in order, zero-copy.

NOTE [dispatch and ordering]
  The consumer owns all bookkeeping and runs it inside ``epoch()``'s loop, so no thread touches a pipe
  but the consumer's. Pending batch indices are kept sorted; the dispatcher gives the smallest pending k
  and a free slot to the least-loaded worker (at most ``depth`` items per worker in flight). Results come
  back in any order and wait in ``ready`` until every smaller k has been delivered.

NOTE [determinism]
  Batch (e, k) is made by ``recipe.make_batch(seed, e, k, ...)``, whose randomness is seeded by
  (seed, e, k) alone. Which worker made it, how many there were, and whether a first attempt died
  cannot change its content.

NOTE [failure and shutdown]
  * A worker that dies (its sentinel fires or its pipe reaches EOF): any replies already in its pipe are
    taken first, then its remaining items go back to ``pending`` and their slots to the free list, and a
    new worker is started. Nothing is lost or made twice from the consumer's view.
  * A recipe that raises: the worker reports the traceback and stays alive; ``epoch()`` raises
    WorkerError naming (epoch, k).
  * The consumer stops an epoch early (break, exception): the generator's ``finally`` waits for items in
    flight and frees their slots, so the next epoch starts with a clean ring.
  * ``close()`` (idempotent; also run at interpreter exit or when the pool is collected): retire
    messages, a short join, SIGKILL for stragglers, then the segment is unlinked.
  * The consumer is SIGKILLed: workers die by PDEATHSIG (or notice EOF / a new parent); the segment stays
    in /dev/shm until ``sweep_orphans()`` removes it because its owner pid is dead.
"""
from __future__ import annotations

import bisect
import contextlib
import multiprocessing as mp
import os
import sys
import types
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Iterator

from workers.ring import RingExhaustedError, RingLayout, ShmRing
from workers.sampling import BatchRecipe
from workers.shm import DEFAULT_PREFIX
from workers.staging import Batch, CudaStager
from workers.worker import DEFAULT_NICE, worker_main

_JOIN_TIMEOUT_S = 5.0
_WAIT_TICK_S = 0.1  # how often the loop looks at resize requests while waiting
_MAX_DEATHS_IN_A_ROW = 3  # deaths with no batch made in between: something is broken, not unlucky
DEFAULT_STALL_S = 300.0  # a live worker that has held a batch this long (a hung read) is killed and replaced


_SPAWN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start children without re-running the consumer's main module.

    Spawn normally re-imports ``__main__`` in every child; for a training executor that means importing torch
    (seconds, hundreds of MB) into a process that needs only numpy. Everything a worker needs lives in
    workers.*, so during ``start()`` we show multiprocessing a bare ``__main__`` with no file to re-run.
    """
    with _SPAWN_LOCK:
        real = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = real


class WorkerError(RuntimeError):
    """A worker's recipe raised while making a batch."""


class PoolClosedError(RuntimeError):
    """The pool was used after close()."""


@dataclass
class _Worker:
    wid: int
    proc: Any
    conn: Connection
    started: float
    inflight: dict[tuple[int, int], int] = field(default_factory=dict)
    waiting_since: float = 0.0  # since when it holds items without a reply (its last reply, or the send to it idle)
    retiring: bool = False
    dead: bool = False
    stalled: bool = False  # killed for holding a batch past stall_s
    busy_s: float = 0.0


class _PoolState:
    """Processes, pipes and the ring; separate from WorkerPool so a finalizer can close it."""

    def __init__(self, ring: ShmRing) -> None:
        self.ring = ring
        self.workers: dict[int, _Worker] = {}
        self.closed = False

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in self.workers.values():
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for w in self.workers.values():
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()
        self.workers.clear()
        self.ring.close()


DEFAULT_DEPTH = 2  # batches in flight per worker unless asked otherwise (what training runs with)


class WorkerPool:
    """Deterministic, resizable, self-healing batch stream over a shared-memory ring.

    ``owner_pid`` goes into the segment name (the daemon passes its own pid; standalone use leaves None for
    os.getpid()). ``device`` "cuda:N" stages each batch through pinned memory and copies it asynchronously.
    """

    def __init__(self, recipe: BatchRecipe, n_workers: int = 2, seed: int = 0, ring_slots: int = 8,
                 owner_pid: int | None = None, prefix: str = DEFAULT_PREFIX, depth: int = DEFAULT_DEPTH,
                 device: str | None = None, shm_free_bytes: int | None = None, nice: int = DEFAULT_NICE,
                 stall_s: float = DEFAULT_STALL_S) -> None:
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.recipe = recipe
        self.seed = int(seed)
        self.depth = max(1, depth)
        self.nice = int(nice)  # the workers' (workers.worker.run_in_background)
        self.stall_s = float(stall_s)  # a worker alive but silent on a batch this long is killed, its batch remade
        self._stalls = 0
        self._ctx = mp.get_context("spawn")
        self._layout = RingLayout(ring_slots, recipe.x_shape, recipe.y_shape)
        ring = ShmRing.create(self._layout, owner_pid or os.getpid(), prefix, shm_free_bytes)
        self._state = _PoolState(ring)
        self._finalizer = weakref.finalize(self, self._state.shutdown)
        self._stager = CudaStager(device, self._layout) if device and str(device).startswith("cuda") else None
        self._lock = threading.Lock()
        self._target = n_workers
        self._next_wid = 0
        self._restarts = 0
        self._remade = 0
        self._deaths_in_a_row = 0
        self._delivered = 0
        self._wait_s = 0.0
        self._startup_s = 0.0                # the wait for the first batch (spawning workers, opening volumes)
        self._first_at: float | None = None  # when the first batch was handed out
        self._t0 = time.perf_counter()
        self._epoch: int | None = None
        self._apply_resize()

    # -- public API ---------------------------------------------------------------------------------------
    @property
    def ring(self) -> ShmRing:
        return self._state.ring

    @property
    def segment_name(self) -> str:
        return self._state.ring.name

    def worker_pids(self) -> list[int]:
        """Pids of the live, non-retiring workers (for tests and `seisctl` status)."""
        return [w.proc.pid for w in self._state.workers.values() if not w.retiring]

    def resize(self, n: int) -> None:
        """Ask for ``n`` workers; applied by the consumer loop within a tick (thread-safe)."""
        if n < 1:
            raise ValueError(f"a pool needs at least one worker, got {n}")
        with self._lock:
            self._target = int(n)

    def epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Yield batches ``start .. stop-1`` of ``epoch`` in order. Release each batch when done with it."""
        stop = self.recipe.batches_per_epoch if stop is None else stop
        if self._state.closed:
            raise PoolClosedError("the worker pool is closed")
        if self._epoch is not None:
            raise RuntimeError("one epoch at a time: finish or close the previous epoch() iterator first")
        self._epoch = epoch
        pending = list(range(start, stop))
        ready: dict[int, int] = {}
        try:
            for k in range(start, stop):
                while k not in ready:
                    self._apply_resize()
                    self._dispatch(epoch, pending)
                    if k not in ready:
                        self._check_not_starved(k, ready)
                        t0 = time.perf_counter()
                        self._collect(epoch, pending, ready)
                        waited = time.perf_counter() - t0
                        if self._first_at is None:
                            self._startup_s += waited  # workers starting up: not the pipeline's steady rate
                        else:
                            self._wait_s += waited
                if self._first_at is None:
                    self._first_at = time.perf_counter()
                self._delivered += 1
                yield self._make_batch(epoch, k, ready.pop(k))
        finally:
            self._drain(ready)
            self._epoch = None

    def stats(self) -> dict:
        """Batches per second, each worker's busy fraction, and the consumer's wait fraction.

        ``consumer_wait_fraction`` is the share of the time since the first batch that the consumer waited for
        data; the wait for the first batch (workers starting up) is ``startup_wait_s``, apart, as it does not
        grow with the job.
        """
        now = time.perf_counter()
        elapsed = max(now - self._t0, 1e-9)
        running = max(now - self._first_at, 1e-9) if self._first_at is not None else elapsed
        busy = {w.wid: round(w.busy_s / max(now - w.started, 1e-9), 4) for w in self._state.workers.values()}
        return {
            "batches_per_s": self._delivered / elapsed,
            "delivered": self._delivered,
            "consumer_wait_fraction": self._wait_s / running,
            "startup_wait_s": self._startup_s,
            "worker_busy_fraction": busy,
            "n_workers": len(self.worker_pids()),
            "target_workers": self._target,
            "restarts": self._restarts,
            "remade": self._remade,
            "stalls": self._stalls,  # workers killed for holding a batch past stall_s (counted in restarts too)
            "free_slots": self._state.ring.n_free,
        }

    def close(self) -> None:
        """Stop the workers and unlink the segment; safe to call twice."""
        self._finalizer()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers ------------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, name=f"seisd-worker-{self._next_wid}", daemon=True,
            args=(self.recipe, self.seed, self.segment_name, self._layout, child, os.getpid(), self.nice))
        with _main_module_hidden():
            proc.start()
        child.close()  # our copy; the worker holds its own, so EOF on ours means the worker is gone
        self._state.workers[self._next_wid] = _Worker(self._next_wid, proc, parent, time.perf_counter())
        self._next_wid += 1

    def _apply_resize(self) -> None:
        with self._lock:
            target = self._target
        active = [w for w in self._state.workers.values() if not w.retiring]
        for _ in range(target - len(active)):
            self._spawn()
        # Retire the newest first; each finishes the items it already holds, then exits.
        for w in sorted(active, key=lambda w: -w.wid)[: max(0, len(active) - target)]:
            w.retiring = True
            try:
                w.conn.send(None)
            except (BrokenPipeError, ConnectionResetError):
                pass  # already dead: _collect buries it

    def _dispatch(self, epoch: int, pending: list[int]) -> None:
        ring = self._state.ring
        while pending:
            active = [w for w in self._state.workers.values()
                      if not (w.retiring or w.dead) and len(w.inflight) < self.depth]
            if not active:
                return
            slot = ring.acquire()
            if slot is None:
                return
            w = min(active, key=lambda w: (len(w.inflight), w.wid))
            k = pending.pop(0)
            if not w.inflight:
                w.waiting_since = time.monotonic()
            w.inflight[(epoch, k)] = slot
            try:
                w.conn.send((epoch, k, slot))
            except (BrokenPipeError, ConnectionResetError):
                # Died since we last looked: take the item back; _collect buries the worker via its sentinel.
                del w.inflight[(epoch, k)]
                self._state.ring.release(slot)
                bisect.insort(pending, k)
                w.dead = True

    def _check_not_starved(self, k: int, ready: dict[int, int]) -> None:
        busy = sum(len(w.inflight) for w in self._state.workers.values())
        if busy == 0 and self._state.ring.n_free == 0:
            raise RingExhaustedError(
                f"waiting for batch {k} but all {self._layout.n_slots} ring slots are held "
                f"({len(ready)} ready ahead of it, the rest by the consumer): release batches after use, "
                "or create the pool with more ring_slots")

    def _collect(self, epoch: int | None, pending: list[int] | None, ready: dict[int, int]) -> None:
        """Wait one tick for replies or deaths and handle them."""
        workers = list(self._state.workers.values())
        objs = {w.conn: w for w in workers} | {w.proc.sentinel: w for w in workers}
        for obj in wait(list(objs), timeout=_WAIT_TICK_S):
            w = objs[obj]
            if w.wid not in self._state.workers:
                continue  # already handled through its other handle
            if obj is w.conn and self._take_replies(w, epoch, ready):
                continue
            if not w.proc.is_alive() or obj is not w.conn:
                self._bury(w, epoch, pending, ready)
        self._kill_stalled()

    def _kill_stalled(self) -> None:
        """A worker that is alive but has held an item past stall_s (a read hung on a dead mount, a stopped process)
        would hold the consumer for ever: kill it; its sentinel buries it on the next tick and its items are remade."""
        now = time.monotonic()
        for w in self._state.workers.values():
            if w.stalled or not w.inflight or now - w.waiting_since <= self.stall_s:
                continue
            w.stalled = True
            self._stalls += 1
            w.proc.kill()

    def _take_replies(self, w: _Worker, epoch: int | None, ready: dict[int, int]) -> bool:
        """Read every reply waiting in ``w``'s pipe; False when the pipe is at EOF."""
        try:
            while w.conn.poll():
                self._on_reply(w, w.conn.recv(), epoch, ready)
        except (EOFError, OSError):
            return False
        return True

    def _on_reply(self, w: _Worker, msg: tuple, epoch: int | None, ready: dict[int, int]) -> None:
        kind, e, k, slot, payload = msg
        w.inflight.pop((e, k), None)
        w.waiting_since = time.monotonic()
        if kind == "error":
            self._state.ring.release(slot)
            raise WorkerError(f"worker {w.wid} failed making batch {k} of epoch {e}:\n{payload}")
        w.busy_s += payload
        self._deaths_in_a_row = 0
        if e == epoch:
            ready[k] = slot
        else:
            self._state.ring.release(slot)

    def _bury(self, w: _Worker, epoch: int | None, pending: list[int] | None, ready: dict[int, int]) -> None:
        """Handle a worker that exited: keep its last replies, re-queue its unfinished items."""
        self._take_replies(w, epoch, ready)
        w.proc.join()
        w.conn.close()
        del self._state.workers[w.wid]
        for (e, k), slot in w.inflight.items():
            self._state.ring.release(slot)
            if pending is not None and e == epoch:
                bisect.insort(pending, k)
                self._remade += 1
        if not w.retiring:
            self._restarts += 1  # _apply_resize starts the replacement on the next turn
            self._deaths_in_a_row += 1
            if self._deaths_in_a_row >= _MAX_DEATHS_IN_A_ROW:
                why = f"killed after holding a batch for {self.stall_s:g} s" if w.stalled else \
                    f"exit code {w.proc.exitcode}"
                raise WorkerError(
                    f"{self._deaths_in_a_row} workers died in a row without making a batch (the last {why}). Check "
                    "the recipe's volume paths; under spawn, a script that creates the pool must guard its top level "
                    "with `if __name__ == '__main__':`")

    def _drain(self, ready: dict[int, int]) -> None:
        for slot in ready.values():
            self._state.ring.release(slot)
        ready.clear()
        while not self._state.closed and any(w.inflight for w in self._state.workers.values()):
            self._collect(None, None, ready)

    def _make_batch(self, epoch: int, k: int, slot: int) -> Batch:
        x, y = self._state.ring.arrays(slot)
        if self._stager is not None:
            return self._stager.stage(epoch, k, slot, x, y, self._state.ring.release)
        return Batch.from_slot(epoch, k, slot, x, y, self._state.ring.release)
