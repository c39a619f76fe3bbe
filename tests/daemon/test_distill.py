"""A train job that distils its ensemble (the teacher) into one network (the student) over the whole survey, through a
real seisd: the stages' files, the student as the job's model, submit refusals, and a kill -9 during the student.

The 32^3 synthetic survey of test_train_job.py; tiny U-Nets (base 4, depth 2, 16x16 crops) so a job takes seconds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.daemon.test_train_job import assert_refused, import_demo
from tests.harness import RunningDaemon, stage_step, wait_for, wait_state

MIN_CONFIDENCE = 0.2


def distill_job(output: str, *, student_batches: int = 4, **distill: Any) -> dict[str, Any]:
    return {"kind": "train", "output": output,
            "data": {"survey": "demo", "crop": {"size": [16, 16]}, "batch_size": 8, "batches_per_epoch": 6,
                     "val_batches": 2, "split": {"block": 4, "gap": 2}, "augment": {"p_swap": 0.5, "p_flip": 0.5}},
            "model": {"name": "unet", "params": {"base": 4, "depth": 2, "members": 2}},
            "train": {"epochs": 2, "seed": 0, "checkpoint_every_steps": 5, "progress_interval_s": 0.1,
                      "early_stop": {"enabled": False}},
            "distill": {"enabled": True, "min_confidence": MIN_CONFIDENCE, "epochs": 2,
                        "batches_per_epoch": student_batches, **distill}}


def _picks(home: Path) -> tuple[np.ndarray, np.ndarray]:
    from workers.picks import PickSet

    picks = PickSet.load(home / "surveys" / "demo", "default")
    return picks.positions().astype(np.int64), picks.cls.astype(int)


def test_a_distilled_job_writes_a_one_member_inline_student_trained_on_pseudo_labels(demo: RunningDaemon,
                                                                                      tmp_path: Path) -> None:
    from daemon.executor.modelfile import load_model_file
    from daemon.executor.training.distill import teacher_prediction
    from workers.survey import Survey

    c = demo.client
    record = c.wait(c.submit(distill_job("student"))["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    r, job_dir = record["result"], Path(record["dir"])
    # the job's model is the student: one member, applied inline only; the teacher keeps both ways in the job folder
    model, info = load_model_file(demo.home / "models" / "student.h5")
    assert info.params["members"] == 1 and info.input_spec["apply_orientation"] == "inline"
    assert not hasattr(model, "members")  # a plain U-Net, not an ensemble
    _, teacher = load_model_file(job_dir / "distill" / "teacher.h5")
    assert teacher.params["members"] == 2 and teacher.input_spec["apply_orientation"] == "both"
    # the student's and the teacher's validation figures are both reported
    assert 0 <= r["validation"]["pixel_accuracy"] <= 1 and r["epoch"] == 2 and 0 < r["step"] <= 8
    assert 0 <= r["distill"]["teacher"]["validation"]["pixel_accuracy"] <= 1
    assert r["distill"]["teacher"]["step"] == 12 and r["distill"]["student_stopped"] == "finished"
    assert r["train_seconds"] > r["distill"]["student_train_seconds"] > 0
    # the pseudo labels: the teacher's class where it is confident, -1 elsewhere, the training picks over both
    folder = job_dir / "distill"
    shape = tuple(r["distill"]["pseudo_labels"]["shape"])
    pseudo = np.fromfile(folder / "pseudo_labels.i8", dtype=np.int8).reshape(shape)
    # the teacher's prediction is not kept (5 bytes a voxel); applied again here, it gives the same pseudo labels
    assert not (folder / "teacher_prediction").exists()
    run = teacher_prediction(folder / "teacher.h5", Survey.open(demo.home / "surveys" / "demo"), tmp_path,
                             device="cpu", resume=False)
    labels, confidence = np.load(run["paths"]["labels"]), np.load(run["paths"]["confidence"])
    expected = np.where(confidence >= MIN_CONFIDENCE, labels.astype(np.int8), -1)
    points, cls = _picks(demo.home)
    at_picks = np.zeros(shape, bool)
    at_picks[tuple(points.T)] = True
    on_threshold = np.abs(confidence - MIN_CONFIDENCE) <= 1e-4  # where the rounding of two runs may decide
    clear = ~at_picks & ~on_threshold
    assert on_threshold.mean() < 0.01 and np.array_equal(pseudo[clear], expected[clear])
    assert (pseudo == -1).any() and (pseudo >= 0).any()
    on_pick = pseudo[tuple(points.T)] == cls
    assert on_pick.sum() >= r["split"]["train_points"]  # every training pick carries its own label
    # where the teacher was wrong or unsure at a training pick, only the written pick explains its label
    assert (on_pick & (expected[tuple(points.T)] != cls)).any()
    # the stages show in progress, metrics and the log
    events = c.job_events(record["id"])
    messages = [e["data"].get("message") or "" for e in events if e["type"] == "job.progress"]
    assert any(m.startswith("distilling: predicting the survey") for m in messages), messages
    assert any(m.startswith("distilling: epoch ") for m in messages), messages
    assert any(m.startswith("teacher: epoch ") for m in messages), messages
    stages = [e["data"].get("stage") for e in events
              if e["type"] == "job.metrics" and "val_pixel_accuracy" in e["data"]]
    assert stages == ["teacher", "teacher", "distilling", "distilling"], stages
    assert (folder / "summary.h5").is_file() and (folder / "checkpoints" / "last.pt").is_file()


def test_distilling_is_refused_at_submit_where_it_cannot_work(demo: RunningDaemon) -> None:
    cases = [({"model": {"name": "patchcnn", "params": {"filters": [8, 8, 8]}}},
              "distill.enabled: distilling needs model.name unet"),
             ({"distill": {"enabled": True, "members": 3}}, "distill.members: 3 student members, more than the "
              "teacher's 2"),
             ({"train": {"distributed": {"world_size": 2}}}, "distill.enabled: distilling runs on one rank"),
             ({"distill": {"enabled": True, "min_confidence": 1.5}}, "distill.min_confidence")]
    assert_refused(demo.client, lambda: distill_job("refused"), cases)


def test_a_job_killed_while_distilling_resumes_without_training_the_teacher_again(daemon: RunningDaemon,
                                                                                   tmp_path: Path) -> None:
    c = daemon.client
    import_demo(c, tmp_path / "synth")
    job_id = c.submit(distill_job("resumed", student_batches=100))["id"]
    job_dir = daemon.home / "jobs" / str(job_id)
    wait_for(lambda: stage_step(c, job_id, "distilling") >= 20, timeout=90, what="the student past a checkpoint")
    teacher_written = (job_dir / "distill" / "teacher.h5").stat().st_mtime_ns
    daemon.kill9()
    daemon.restart()
    c = daemon.client
    record = wait_state(c, job_id, timeout=120)
    assert record["state"] == "succeeded", record["error"]
    assert record["attempts"] == 2 and record["result"]["epoch"] == 2
    assert (job_dir / "distill" / "teacher.h5").stat().st_mtime_ns == teacher_written
    log = (job_dir / "log").read_text()
    assert "the teacher was trained by an earlier attempt" in log and "pseudo labels written by an earlier" in log
    assert log.count("distilling: training the teacher") == 1
    # the teacher's checkpoint is not "continued" by the second attempt (its student has its own, under distill/)
    assert f"continuing from {job_dir / 'checkpoints' / 'last.pt'}" not in log
