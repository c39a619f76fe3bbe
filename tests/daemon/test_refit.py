"""train.refit through a real seisd: the selection run with its validation split, then the same model trained again
from the same start on every labelled point for the epochs the selection kept; its files, figures, stages, submit
refusals, and a kill -9 during the refit.

The 32^3 synthetic survey of test_train_job.py; tiny U-Nets (base 4, depth 2, 16x16 crops) so a job takes seconds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.daemon.test_train_job import assert_refused, import_demo
from tests.harness import RunningDaemon, stage_step, wait_for, wait_state

BATCHES = 6
KILL_BATCHES = 100  # an epoch of the killed jobs: 200 steps a stage, 180 of them after the kill's step 20


def refit_job(output: str, *, batches: int = BATCHES, epochs: int = 4, **train: Any) -> dict[str, Any]:
    return {"kind": "train", "output": output,
            "data": {"survey": "demo", "crop": {"size": [16, 16]}, "batch_size": 8, "batches_per_epoch": batches,
                     "val_batches": 2, "split": {"block": 4, "gap": 2}, "augment": {"p_swap": 0.5, "p_flip": 0.5}},
            "model": {"name": "unet", "params": {"base": 4, "depth": 2}},
            "train": {"epochs": epochs, "seed": 0, "checkpoint_every_steps": 5, "progress_interval_s": 0.1,
                      "refit": True, "early_stop": {"enabled": True, "patience": 1, "min_epochs": 1}, **train}}


def test_a_refit_job_trains_again_on_every_point_for_the_epochs_the_selection_kept(demo: RunningDaemon) -> None:
    from daemon.executor.modelfile import load_model_file

    c = demo.client
    record = c.wait(c.submit(refit_job("refitted"))["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    r, job_dir = record["result"], Path(record["dir"])
    selection = json.loads((job_dir / "refit" / "selection.json").read_text())
    kept = selection["best_epoch"]
    assert kept is not None and 1 <= kept <= selection["epoch"] <= 4
    # the refit run: the kept epochs, all of them, on every point of the split (training, validation and gap)
    split = r["split"]
    everything = split["train_points"] + split["val_points"] + split["dropped_points"]
    assert split["val_points"] > 0 and split["dropped_points"] > 0
    assert r["refit"]["epochs"] == kept and r["refit"]["points"] == everything == split["refit_points"]
    assert r["epoch"] == kept and r["step"] == kept * BATCHES and r["refit"]["stopped"] == "finished"
    # the figures are the selection's validation (the refit run has nothing held out to score)
    assert r["validation"] == selection["history"][-1] and r["best_epoch"] == kept
    assert r["train_seconds"] == pytest.approx(selection["train_seconds"] + r["refit"]["train_seconds"])
    # the model file: the refit's weights (not the selection's best), its split record says so
    model, info = load_model_file(demo.home / "models" / "refitted.h5")
    assert info.training["split"]["refit_points"] == everything and info.training["split"]["refit_epochs"] == kept
    import torch

    best = torch.load(job_dir / "checkpoints" / "best.pt", weights_only=False)["model"]
    state = model.state_dict()
    assert any(not torch.equal(state[k], best[k]) for k in state if k in best)
    assert (job_dir / "refit" / "checkpoints" / "last.pt").is_file() and (job_dir / "refit" / "summary.h5").is_file()
    # the stages show in progress messages, metrics and the log
    events = c.job_events(record["id"])
    messages = [e["data"].get("message") or "" for e in events if e["type"] == "job.progress"]
    assert any(m.startswith("selecting: epoch ") for m in messages), messages
    assert any(m.startswith("refit: epoch ") for m in messages), messages
    stages = [e["data"].get("stage") for e in events if e["type"] == "job.metrics" and "epoch" in e["data"]]
    first = stages.index("refit")
    assert set(stages[:first]) == {"selecting"} and set(stages[first:]) == {"refit"}, stages
    assert "refit: training again on all" in (job_dir / "log").read_text()


def test_with_early_stopping_off_a_refit_job_trains_once_on_every_point(demo: RunningDaemon) -> None:
    """Nothing for a selection to choose: no selection run, the job file's epochs on every labelled point."""
    from daemon.executor.modelfile import load_model_file

    c = demo.client
    record = c.wait(c.submit(refit_job("direct", epochs=3, early_stop={"enabled": False}))["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    r, job_dir = record["result"], Path(record["dir"])
    split = r["split"]
    everything = split["train_points"] + split["val_points"] + split["dropped_points"]
    assert split["val_points"] > 0 and split["refit_points"] == everything
    assert r["refit"] == {"selection": False, "epochs": 3, "points": everything, "stopped": "finished",
                          "train_seconds": r["train_seconds"]}
    assert r["epoch"] == 3 and r["step"] == 3 * BATCHES and r["best_value"] is None
    assert not (job_dir / "refit").exists()
    _, info = load_model_file(demo.home / "models" / "direct.h5")
    assert info.training["split"]["refit_points"] == everything and not info.metrics["report"]
    messages = [e["data"].get("message") or "" for e in c.job_events(record["id"]) if e["type"] == "job.progress"]
    assert not any(m.startswith(("selecting:", "refit:")) for m in messages), messages
    assert "nothing for a selection run to choose" in (job_dir / "log").read_text()


def test_the_refit_recipe_draws_from_every_point_the_split_holds_out(demo: RunningDaemon, tmp_path: Path) -> None:
    from daemon.executor.training.job_data import prepare_data
    from daemon.kinds.train_spec import DataSection
    from workers.picks import PickSet

    d = DataSection.model_validate(refit_job("x")["data"])
    data = prepare_data(d, demo.home, tmp_path, 0, per_voxel=True)
    points = PickSet.load(demo.home / "surveys" / "demo", "default").positions()
    every = {tuple(p) for p in np.asarray(data.refit_recipe.sampler.centres)}
    trained = {tuple(p) for p in np.asarray(data.recipe.sampler.centres)}
    assert every == {tuple(p) for p in points} and trained < every
    assert len(every) == sum(data.split[k] for k in ("train_points", "val_points", "dropped_points"))


def test_the_selection_keeps_room_in_the_budget_for_the_epochs_the_refit_would_train() -> None:
    from daemon.executor.training import refit
    from daemon.kinds.registry import parse_spec
    from daemon.kinds.train_spec import TrainSpec

    def spec(early_stop: dict[str, Any]) -> TrainSpec:
        return parse_spec(TrainSpec, {"kind": "train", "output": "m", "data": {"survey": "s", "crop": {"size": [8, 8]}},
                                      "model": {"name": "unet"}, "train": {"refit": True, "early_stop": early_stop}})

    kept = spec({"enabled": True, "restore_best": True})
    assert refit.reserve(kept)(30, 12) == 12 and refit.reserve(kept)(3, None) == 3  # no validation yet: all run
    assert refit.reserve(spec({"enabled": True, "restore_best": False}))(30, 12) == 30
    assert refit.reserve(spec({"enabled": False}))(30, 12) == 30


def test_refit_is_refused_at_submit_where_it_is_not_built(demo: RunningDaemon) -> None:
    cases = [({"distill": {"enabled": True}}, "train.refit: refit and distill.enabled together are not built"),
             ({"train": {"refit": True, "distributed": {"world_size": 2}}}, "train.refit: refitting runs on one rank"),
             ({"schedule": {"kind": "plateau"}}, "train.refit: schedule.kind plateau"),
             ({"train": {"refit": True, "mode": "resume", "init_from": "jobs/1/checkpoints/last.pt"}},
              "train.refit: resuming a checkpoint continues a run")]
    assert_refused(demo.client, lambda: {**refit_job("refused"), "distill": {}, "schedule": {}}, cases)


def test_a_selection_stopped_by_request_ends_the_job_without_a_refit(demo: RunningDaemon) -> None:
    c = demo.client
    job_id = c.submit(refit_job("stopped", batches=40, epochs=50,
                                early_stop={"enabled": True, "patience": 100}))["id"]
    wait_for(lambda: any(e["data"].get("step", 0) >= 2 for e in c.job_events(job_id) if e["type"] == "job.progress"),
             timeout=90, what="training steps")
    assert c.call("stop_after_epoch", id=job_id) == {"stopping": True}
    record = wait_state(c, job_id, timeout=90)
    assert record["state"] == "succeeded", record["error"]
    r = record["result"]
    assert r["stopped"] == "stop_after_epoch" and r["epoch"] < 50 and r["refit"] == {"skipped": True}
    assert (demo.home / "models" / "stopped.h5").is_file()
    assert not (Path(record["dir"]) / "refit" / "selection.json").exists()
    assert "refit: not run, the selection was stopped by request" in (Path(record["dir"]) / "log").read_text()


def killed_during(daemon: RunningDaemon, tmp_path: Path, output: str, stage: str,
                  before_kill: Any = lambda job_dir: None) -> tuple[dict[str, Any], Path, Any, dict[str, Any]]:
    """A two-epoch refit job of KILL_BATCHES batches an epoch (the selection keeps both: no restore_best), killed -9
    once `stage` is past a checkpoint, the daemon restarted: (job, job_dir, what before_kill(job_dir) returned,
    record)."""
    c = daemon.client
    import_demo(c, tmp_path / "synth")
    job = refit_job(output, batches=KILL_BATCHES, epochs=2,
                    early_stop={"enabled": True, "patience": 10, "restore_best": False})
    job_id = c.submit(job)["id"]
    job_dir = daemon.home / "jobs" / str(job_id)
    wait_for(lambda: stage_step(c, job_id, stage) >= 20, timeout=120, what=f"the {stage} stage past a checkpoint")
    seen = before_kill(job_dir)
    daemon.kill9()
    daemon.restart()
    record = wait_state(daemon.client, job_id, timeout=180)
    assert record["state"] == "succeeded", record["error"]
    return job, job_dir, seen, record


def test_a_job_killed_while_refitting_resumes_without_selecting_again(daemon: RunningDaemon, tmp_path: Path) -> None:
    def running_after_selection(job_dir: Path) -> int:
        assert daemon.client.show(int(job_dir.name))["state"] == "running"  # killed during the refit, not after it
        return (job_dir / "refit" / "selection.json").stat().st_mtime_ns

    _, job_dir, selected, record = killed_during(daemon, tmp_path, "resumed", "refit", running_after_selection)
    # without restore_best the selection keeps its last epoch: the refit trains as long
    assert record["attempts"] == 2 and record["result"]["epoch"] == 2 and record["result"]["step"] == 2 * KILL_BATCHES
    assert (job_dir / "refit" / "selection.json").stat().st_mtime_ns == selected
    log = (job_dir / "log").read_text()
    assert "the selection run was finished by an earlier attempt" in log
    assert f"continuing from {job_dir / 'refit' / 'checkpoints' / 'last.pt'}" in log
    assert f"continuing from {job_dir / 'checkpoints' / 'last.pt'}" not in log


def test_a_job_killed_while_selecting_continues_the_selection_then_refits_from_the_start(
        daemon: RunningDaemon, tmp_path: Path) -> None:
    def still_selecting(job_dir: Path) -> None:
        assert not (job_dir / "refit" / "selection.json").exists()  # killed during the selection

    job, job_dir, _, record = killed_during(daemon, tmp_path, "killed-selecting", "selecting", still_selecting)
    c = daemon.client
    selection = json.loads((job_dir / "refit" / "selection.json").read_text())
    # the selection went on from its checkpoint to its 2 epochs; the refit then trained them all, from the start
    assert record["attempts"] == 2 and selection["epoch"] == 2 and selection["step"] == 2 * KILL_BATCHES
    assert record["result"]["refit"]["epochs"] == 2 and record["result"]["step"] == 2 * KILL_BATCHES
    log = (job_dir / "log").read_text()
    assert f"continuing from {job_dir / 'checkpoints' / 'last.pt'}" in log
    assert f"continuing from {job_dir / 'refit' / 'checkpoints' / 'last.pt'}" not in log
    assert "the selection run was finished by an earlier attempt" not in log
    assert "refit: training again on all" in log
    # the refit depends on the selection only through the epochs it kept: the same weights as a job never killed
    import torch

    from daemon.executor.modelfile import load_model_file

    again = c.wait(c.submit({**job, "output": "never-killed"})["id"], timeout=180)
    assert again["state"] == "succeeded" and again["attempts"] == 1, again["error"]
    killed, _ = load_model_file(daemon.home / "models" / "killed-selecting.h5")
    calm, _ = load_model_file(daemon.home / "models" / "never-killed.h5")
    a, b = killed.state_dict(), calm.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
