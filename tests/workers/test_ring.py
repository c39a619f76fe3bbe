"""ShmRing: slots are views of one shared segment; batches are zero-copy tensors over them."""
from __future__ import annotations

import os

import numpy as np
import pytest

from workers.ring import RingLayout, ShmRing
from workers.staging import Batch


@pytest.fixture()
def ring():
    r = ShmRing.create(RingLayout(3, (2, 1, 4, 5), (2,)), owner_pid=os.getpid())
    yield r
    r.close()


def test_two_mappings_share_the_slot_memory(ring: ShmRing) -> None:
    other = ShmRing.attach(ring.name, ring.layout)
    x, y = other.arrays(2)
    x[...] = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    y[...] = [7, -1]
    x2, y2 = ring.arrays(2)
    np.testing.assert_array_equal(x2, x)
    assert y2.tolist() == [7, -1]
    assert not ring.arrays(1)[0].any(), "slots must not overlap"
    other.close()
    assert (ring.segment.size >= ring.layout.total_bytes)


def test_slot_bookkeeping(ring: ShmRing) -> None:
    taken = [ring.acquire() for _ in range(3)]
    assert sorted(taken) == [0, 1, 2] and ring.acquire() is None
    ring.release(taken[0])
    with pytest.raises(ValueError, match="released twice"):
        ring.release(taken[0])
    with pytest.raises(IndexError):
        ring.arrays(3)


def test_batch_tensors_view_the_slot_without_copy(ring: ShmRing) -> None:
    slot = ring.acquire()
    x, y = ring.arrays(slot)
    batch = Batch.from_slot(0, 5, slot, x, y, ring.release)
    assert batch.x.data_ptr() == x.ctypes.data and batch.y.data_ptr() == y.ctypes.data
    x[0, 0, 0, 0] = 3.5
    assert batch.x[0, 0, 0, 0].item() == 3.5
    with batch:
        pass
    assert batch.released and ring.n_free == 3
    batch.release()  # idempotent
    assert ring.n_free == 3


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_staging_copies_and_frees_the_slot(ring: ShmRing) -> None:
    from workers.staging import CudaStager

    stager = CudaStager("cuda:0", ring.layout)
    for round_ in range(4):  # reuse the pinned buffers: each copy must finish before its buffer is rewritten
        slot = ring.acquire()
        x, y = ring.arrays(slot)
        x[...] = round_
        y[...] = round_
        batch = stager.stage(0, round_, slot, x, y, ring.release)
        assert batch.x.is_cuda and ring.n_free == 3
        assert float(batch.x.float().mean()) == round_ and int(batch.y.sum()) == 2 * round_
