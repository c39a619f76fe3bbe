"""Fault injection: seeded SIGKILLs of the daemon, an executor, a data worker and a viewer while a train job and a
predict job run (tests/reliability/faults.py). After each kill the user's restart (or resubmit) is done, and every
accepted job must reach its right final state with outputs equal to an undisturbed run's, no /dev/shm segment may
stay, and no process the daemons started may outlive what needs it.

By default 8 kills (2 of each kind); SEISD_LONG_TESTS=1 runs 56 (14 of each). SEISD_FAULT_SEED picks another plan.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


from tests.harness import RunningDaemon
from tests.reliability.conftest import LONG
from tests.reliability.faults import KINDS, DescendantWatch, FaultRun, plan_kills, stock_home

SEED = int(os.environ.get("SEISD_FAULT_SEED", "20240611"))
KILLS = 56 if LONG else 8


def test_plan_spreads_kills_over_every_kind_and_keeps_workers_in_training() -> None:
    for seed in range(20):
        rounds = plan_kills(seed, KILLS)
        kills = [k for r in rounds for k in r if k is not None]
        assert len(kills) == KILLS and {k.target for k in kills} == set(KINDS)
        assert all(k.job == "train" for k in kills if k.target == "worker")
        pairs = {(k.target, k.job) for k in kills}
        assert {(t, j) for t in ("daemon", "executor") for j in ("train", "predict")} <= pairs
        assert all(0.1 <= k.at <= 0.75 for k in kills)
    assert plan_kills(SEED, KILLS) == plan_kills(SEED, KILLS)  # the seed alone decides


def test_seeded_kills_lose_no_job_and_leave_nothing_behind(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    stock_home(home, tmp_path)
    rounds = plan_kills(SEED, KILLS)
    with RunningDaemon(home) as d, DescendantWatch(d) as watch:
        run = FaultRun(d, watch, SEED)
        run.reference()
        for i, (train_kill, predict_kill) in enumerate(rounds):
            run.round(i, train_kill, predict_kill)
        figures = run.finish()
    out = figures.as_json()
    print("faults:", json.dumps(out))
    # a planned moment a short job passes unseen (progress is coalesced) is retried, then counted as missed: not a
    # failure of seisd, but most kills must land
    missed = [f for f in out["findings"] if f.startswith("missed:")]
    assert out["kills"] + len(missed) == KILLS and out["kills"] >= KILLS * 3 // 4, out["findings"]
    assert all(n > 0 for n in out["kills_by_kind"].values())
    assert (out["kills_survived"], out["jobs_lost"], out["wrong_outputs"]) == (out["kills"], 0, 0), out["findings"]
    assert (out["shm_leaked"], out["orphan_processes"]) == (0, 0), out["findings"]
    assert [f for f in out["findings"] if not f.startswith("missed:")] == []
