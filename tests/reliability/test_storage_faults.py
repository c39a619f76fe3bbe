"""A full disk: while importing a survey cache, while the job store is written, and under the checkpoint and model
file writers (daemon/executor/training/checkpoint.py atomic_write, daemon/executor/modelfile.py save_model_file). The
disk is a small tmpfs the test mounts (root only; skipped cleanly elsewhere). Expected: the job fails with the reason,
what was written before stays intact and readable, and seisd keeps running."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Callable

import pytest

from client.api import SeisdError
from tests.harness import RunningDaemon, steps_job, wait_state
from tests.reliability.homecheck import assert_alive, fill_disk

Mount = Callable[[Path, int], Path]


def test_full_disk_while_importing_fails_the_job_and_seisd_goes_on(tmp_path: Path, shared_data: Path,
                                                                   small_fs: Mount) -> None:
    home = tmp_path / "home"
    small_fs(home / "surveys", 96 << 10)   # the f3 cache needs about 130 KB
    with RunningDaemon(home) as d:
        job = d.client.submit({"kind": "import", "survey": "f3",
                               "segy": {"file": str(shared_data / "segyio" / "f3.sgy")}})
        done = wait_state(d.client, job["id"], timeout=60)
        assert done["state"] == "failed", done
        assert "No space left on device" in done["error"] and "f3" in done["error"], done["error"]
        assert_alive(d, "a full disk during an import")
        assert not (home / "surveys" / "f3" / "survey.json").exists()
        assert d.client.call("survey.list")["surveys"] == []
        ok = d.client.submit(steps_job(2))       # the next job runs as usual
        assert wait_state(d.client, ok["id"])["state"] == "succeeded"


def test_full_disk_under_the_job_store_keeps_seisd_running(tmp_path: Path, small_fs: Mount) -> None:
    """The whole home on a small disk that fills up while a job runs: progress events and the job's final state
    cannot be written. seisd must not die of SQLite's 'database or disk is full'; what was committed before
    stays readable."""
    home = small_fs(tmp_path / "home", 4 << 20)
    with RunningDaemon(home) as d:
        first = d.client.submit(steps_job(2))["id"]
        assert wait_state(d.client, first)["state"] == "succeeded"
        running = d.client.submit(steps_job(400, step_s=0.02))["id"]
        wait_state(d.client, running, "running")
        filler = fill_disk(home)
        time.sleep(2.0)                          # progress events and log lines hit the full disk
        try:
            d.client.submit(steps_job(2))
        except SeisdError as exc:                # refusing a submit on a full disk is fine, saying so clearly
            assert "full" in exc.message, exc.message
        assert_alive(d, "a full disk under the job store")
        filler.unlink()
        try:
            d.client.cancel(running)
        except SeisdError as exc:                # it may have ended already, of the full disk itself
            assert exc.code == "conflict" and "is failed" in exc.message, exc.message
        wait_state(d.client, running, timeout=30)
    db = sqlite3.connect(f"file:{home / 'seisd.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT state FROM jobs WHERE id=?", (first,)).fetchone() == ("succeeded",)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()


def test_a_job_that_ends_on_a_full_disk_shows_its_end_as_soon_as_the_store_is_writable(
        tmp_path: Path, small_fs: Mount) -> None:
    """The job fails of the full disk (its checkpoint write: ENOSPC) while its end cannot be written either. Once
    there is room again, `show` must give the job's own end, naming the full disk, within a second or so."""
    home = small_fs(tmp_path / "home", 4 << 20)
    with RunningDaemon(home) as d:
        running = d.client.submit(steps_job(400, step_s=0.02))["id"]
        wait_state(d.client, running, "running")
        filler = fill_disk(home)
        time.sleep(8.0)                          # longer than the daemon's periodic checks
        filler.unlink()
        freed = time.monotonic()
        done = wait_state(d.client, running, ("failed", "succeeded", "cancelled"), timeout=30)
        seen_after = time.monotonic() - freed
        assert done["state"] == "failed", done
        assert "No space left on device" in done["error"] and "could not be recorded" not in done["error"], done
        assert seen_after < 2.0, f"the end showed {seen_after:.1f} s after the disk had room again"
        assert_alive(d, "a job that ended on a full disk")


def test_atomic_checkpoint_write_on_a_full_disk_keeps_the_previous_one(tmp_path: Path, small_fs: Mount) -> None:
    torch = pytest.importorskip("torch")
    from daemon.executor.training.checkpoint import load_checkpoint, save_checkpoint

    disk = small_fs(tmp_path / "ckpt", 1 << 20)
    path = disk / "last.pt"
    save_checkpoint(path, {"step": 1, "weights": torch.zeros(1000)})
    fill_disk(disk, leave=8 << 10)
    with pytest.raises(Exception) as err:
        save_checkpoint(path, {"step": 2, "weights": torch.ones(200_000)})
    state = load_checkpoint(path)
    assert state["step"] == 1 and float(state["weights"].sum()) == 0.0
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "last.pt"], "a temporary file was left"
    # the job's error is this exception's text: it must say the disk is full (torch.save's own error does not)
    assert "No space left on device" in str(err.value), f"{type(err.value).__name__}: {err.value}"


def test_model_file_write_on_a_full_disk_keeps_the_previous_one(tmp_path: Path, small_fs: Mount) -> None:
    pytest.importorskip("torch")
    from daemon.executor.modelfile import ModelInfo, load_model_file, save_model_file
    from daemon.executor.models import build_model

    disk = small_fs(tmp_path / "models", 1 << 20)
    small = build_model("patchcnn", 1, 2, [8, 8], {})
    info = ModelInfo(name="patchcnn", params={}, in_channels=1, n_classes=2, input_shape=[8, 8])
    path = save_model_file(disk / "m.h5", small, info)
    before = path.read_bytes()
    fill_disk(disk, leave=8 << 10)
    bigger = build_model("patchcnn", 1, 2, [64, 64], {"filters": [64, 128, 256, 256]})
    with pytest.raises(OSError):
        save_model_file(disk / "m.h5", bigger, ModelInfo(name="patchcnn", params={"filters": [64, 128, 256, 256]},
                                                         in_channels=1, n_classes=2, input_shape=[64, 64]))
    assert path.read_bytes() == before
    model, got = load_model_file(path)
    assert got.input_shape == [8, 8]
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "m.h5"], "a temporary file was left"
