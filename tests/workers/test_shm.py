"""Shared-memory hygiene: pid-named segments, free-space check, clean close, and the sweep after a SIGKILL."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from workers.crops import CropSpec
from workers.pool import WorkerPool
from workers.ring import RingLayout, ShmRing
from workers.sampling import BatchRecipe, PickSampler, RawVolume
from workers.shm import (SHM_DIR, ShmSegment, ShmSpaceError, creator_pid_of, list_segments, owner_pid_of,
                         pid_alive, segment_name, sweep_orphans)

ROOT = Path(__file__).resolve().parents[2]
# Our own prefix, so a daemon test running beside us (which sweeps "seisd") cannot take our orphans first.
PREFIX = "seisdtestshm"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=10)
    return proc.pid


def _recipe(tmp_path: Path, batch_size: int = 4) -> BatchRecipe:
    shape = (10, 12, 14)
    path = tmp_path / "v.f32"
    np.zeros(shape, np.float32).tofile(path)
    return BatchRecipe((RawVolume(str(path), shape),), CropSpec((8, 8), "inline"),
                       PickSampler(np.array([[5, 6, 7]]), np.array([0])), batch_size, 3)


def test_segment_names_carry_the_owner_pid() -> None:
    name = segment_name(4242, "ring")
    assert name.startswith("seisd-4242-") and owner_pid_of(name) == 4242
    assert owner_pid_of("seisd-notapid-x-ring") is None and owner_pid_of("other-1-x-ring") is None


def test_sweep_removes_dead_owners_only() -> None:
    dead, alive = _dead_pid(), ShmSegment.create(segment_name(1, "t", PREFIX), 4096)
    orphan = ShmSegment.create(segment_name(dead, "t", PREFIX), 4096)
    try:
        removed = sweep_orphans(PREFIX)
        assert orphan.name in removed and alive.name not in removed
        assert not (SHM_DIR / orphan.name).exists() and (SHM_DIR / alive.name).exists()
    finally:
        orphan.buffer.close()
        alive.close()


def test_sweep_removes_segments_of_a_dead_creator_while_the_owner_lives() -> None:
    """An executor (the creator) killed while its daemon (the owner) runs on: its ring must not stay behind."""
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from workers.shm import ShmSegment, segment_name
        seg = ShmSegment.create(segment_name({os.getpid()}, "ring", {PREFIX!r}), 4096)
        print(seg.name, flush=True)
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    name = proc.stdout.strip()
    assert proc.returncode == -9 and (SHM_DIR / name).exists(), proc.stderr
    assert owner_pid_of(name, PREFIX) == os.getpid() and creator_pid_of(name, PREFIX) != os.getpid()
    assert name in sweep_orphans(PREFIX)
    assert not (SHM_DIR / name).exists()
    mine = ShmSegment.create(segment_name(os.getpid(), "ring", PREFIX), 4096)
    try:
        assert mine.name not in sweep_orphans(PREFIX)  # owner and creator alive: kept
    finally:
        mine.close()


def test_too_small_dev_shm_is_a_clear_error(tmp_path, monkeypatch) -> None:
    layout = RingLayout(8, (64, 8, 128, 128), (64,))  # ~268 MB, far above Docker's 64 MB default
    monkeypatch.setenv("SEISD_SHM_FREE_BYTES", str(64 * 2**20))
    with pytest.raises(ShmSpaceError, match=r"needs 268,4\d\d,\d\d\d bytes.*67,108,864 bytes free.*--shm-size") as e:
        ShmRing.create(layout, owner_pid=4242)
    assert e.value.needed == layout.total_bytes and e.value.free == 64 * 2**20
    monkeypatch.delenv("SEISD_SHM_FREE_BYTES")
    before = set(list_segments())
    with pytest.raises(ShmSpaceError, match="smaller batch size or fewer ring slots"):
        WorkerPool(_recipe(tmp_path, batch_size=4096), ring_slots=8, shm_free_bytes=10 * 2**20)
    assert set(list_segments()) == before


def test_clean_close_leaves_no_segment(tmp_path) -> None:
    pool = WorkerPool(_recipe(tmp_path), n_workers=1)
    name = pool.segment_name
    assert owner_pid_of(name) is not None and (SHM_DIR / name).exists()
    for batch in pool.epoch(0):
        batch.release()
    pool.close()
    assert not (SHM_DIR / name).exists()


CONSUMER = """
import sys, time
import numpy as np
from workers.crops import CropSpec
from workers.pool import WorkerPool
from workers.sampling import BatchRecipe, PickSampler, RawVolume

if __name__ == "__main__":
    recipe = BatchRecipe((RawVolume(sys.argv[1], (10, 12, 14)),), CropSpec((8, 8), "inline"),
                         PickSampler(np.array([[5, 6, 7]]), np.array([0])), 4, 1000)
    pool = WorkerPool(recipe, n_workers=2, prefix=sys.argv[2])
    it = pool.epoch(0)
    next(it).release()
    print(pool.segment_name, *pool.worker_pids(), flush=True)
    time.sleep(600)
"""


def test_sigkilled_consumer_leaves_nothing_after_sweep(tmp_path) -> None:
    np.zeros((10, 12, 14), np.float32).tofile(tmp_path / "v.f32")
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent(CONSUMER))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "v.f32"), PREFIX], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    if not select.select([proc.stdout], [], [], 60)[0]:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail("the consumer printed no segment name within 60 s")
    name, *workers = proc.stdout.readline().split()
    proc.kill()
    proc.wait(timeout=10)  # reaped: its pid is now dead, as after a daemon crash
    assert (SHM_DIR / name).exists(), "SIGKILL gives no chance to clean up; the sweep must do it"
    deadline = time.monotonic() + 10  # workers die by PDEATHSIG; allow slow CI machines to reap them
    while any(pid_alive(int(w)) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(int(w)) for w in workers), "workers outlived their consumer"
    assert name in sweep_orphans(PREFIX)
    assert not (SHM_DIR / name).exists()
