"""Data-parallel training (train.distributed) through a real seisd: 2 Gloo ranks against 1 process.

The same job (same seed, same global batch of 16) runs once with world_size 1 and once with world_size 2; each rank
of the second makes 8 rows of every batch, through its own worker pool. The model has no batch norm and no dropout,
so the two runs differ only by the order of float sums: the per-step losses agree within 1e-4 (relative), and the
final weights within 1e-4.
With batch norm (per-rank statistics on CPU) the curves only stay close; that case is checked with a looser bound.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from tests.harness import RunningDaemon, wait_for, wait_state

EXACT_MODEL = {"name": "patchcnn", "params": {"filters": [8, 8], "norm": "none", "dropout": 0.0}}


def job(output: str, world: int, *, model: dict | None = None, epochs: int = 2, batches: int = 6,
        workers: int = 0, **train: Any) -> dict[str, Any]:
    return {"kind": "train", "output": output,
            "data": {"survey": "demo", "crop": {"size": [15, 15]}, "batch_size": 16, "batches_per_epoch": batches,
                     "val_batches": 2, "split": {"block": 4}, "workers": workers},
            "model": model or EXACT_MODEL,
            "train": {"epochs": epochs, "seed": 3, "checkpoint_every_steps": 4, "progress_interval_s": 0.1,
                      "early_stop": {"enabled": False}, "distributed": {"world_size": world, "backend": "gloo"},
                      **train}}


def run(d: RunningDaemon, spec: dict[str, Any]) -> dict[str, Any]:
    record = d.client.wait(d.client.submit(spec)["id"], timeout=180)
    assert record["state"] == "succeeded", record["error"]
    return record


def losses(record: dict[str, Any]) -> np.ndarray:
    with h5py.File(Path(record["dir"]) / "summary.h5", "r") as h5:
        assert list(h5["steps/step"][:]) == list(range(len(h5["steps/step"])))
        return h5["steps/loss"][:]


def weights(d: RunningDaemon, name: str) -> dict[str, np.ndarray]:
    with h5py.File(d.home / "models" / f"{name}.h5", "r") as h5:
        return {k: h5["weights"][k][()] for k in h5["weights"]}


@pytest.fixture(scope="module")
def single(demo: RunningDaemon) -> dict[str, Any]:
    return run(demo, job("single", 1))


def test_two_gloo_ranks_follow_the_single_process_loss_curve(demo: RunningDaemon, single: dict) -> None:
    double = run(demo, job("double", 2, workers=1))  # each rank has its own pool making its rows
    a, b = losses(single), losses(double)
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    wa, wb = weights(demo, "single"), weights(demo, "double")
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], rtol=1e-4, atol=1e-5, err_msg=k)
    result = double["result"]
    assert result["samples"] == single["result"]["samples"] == 12 * 16  # samples count the global batch
    assert ((Path(double["dir"]) / "checkpoints" / "last.pt").is_file()
            and (demo.home / "models" / "double.h5").is_file())
    assert not list((Path(double["dir"]) / "rendezvous").iterdir())  # the rendezvous file is removed


def test_batch_norm_model_stays_close_to_one_process(demo: RunningDaemon) -> None:
    bn = {"name": "patchcnn", "params": {"filters": [8, 8], "dropout": 0.0}}  # norm: batch (per rank on CPU)
    a = losses(run(demo, job("bn1", 1, model=bn)))
    b = losses(run(demo, job("bn2", 2, model=bn)))
    assert abs(a[0] - b[0]) < 0.05 * a[0]  # the same weights and rows; only the batch statistics differ
    assert np.mean(np.abs(a - b)) < 0.15 * np.mean(a)


def test_uneven_batch_split_and_bad_backend_are_refused_at_submit(demo: RunningDaemon) -> None:
    from client.api import SeisdError

    cases = [({"world_size": 3}, "data.batch_size: 16 does not split evenly over train.distributed.world_size 3"),
             ({"backend": "mpi"}, "train.distributed.backend: expected one of auto, gloo, nccl, got 'mpi'"),
             ({"world_size": 0}, "train.distributed.world_size: expected 1..64, got 0"),
             ({"ranks": 2}, "train.distributed.ranks: unknown key")]
    before = len(demo.client.jobs())
    for change, expected in cases:
        bad = job("refused", 2)
        bad["train"]["distributed"].update(change)
        with pytest.raises(SeisdError) as err:
            demo.client.submit(bad)
        assert expected in str(err.value)
    assert len(demo.client.jobs()) == before


def test_cancel_and_stop_after_epoch_reach_every_rank(demo: RunningDaemon) -> None:
    c = demo.client
    job_id = c.submit(job("cancelled2", 2, epochs=50, batches=100))["id"]
    wait_for(lambda: any(e["data"].get("step", 0) >= 3 for e in c.job_events(job_id) if e["type"] == "job.progress"),
             timeout=90, what="training steps")
    c.cancel(job_id)
    assert wait_state(c, job_id, timeout=60)["state"] == "cancelled"
    assert not (demo.home / "models" / "cancelled2.h5").exists()
    job_id = c.submit(job("stopped2", 2, epochs=50, batches=10))["id"]
    wait_for(lambda: any(e["data"].get("step", 0) >= 2 for e in c.job_events(job_id) if e["type"] == "job.progress"),
             timeout=90, what="training steps")
    assert c.call("stop_after_epoch", id=job_id) == {"stopping": True}
    record = wait_state(c, job_id, timeout=90)
    assert record["state"] == "succeeded", record["error"]
    assert record["result"]["stopped"] == "stop_after_epoch" and record["result"]["epoch"] < 50


def test_rank_shares_of_a_batch_are_its_rows(tmp_path: Path) -> None:
    """The rows each rank makes, stacked, are the single-process batch (augmentation included)."""
    from workers.augment import Augmentation
    from workers.crops import CropSpec
    from workers.sampling import BatchRecipe, PickSampler, RawVolume
    from daemon.executor.training.distributed import share_recipe
    from daemon.executor.training.job_data import make_batch

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(12, 12, 12)).astype(np.float32)
    path = tmp_path / "volume.f32"
    vol.tofile(path)
    picks = rng.integers(0, 12, size=(20, 3))
    recipe = BatchRecipe(volumes=(RawVolume(str(path), vol.shape),), crop=CropSpec((5, 5), "inline"),
                         sampler=PickSampler(picks, rng.integers(0, 3, 20)), batch_size=8, batches_per_epoch=2,
                         augment=Augmentation(p_flip=0.5, p_noise=0.5, p_shift=0.5))
    whole = make_batch(recipe, 4, 1, 1)
    parts = [make_batch(share_recipe(recipe, r, 4), 4, 1, 1) for r in range(4)]
    assert all(p[0].shape[0] == 2 for p in parts)
    assert np.array_equal(np.concatenate([p[0] for p in parts]), whole[0].numpy())
    assert np.array_equal(np.concatenate([p[1] for p in parts]), whole[1].numpy())


def test_ranks_share_the_executors_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """N CPU ranks share out OMP_NUM_THREADS where the daemon's environment sets it, else the machine's cores."""
    import os

    from daemon.executor.training.distributed import rank_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert [rank_threads(w) for w in (1, 2, 4, 8)] == [6, 3, 1, 1]
    monkeypatch.delenv("OMP_NUM_THREADS")
    cores = os.cpu_count() or 1
    assert rank_threads(1) == cores and rank_threads(2) == max(1, cores // 2) and rank_threads(cores * 2) == 1


def test_time_budget_stops_every_rank_together(demo: RunningDaemon) -> None:
    record = run(demo, job("budget2", 2, epochs=50, batches=4, max_minutes=1e-3))
    assert record["result"]["stopped"] == "time_limit" and record["result"]["epoch"] == 1
    assert (demo.home / "models" / "budget2.h5").is_file()
