"""ShmRing: a fixed number of preallocated batch slots in one shared-memory segment.

Each slot holds one batch: ``x`` float32 [B, C, *crop] and ``y`` int64 [B] or [B, *crop]. Workers write a
slot in place; only the slot index travels between processes. The consumer owns the free list: it lends a
slot to a worker, gets the index back when the batch is made, hands views of the slot to the user, and takes
the slot back when the user releases the batch. Workers never allocate or free.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from workers.shm import DEFAULT_PREFIX, ShmSegment, segment_name

_ALIGN = 64  # cache-line alignment keeps slots from sharing lines between writers


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class RingExhaustedError(RuntimeError):
    """No free slot: the consumer holds every slot without releasing them."""


@dataclass(frozen=True)
class RingLayout:
    """Shapes of one slot and the number of slots; picklable, sent to workers to attach."""

    n_slots: int
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

    @property
    def x_bytes(self) -> int:
        return _aligned(int(np.prod(self.x_shape)) * 4)

    @property
    def y_bytes(self) -> int:
        return _aligned(int(np.prod(self.y_shape)) * 8)

    @property
    def slot_bytes(self) -> int:
        return self.x_bytes + self.y_bytes

    @property
    def total_bytes(self) -> int:
        return self.slot_bytes * self.n_slots


class ShmRing:
    """Slots over one segment. Create in the consumer (``create``), attach in workers (``attach``)."""

    def __init__(self, segment: ShmSegment, layout: RingLayout) -> None:
        self.segment = segment
        self.layout = layout
        # A stack: the slot released last is lent first, so a pool that needs only a few slots at a time keeps
        # reusing the same ones, still in the CPU caches, instead of cycling through the whole ring.
        self._free = list(reversed(range(layout.n_slots)))
        self._lock = threading.Lock()  # release() may come from the user's thread

    @classmethod
    def create(cls, layout: RingLayout, owner_pid: int, prefix: str = DEFAULT_PREFIX,
               free_bytes: int | None = None) -> "ShmRing":
        """Allocate the segment (checks /dev/shm free space first, raising ShmSpaceError)."""
        if layout.n_slots < 1:
            raise ValueError(f"a ring needs at least one slot, got {layout.n_slots}")
        name = segment_name(owner_pid, "ring", prefix)
        return cls(ShmSegment.create(name, layout.total_bytes, free_bytes), layout)

    @classmethod
    def attach(cls, name: str, layout: RingLayout) -> "ShmRing":
        """Map an existing ring by name (worker side)."""
        seg = ShmSegment.attach(name)
        if seg.size < layout.total_bytes:
            raise ValueError(f"segment {name!r} has {seg.size} bytes, layout needs {layout.total_bytes}")
        return cls(seg, layout)

    @property
    def name(self) -> str:
        return self.segment.name

    def arrays(self, slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Numpy views (no copy) of slot ``slot``: (x, y)."""
        lay = self.layout
        if not 0 <= slot < lay.n_slots:
            raise IndexError(f"slot {slot} out of range 0..{lay.n_slots - 1}")
        base = slot * lay.slot_bytes
        x = np.frombuffer(self.segment.buffer, np.float32, int(np.prod(lay.x_shape)), base)
        y = np.frombuffer(self.segment.buffer, np.int64, int(np.prod(lay.y_shape)), base + lay.x_bytes)
        return x.reshape(lay.x_shape), y.reshape(lay.y_shape)

    def acquire(self) -> int | None:
        """Take a free slot index, or None when all are lent out or held."""
        with self._lock:
            return self._free.pop() if self._free else None

    def release(self, slot: int) -> None:
        """Give a slot back to the free list."""
        with self._lock:
            if slot in self._free:
                raise ValueError(f"slot {slot} released twice")
            self._free.append(slot)

    @property
    def n_free(self) -> int:
        with self._lock:
            return len(self._free)

    def close(self) -> None:
        """Unmap (and unlink, in the owner)."""
        self.segment.close()
