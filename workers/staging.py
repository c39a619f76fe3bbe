"""Consumer side of a ring slot: the Batch handed to the user, and optional pinned staging to a GPU.

Only the consumer imports this module (it imports torch); workers never do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from workers.ring import RingLayout


@dataclass
class Batch:
    """Batch ``index`` of ``epoch``. On CPU, ``x``/``y`` view the shared slot: release() before reuse.

    After release() the slot may be overwritten by the next batch, so copy anything you keep.
    Usable as a context manager (``with batch: ...`` releases at the end).
    """

    epoch: int
    index: int
    slot: int
    x: torch.Tensor
    y: torch.Tensor
    _release: Callable[[int], None] | None = None

    @classmethod
    def from_slot(cls, epoch: int, k: int, slot: int, x: np.ndarray, y: np.ndarray,
                  release: Callable[[int], None]) -> "Batch":
        """Zero-copy tensors over the slot's numpy views."""
        return cls(epoch, k, slot, torch.from_numpy(x), torch.from_numpy(y), release)

    def release(self) -> None:
        """Give the slot back to the ring (idempotent)."""
        if self._release is not None:
            release, self._release = self._release, None
            release(self.slot)

    @property
    def released(self) -> bool:
        return self._release is None

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CudaStager:
    """Copy a slot into page-locked memory, free the slot at once, then copy to the GPU asynchronously.

    One pinned buffer pair per ring slot; an event per buffer makes sure the previous asynchronous copy out
    of a buffer has finished before the buffer is overwritten.
    """

    def __init__(self, device: str, layout: RingLayout) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device=None for CPU")
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self.x = [torch.empty(layout.x_shape, dtype=torch.float32).pin_memory() for _ in range(layout.n_slots)]
        self.y = [torch.empty(layout.y_shape, dtype=torch.int64).pin_memory() for _ in range(layout.n_slots)]
        self.events: list[torch.cuda.Event | None] = [None] * layout.n_slots

    def stage(self, epoch: int, k: int, slot: int, x: np.ndarray, y: np.ndarray,
              release: Callable[[int], None]) -> Batch:
        """A Batch whose tensors live on the device; the ring slot is already released."""
        event = self.events[slot]
        if event is not None:
            event.synchronize()
        self.x[slot].numpy()[...] = x
        self.y[slot].numpy()[...] = y
        release(slot)
        with torch.cuda.stream(self.stream):
            xd = self.x[slot].to(self.device, non_blocking=True)
            yd = self.y[slot].to(self.device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self.stream)
        self.events[slot] = ev
        # The default stream (where the model runs) must wait for the copy before using the tensors.
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        xd.record_stream(torch.cuda.current_stream(self.device))
        yd.record_stream(torch.cuda.current_stream(self.device))
        return Batch(epoch, k, slot, xd, yd, None)
