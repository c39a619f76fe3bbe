"""Executors that die under their job, and jobs that outstay their time: kill -9, SIGSTOP, the out-of-memory killer,
work that holds Python's GIL, a real hang, and `time_limit_s`.

A job whose executor died resumes on a new executor (predict from its written chunks, test.steps from its step
file; import and extract run again from the start), at most executor.max_job_retries times, each cause in its
history; then it fails naming every cause. Each test has a daemon of its own (it kills or stops something).
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from client.api import Client
from tests.daemon.cgroups import MemoryCgroup, memory_cgroup
from tests.daemon.predict_data import (SHAPE, SLOW_JOB, make_synth_survey, predict_job, run_job,
                                       save_slow_model)
from tests.harness import RunningDaemon, steps_job, wait_for, wait_state

QUICK_HANG = {"SEISD_EXECUTOR__HEARTBEAT_TIMEOUT_S": "2"}   # a silent executor is looked at after 2 s


def _history(rec: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(h["state"], h.get("cause")) for h in rec["history"]]


def _executor_of(c: Client, job_id: int, attempt: int = 1, progress: float = 0.0) -> int:
    """The pid of the executor running attempt `attempt` of the job, once the job's progress passed `progress`."""
    def found() -> int | None:
        rec = c.show(job_id)
        if rec["state"] != "running" or rec["attempts"] != attempt or (rec["progress"] or 0) < progress:
            return None
        return next((s["executor_pid"] for s in c.devices() if s["job"] == job_id and s["state"] == "busy"), None)
    return wait_for(found, timeout=60, what=f"attempt {attempt} of job {job_id} to run")


def _chunks_done(record: Path) -> int:
    try:
        return json.loads(record.read_text())["state"]["chunks_done"]
    except (OSError, ValueError, KeyError):
        return 0


# -- deaths and retries ------------------------------------------------------------------------------------------


def test_deaths_beyond_the_retries_fail_the_job_naming_every_cause(tmp_path: Path) -> None:
    with RunningDaemon(tmp_path / "home", env={"SEISD_EXECUTOR__MAX_JOB_RETRIES": "1"}) as d:
        c = d.client
        jid = c.submit(steps_job(steps=600, step_s=0.02))["id"]
        os.kill(_executor_of(c, jid, 1, 0.05), signal.SIGKILL)
        os.kill(_executor_of(c, jid, 2), signal.SIGKILL)
        rec = wait_state(c, jid)
        assert rec["state"] == "failed", rec
        err = rec["error"]
        assert "attempt 1" in err and "attempt 2" in err and err.count("killed by SIGKILL") == 2, err
        assert "executor.max_job_retries" in err, err
        assert [cause for state, cause in _history(rec) if state in ("interrupted", "failed")] == \
            ["executor_died", "executor_died"], rec["history"]
        assert "not retried" in c.logs(jid)["text"]
        assert wait_state(c, c.submit(steps_job(steps=2))["id"])["state"] == "succeeded"


