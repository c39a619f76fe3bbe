"""WorkerPool: the same batches whatever the worker count, across live resizes and after a worker is killed."""
from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from workers.augment import Augmentation
from workers.crops import CropSpec
from workers.pool import WorkerError, WorkerPool
from workers.ring import RingExhaustedError
from workers.sampling import BatchRecipe, PickSampler, RawVolume

N_BATCHES = 16


def _recipe(path: str, shape: tuple[int, int, int], batches: int = N_BATCHES) -> BatchRecipe:
    rng = np.random.default_rng(5)
    picks = np.stack([rng.integers(0, s, 60) for s in shape], axis=1)
    return BatchRecipe(
        volumes=(RawVolume(path, shape),), crop=CropSpec((12, 12), "inline"),
        sampler=PickSampler(picks, rng.integers(0, 4, 60)), batch_size=6, batches_per_epoch=batches,
        context=1, norm=((0.0, 2.0),),
        augment=Augmentation(p_flip=0.5, p_swap=0.5, p_polarity=0.5, p_noise=0.5, p_shift=0.5))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> BatchRecipe:
    shape = (24, 32, 40)
    path = tmp_path_factory.mktemp("vol") / "seismic.f32"
    np.random.default_rng(0).standard_normal(shape).astype(np.float32).tofile(path)
    return _recipe(str(path), shape)


