"""Sharded prediction (`shards: N`) through a real seisd: the same bytes as the unsharded job, and resume.

A 32^3 synthetic survey; a small unet saved with seeded weights (patch models share the chunk path). Chunks
of 4 inlines, so 3 shards get 3, 3 and 2 chunks, written by three processes into the same output files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import psutil
import pytest

from tests.daemon.predict_data import (SHAPE, SLOW_JOB, home_with_unet, make_synth_survey, predict_job, run_job,
                                       save_slow_model)
from tests.harness import RunningDaemon, command_line, wait_for, wait_state

OUTPUTS = dict(outputs=["labels", "probabilities", "confidence"], format="hdf5", chunk_inlines=4,
               figures={"enabled": False})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    home = (tmp_path_factory.mktemp("sharded") / "home").resolve()
    home.mkdir(parents=True)
    home_with_unet(home)
    with RunningDaemon(home) as d:
        yield d


def arrays(result: dict[str, Any]) -> dict[str, np.ndarray]:
    with h5py.File(result["paths"]["hdf5"]) as h5:
        return {k: h5[k][()] for k in ("labels", "probabilities", "confidence")}


def test_sharded_output_is_identical_to_the_unsharded_job(prepared: RunningDaemon) -> None:
    d, model, extra = prepared, "unet1", {}
    one = run_job(d, predict_job(model, "synth", f"{model}-one", **OUTPUTS, **extra), timeout=120)["result"]
    three = run_job(d, predict_job(model, "synth", f"{model}-three", shards=3, **OUTPUTS, **extra),
                    timeout=120)["result"]
    assert [s["inlines"] for s in three["shards"]] == [[0, 11], [12, 23], [24, 31]]
    assert one["shards"] is None and three["n_chunks"] == 8
    a, b = arrays(one), arrays(three)
    assert np.array_equal(a["labels"], b["labels"])  # bit for bit
    np.testing.assert_allclose(b["probabilities"], a["probabilities"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(b["confidence"], a["confidence"], rtol=0, atol=1e-6)
    assert np.ptp(a["confidence"]) > 0.01  # a prediction worth comparing, not a constant


def test_shards_are_contiguous_runs_of_the_chunks_left_and_a_bad_count_is_refused(prepared) -> None:
    from client.api import SeisdError
    from daemon.executor.predict.sharding import split_chunks

    assert split_chunks(list(range(8)), 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert split_chunks([1, 2, 5], 5) == [[1], [2], [5]]  # never more shards than chunks left
    assert split_chunks([], 3) == []
    with pytest.raises(SeisdError, match="shards"):
        prepared.client.submit(predict_job("unet1", "synth", "never", shards=0))


def _done(record: Path) -> int:
    try:
        return len(json.loads(record.read_text())["state"]["done"])
    except (OSError, ValueError, KeyError):
        return 0


def _shard_processes(d: RunningDaemon) -> list[psutil.Process]:
    """The executor's spawn children (shards are multiprocessing processes: their OS name is python's); a child that
    ended meanwhile has an empty command line and is left out."""
    return [p for p in psutil.Process(d.proc.pid).children(recursive=True) if "spawn_main" in command_line(p)]


def test_killed_shard_fails_the_job_and_kill9_of_the_daemon_resumes_sharded(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    make_synth_survey(home)
    # 0.2 s a pass, about 3 s a shard: a shard is still running when the test kills it, and the job is still
    # unfinished when the daemon is killed, even when the two shard processes started seconds apart (loaded machine)
    save_slow_model(home, tmp_path, delay_s=0.2)
    job = SLOW_JOB
    with RunningDaemon(home) as d:
        # a shard killed: the job fails and names the shard
        jid = d.client.submit(predict_job("slow", "synth", "lost", shards=2, **job))["id"]
        record = home / "predictions" / "lost" / "arrays" / "progress.json"
        wait_for(lambda: _done(record) >= 2, timeout=60, interval=0.01, what="two chunks written")
        victims = _shard_processes(d)
        assert victims, "no shard process found"
        victims[-1].kill()
        rec = wait_state(d.client, jid, timeout=60)
        assert rec["state"] == "failed" and "shard" in rec["error"] and "failed" in rec["error"], rec["error"]
        # the daemon killed mid-job: the sharded job resumes from the chunks on disk and matches a clean run
        jid = d.client.submit(predict_job("slow", "synth", "killed", shards=2, **job))["id"]
        record = home / "predictions" / "killed" / "arrays" / "progress.json"
        wait_for(lambda: _done(record) >= 6, timeout=60, interval=0.01, what="six chunks written")
        d.kill9()
        time.sleep(0.3)
        done_at_kill = _done(record)
        assert 6 <= done_at_kill < SHAPE[0]
        d.restart()
        rec = wait_state(d.client, jid, timeout=90)
        assert rec["state"] == "succeeded", d.client.logs(jid)
        resumed = d.client.show(jid)["result"]
        assert resumed["resumed_from_chunk"] == done_at_kill
        clean = run_job(d, predict_job("slow", "synth", "clean", **job), timeout=90)["result"]
    with h5py.File(resumed["paths"]["hdf5"]) as a, h5py.File(clean["paths"]["hdf5"]) as b:
        assert np.array_equal(a["labels"][()], b["labels"][()])
        np.testing.assert_allclose(a["probabilities"][()], b["probabilities"][()], rtol=0, atol=1e-6)