def test_a_killed_predict_resumes_from_its_chunks_on_a_new_executor(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    make_synth_survey(home)
    save_slow_model(home, tmp_path)
    with RunningDaemon(home) as d:
        c = d.client
        jid = c.submit(predict_job("slow", "synth", "killed", **SLOW_JOB))["id"]
        record = home / "predictions" / "killed" / "arrays" / "progress.json"
        wait_for(lambda: _chunks_done(record) >= 5, timeout=60, interval=0.01, what="five chunks written")
        os.kill(_executor_of(c, jid), signal.SIGKILL)
        time.sleep(0.3)
        done_at_kill = _chunks_done(record)
        assert 5 <= done_at_kill < SHAPE[0]
        rec = wait_state(c, jid, timeout=90)
        assert rec["state"] == "succeeded", (rec, c.logs(jid)["text"][-2000:])
        assert rec["attempts"] == 2 and ("interrupted", "executor_died") in _history(rec)
        assert rec["result"]["resumed_from_chunk"] == done_at_kill
        clean = run_job(d, predict_job("slow", "synth", "clean", **SLOW_JOB))["result"]
    with h5py.File(rec["result"]["paths"]["hdf5"]) as a, h5py.File(clean["paths"]["hdf5"]) as b:
        for name in ("labels", "probabilities"):
            assert np.array_equal(a[name][()], b[name][()]), name


def test_a_predict_that_finally_fails_or_is_cancelled_leaves_its_name_free(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    make_synth_survey(home)
    save_slow_model(home, tmp_path)
    with RunningDaemon(home, env={"SEISD_EXECUTOR__MAX_JOB_RETRIES": "0"}) as d:
        c = d.client
        folder = home / "predictions" / "p1"
        jid = c.submit(predict_job("slow", "synth", "p1", **SLOW_JOB))["id"]
        wait_for(lambda: _chunks_done(folder / "arrays" / "progress.json") >= 2, timeout=60, interval=0.01,
                 what="two chunks written")
        os.kill(_executor_of(c, jid), signal.SIGKILL)
        rec = wait_state(c, jid)
        assert rec["state"] == "failed" and "killed by SIGKILL" in rec["error"], rec
        assert not folder.exists(), sorted(p.name for p in folder.rglob("*"))
        again = c.submit(predict_job("slow", "synth", "p1", **SLOW_JOB))["id"]   # the same name, no overwrite
        wait_for(lambda: _chunks_done(folder / "arrays" / "progress.json") >= 2, timeout=60, interval=0.01,
                 what="two chunks written")
        c.cancel(again)
        assert wait_state(c, again)["state"] == "cancelled"
        assert not folder.exists()
        done = run_job(d, predict_job("slow", "synth", "p1", **SLOW_JOB))
        assert done["result"]["resumed_from_chunk"] == 0 and (folder / "prediction.h5").is_file()
        # a complete prediction still holds its name
        with pytest.raises(Exception, match="already exists"):
            c.submit(predict_job("slow", "synth", "p1", **SLOW_JOB))


def _big_picks(folder: Path, survey: Any, lines: int, seed: int = 0) -> Path:
    """A picks file of `lines` points (inline, crossline, time in the survey's unit) inside `survey`."""
    rng = np.random.default_rng(seed)
    rows = np.stack([rng.choice(survey.inlines, lines), rng.choice(survey.crosslines, lines),
                     rng.choice(survey.samples, lines)], axis=1)
    path = folder / "multi_sand_ilxl.pts"
    np.savetxt(path, rows, fmt="%g")
    return path


def test_an_import_whose_executor_died_runs_again_and_a_custom_job_does_not(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    picks = _big_picks(tmp_path, make_synth_survey(home)["survey"], 600_000)
    with RunningDaemon(home) as d:
        c = d.client
        jid = c.submit({"kind": "import", "survey": "synth", "picks": {"files": [str(picks)], "set": "big"}})["id"]
        os.kill(_executor_of(c, jid, 1, 0.1), signal.SIGKILL)
        rec = wait_state(c, jid, timeout=120)
        assert rec["state"] == "succeeded", (rec, c.logs(jid)["text"][-2000:])
        assert rec["attempts"] == 2 and ("interrupted", "executor_died") in _history(rec)
        assert rec["result"]["points"] + rec["result"]["dropped_duplicates"] == 600_000
        script = tmp_path / "sleep.py"
        script.write_text("import time\ntime.sleep(60)\n")
        jid = c.submit({"kind": "custom", "script": str(script)})["id"]
        os.kill(_executor_of(c, jid), signal.SIGKILL)
        rec = wait_state(c, jid)
        assert rec["state"] == "failed" and rec["attempts"] == 1, rec
        assert "not retried" in rec["error"] and "custom" in rec["error"], rec["error"]


# -- hangs, slow work and the GIL --------------------------------------------------------------------------------


def test_work_holding_the_gil_is_busy_not_hung(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    picks = _big_picks(tmp_path, make_synth_survey(home)["survey"], 600_000)
    with RunningDaemon(home, env=QUICK_HANG) as d:
        c = d.client
        jid = c.submit(steps_job(steps=10, step_s=0.05, at_step=2, hold_gil_s=6))["id"]
        rec = wait_state(c, jid, timeout=60)
        assert rec["state"] == "succeeded" and rec["attempts"] == 1, (rec, c.logs(jid)["text"][-1500:])
        assert c.devices()[0]["restarts"] == 0
        assert "busy, not hung" in c.logs(jid)["text"]
        # the real thing: np.unique over the rows of a big picks file holds the GIL for seconds
        jid = c.submit({"kind": "import", "survey": "synth", "picks": {"files": [str(picks)], "set": "big"}})["id"]
        rec = wait_state(c, jid, timeout=120)
        assert rec["state"] == "succeeded" and rec["attempts"] == 1, (rec, c.logs(jid)["text"][-1500:])
        assert c.devices()[0]["restarts"] == 0


def test_a_sigstopped_executor_is_killed_as_hung_and_its_job_resumes(tmp_path: Path) -> None:
    with RunningDaemon(tmp_path / "home", env=QUICK_HANG) as d:
        c = d.client
        jid = c.submit(steps_job(steps=100, step_s=0.03))["id"]
        pid = _executor_of(c, jid, 1, 0.1)
        os.kill(pid, signal.SIGSTOP)
        rec = wait_state(c, jid, timeout=60)
        assert rec["state"] == "succeeded" and rec["result"]["resumed_from"] > 0, rec
        lost = next(h for h in rec["history"] if h["state"] == "interrupted")
        assert lost["cause"] == "hung" and "stopped" in lost["reason"] and "SIGSTOP" in lost["reason"], lost


def test_a_hang_holding_the_gil_is_told_from_slow_work(tmp_path: Path) -> None:
    with RunningDaemon(tmp_path / "home", env=QUICK_HANG) as d:
        c = d.client
        jid = c.submit(steps_job(steps=10, step_s=0.05, at_step=2, hold_gil_s=120, gil_idle=True))["id"]
        t0 = time.monotonic()
        rec = wait_state(c, jid, timeout=60)
        assert time.monotonic() - t0 < 30
        assert rec["state"] == "succeeded" and rec["attempts"] == 2, rec
        lost = next(h for h in rec["history"] if h["state"] == "interrupted")
        assert lost["cause"] == "hung" and "no CPU" in lost["reason"], lost


def test_out_of_memory_is_named_and_the_job_resumes(tmp_path: Path) -> None:
    with memory_cgroup(256 << 20) as cgroup, RunningDaemon(tmp_path / "home") as d:
        c = d.client
        jid = c.submit(steps_job(steps=40, step_s=0.05, at_step=20, alloc_mb=2048))["id"]
        cgroup.add(_executor_of(c, jid))
        rec = wait_state(c, jid, timeout=60)
        assert rec["state"] == "succeeded" and rec["result"]["resumed_from"] >= 20, (rec, c.logs(jid)["text"])
        lost = next(h for h in rec["history"] if h["state"] == "interrupted")
        assert lost["cause"] == "out_of_memory" and "out of memory" in lost["reason"], lost
        assert isinstance(cgroup, MemoryCgroup) and cgroup.oom_kills() >= 1


# -- time limits -------------------------------------------------------------------------------------------------


def test_a_job_past_its_time_limit_fails_naming_the_limit(tmp_path: Path) -> None:
    with RunningDaemon(tmp_path / "home") as d:
        c = d.client
        assert wait_state(c, c.submit(steps_job(steps=3, time_limit_s=30))["id"])["state"] == "succeeded"
        for ignore in (False, True):   # a job that ignores its cancel is killed after executor.cancel_grace_s
            jid = c.submit(steps_job(steps=2000, step_s=0.01, time_limit_s=1.5, ignore_cancel=ignore))["id"]
            rec = wait_state(c, jid, timeout=30)
            assert rec["state"] == "failed", rec
            assert "time limit" in rec["error"] and "1.5 s" in rec["error"], rec["error"]
            assert _history(rec)[-1] == ("failed", "time_limit"), rec["history"]
            assert 1.4 <= rec["finished"] - rec["started"] < 5, rec
        # the limit counts the running time of every attempt: after a lost executor, the rest of it
        jid = c.submit(steps_job(steps=2000, step_s=0.01, time_limit_s=3))["id"]
        pid = _executor_of(c, jid)
        time.sleep(1.5)
        os.kill(pid, signal.SIGKILL)
        rec = wait_state(c, jid, timeout=30)
        assert rec["state"] == "failed" and _history(rec)[-1] == ("failed", "time_limit"), rec
        assert rec["attempts"] == 2 and rec["finished"] - rec["started"] < 2.5, rec