def _reference(recipe: BatchRecipe, epoch: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches made in this process, with no pool at all."""
    out = []
    for k in range(recipe.batches_per_epoch):
        x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
        recipe.make_batch(seed, epoch, k, x, y)
        out.append((x, y))
    return out


def _collect(pool: WorkerPool, epoch: int, actions: dict | None = None, start: int = 0) -> list:
    got = []
    for batch in pool.epoch(epoch, start=start):
        with batch:
            got.append((batch.index, batch.x.numpy().copy(), batch.y.numpy().copy()))
        if actions and batch.index in actions:
            actions[batch.index]()
    return got


def _assert_same(got: list, ref: list, start: int = 0) -> None:
    assert [k for k, _, _ in got] == list(range(start, len(ref)))
    for k, x, y in got:
        np.testing.assert_array_equal(x, ref[k][0], err_msg=f"x of batch {k}")
        np.testing.assert_array_equal(y, ref[k][1], err_msg=f"y of batch {k}")


def test_one_and_three_workers_give_the_same_batches(recipe: BatchRecipe) -> None:
    ref0, ref1 = _reference(recipe, 0), _reference(recipe, 1)
    assert not np.array_equal(ref0[0][0], ref1[0][0]), "epochs must differ"
    with WorkerPool(recipe, n_workers=1, seed=0) as one:
        _assert_same(_collect(one, 0), ref0)
    with WorkerPool(recipe, n_workers=3, seed=0) as three:
        _assert_same(_collect(three, 0), ref0)
        _assert_same(_collect(three, 1), ref1)
        _assert_same(_collect(three, 1, start=9), ref1, start=9)
        stats = three.stats()
    assert stats["delivered"] == 2 * N_BATCHES + (N_BATCHES - 9)
    assert stats["batches_per_s"] > 0 and 0 <= stats["consumer_wait_fraction"] <= 1
    assert len(stats["worker_busy_fraction"]) == 3
    assert all(0 <= f <= 1 for f in stats["worker_busy_fraction"].values())


def test_live_resize_one_three_two_keeps_the_stream(recipe: BatchRecipe) -> None:
    ref = _reference(recipe, 2, seed=7)
    with WorkerPool(recipe, n_workers=1, seed=7) as pool:
        got = _collect(pool, 2, {3: lambda: pool.resize(3), 9: lambda: pool.resize(2)})
        _assert_same(got, ref)
        _collect(pool, 3)  # the resize is applied while iterating; one more epoch settles it
        assert pool.stats()["n_workers"] == 2 and len(pool.worker_pids()) == 2
        assert pool.stats()["restarts"] == 0


def test_worker_killed_mid_stream_is_replaced_and_batch_remade(recipe: BatchRecipe) -> None:
    ref = _reference(recipe, 0, seed=3)
    with WorkerPool(recipe, n_workers=2, seed=3, depth=2) as pool:
        victims: list[int] = []

        def freeze_then_kill() -> None:
            # SIGSTOP first, so the victim surely holds work when SIGKILL arrives (a quick worker may be idle).
            victims.append(pool.worker_pids()[0])
            os.kill(victims[-1], signal.SIGSTOP)
            threading.Timer(0.3, os.kill, (victims[-1], signal.SIGKILL)).start()

        def kill_now() -> None:
            victims.append(pool.worker_pids()[-1])
            os.kill(victims[-1], signal.SIGKILL)

        _assert_same(_collect(pool, 0, {2: freeze_then_kill, 8: kill_now}), ref)
        _assert_same(_collect(pool, 1), _reference(recipe, 1, seed=3))
        stats = pool.stats()
        assert stats["restarts"] == 2 and stats["remade"] >= 1
        assert not set(victims) & set(pool.worker_pids())
        assert pool.ring.n_free == pool.ring.layout.n_slots


def test_a_worker_alive_but_stuck_on_a_batch_is_killed_and_its_batch_remade(recipe: BatchRecipe) -> None:
    """A stopped worker (as one whose read hangs on a dead mount) holds its batch: past stall_s the pool kills it,
    starts another and remakes the batch, so the stream is the same as without it."""
    ref = _reference(recipe, 0, seed=5)
    with WorkerPool(recipe, n_workers=2, seed=5, depth=2, stall_s=1.0) as pool:
        victims: list[int] = []

        def freeze() -> None:
            victims.append(pool.worker_pids()[0])
            os.kill(victims[-1], signal.SIGSTOP)  # alive, never answers

        _assert_same(_collect(pool, 0, {2: freeze}), ref)
        stats = pool.stats()
        assert stats["stalls"] == 1 and stats["restarts"] == 1 and stats["remade"] >= 1
        assert victims[0] not in pool.worker_pids() and len(pool.worker_pids()) == 2
        assert pool.ring.n_free == pool.ring.layout.n_slots


def test_stopping_early_frees_the_ring_for_the_next_epoch(recipe: BatchRecipe) -> None:
    with WorkerPool(recipe, n_workers=2, ring_slots=3) as pool:
        for batch in pool.epoch(0):
            batch.release()
            if batch.index == 1:
                break
        assert pool.ring.n_free == 3
        held = []
        with pytest.raises(RingExhaustedError, match="release batches"):
            for batch in pool.epoch(0):
                held.append(batch)  # never released: the ring runs dry
        assert len(held) == 3
        for batch in held:
            batch.release()
        _assert_same(_collect(pool, 0), _reference(recipe, 0))


def test_recipe_failure_names_the_batch_and_the_cause(tmp_path) -> None:
    recipe = _recipe(str(tmp_path / "missing.f32"), (8, 8, 8), batches=2)
    with WorkerPool(recipe, n_workers=1) as pool:
        cause = r"batch \d of epoch 0(.|\n)*volume file .*missing\.f32 does not exist"
        with pytest.raises(WorkerError, match=cause):
            _collect(pool, 0)


def test_close_is_idempotent_and_refuses_new_epochs(recipe: BatchRecipe) -> None:
    pool = WorkerPool(recipe, n_workers=1)
    pool.close()
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(iter(pool.epoch(0)))


def test_real_f3_segy_through_the_pool(shared_data, tmp_path) -> None:
    segyio = pytest.importorskip("segyio")
    cube = segyio.tools.cube(str(shared_data / "segyio" / "f3.sgy")).astype(np.float32)
    path = tmp_path / "f3.f32"
    cube.tofile(path)
    recipe = _recipe(str(path), cube.shape, batches=6)
    with WorkerPool(recipe, n_workers=2, seed=11) as pool:
        _assert_same(_collect(pool, 0), _reference(recipe, 0, seed=11))


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")
def test_workers_run_below_the_consumer(recipe: BatchRecipe) -> None:
    """Workers take the nice value asked for and SCHED_BATCH (they never preempt the training thread); nice 0
    leaves them as the consumer is. Both make the same batches."""
    ref = _reference(recipe, 0)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    for nice, policy in ((7, os.SCHED_BATCH), (0, os.sched_getscheduler(0))):
        with WorkerPool(recipe, n_workers=2, seed=0, nice=nice) as pool:
            _assert_same(_collect(pool, 0), ref)  # the workers have started and served
            for pid in pool.worker_pids():
                assert os.getpriority(os.PRIO_PROCESS, pid) == min(own + nice, 19)
                assert os.sched_getscheduler(pid) == policy
