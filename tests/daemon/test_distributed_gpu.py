"""Data-parallel training over several GPU slots of one machine.

The pure part runs everywhere: which CUDA device each rank sees, from the devices a job's slots hold. The end-to-end
part needs at least 2 CUDA devices and skips cleanly without them: a train job with world_size 2 takes two GPU
slots at once (both `busy` with the job in `devices`), rank r runs on the r-th, and the loss curve follows the
one-GPU run. It relies on the daemon's dispatch placing jobs through `Supervisor.placements` and `hold`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.common.devices import read_job_devices, write_job_devices
from daemon.executor.training.distributed import DistributedError, rank_visible_devices


def test_each_rank_sees_the_device_of_its_slot(tmp_path: Path) -> None:
    assert rank_visible_devices(tmp_path, "cuda:0", 2) == [None, None]  # nothing held: inherit, rank r on cuda:r
    write_job_devices(tmp_path, [3, 1])
    assert read_job_devices(tmp_path) == [3, 1]
    assert rank_visible_devices(tmp_path, "cuda:0", 2) == ["3", "1"]  # the executor's own slot first
    assert rank_visible_devices(tmp_path, "cpu", 2) == [None, None]   # CPU ranks ignore the record
    with pytest.raises(DistributedError, match="world_size 3 needs 3 CUDA devices; the job holds 2"):
        rank_visible_devices(tmp_path, "cuda:0", 3)
    (tmp_path / "devices.json").write_text("{broken")
    with pytest.raises(ValueError, match="not a device record"):
        read_job_devices(tmp_path)


def _cuda_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - any failure to reach CUDA means no GPU test here
        return 0


@pytest.mark.skipif(_cuda_count() < 2, reason="needs at least 2 CUDA devices")
def test_a_two_gpu_job_takes_two_slots_and_follows_the_one_gpu_curve(tmp_path: Path) -> None:
    from tests.daemon.test_distributed import job, losses
    from tests.daemon.test_train_job import import_demo
    from tests.harness import RunningDaemon, wait_for

    with RunningDaemon(tmp_path / "home", env={"SEISD_DEVICES": "[cuda:0, cuda:1]"}) as d:
        import_demo(d.client, tmp_path / "synth")
        one, two = job("gpu1", 1, batches=30), job("gpu2", 2, batches=30)  # long enough to watch the slots
        for spec in (one, two):
            spec.update(device="cuda")
            spec["train"]["distributed"]["backend"] = "auto"  # nccl
        single = d.client.wait(d.client.submit(one)["id"], timeout=300)
        assert single["state"] == "succeeded", single["error"]
        jid = d.client.submit(two)["id"]

        def busy_slots() -> list[str] | None:
            mine = [s["slot"] for s in d.client.devices() if s["job"] == jid and s["state"] == "busy"]
            return mine if len(mine) == 2 else None

        assert sorted(wait_for(busy_slots, timeout=120, what="two GPU slots busy with the job")) == ["cuda:0",
                                                                                                   "cuda:1"]
        double = d.client.wait(jid, timeout=600)
        assert double["state"] == "succeeded", double["error"]
        wait_for(lambda: all(s["job"] is None for s in d.client.devices()), timeout=10, what="both slots free")
        a, b = losses(d.client.show(single["id"])), losses(d.client.show(jid))
        assert len(a) == len(b) == 60
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)  # GPU kernels: a looser bound than on the CPU
        assert "rank 1 done" in (Path(d.client.show(jid)["dir"]) / "rank1.log").read_text()


def test_slots_are_placed_and_freed_together_without_gpus(tmp_path: Path) -> None:
    """The dispatch path of a multi-GPU job on any machine: two GPU slots (a stand-in nvidia-smi lists two
    boards; there is no GPU behind them), a world_size 2 job takes both at once and records them, fails at start
    for want of CUDA, and frees both; a world_size 3 job is refused at submit naming the slots it lacks."""
    from tests.daemon.test_distributed import job
    from tests.daemon.test_train_job import import_demo
    from tests.harness import RunningDaemon, stand_in_gpus, wait_for

    if _cuda_count() > 0:
        pytest.skip("this machine has CUDA: the two-GPU test above covers the real path")
    with RunningDaemon(tmp_path / "home", env=stand_in_gpus(tmp_path, 2)) as d:
        import_demo(d.client, tmp_path / "synth")
        three = job("gpu3", 3)
        three.update(device="cuda")
        three["data"]["batch_size"] = 18
        with pytest.raises(Exception, match="world_size 3 needs 3 GPU slots; this machine has 2"):
            d.client.submit(three)
        two = job("gpu2", 2)
        two.update(device="cuda")
        jid = d.client.submit(two)["id"]
        record = d.client.wait(jid, timeout=120)
        assert record["state"] == "failed" and "CUDA" in record["error"], record["error"]
        assert read_job_devices(Path(record["dir"])) == [0, 1]  # both slots were held for it
        assert any("started on cuda:0" in h.get("reason", "") for h in record["history"]), record["history"]
        wait_for(lambda: all(s["job"] is None and s["state"] == "ready" for s in d.client.devices()), timeout=30,
                 what="both GPU slots free again")
