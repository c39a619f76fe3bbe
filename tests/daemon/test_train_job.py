"""The `train` job kind through a real seisd: submit checks, outputs, controls, cancel, transfer, resume after kill -9.

A 32^3 synthetic survey (tools/synth.py) is imported through the client like a user would; jobs are tiny patchcnn
runs (15x15 crops, batches of 16) so each takes seconds on two cores.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from tests.harness import ROOT, RunningDaemon, wait_for, wait_state

sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402


def import_demo(client: Any, folder: Path) -> None:
    """A 32^3 synthetic survey 'demo' with its pick set 'default', and 'one' holding a single class."""
    s = synth.generate(shape=(32, 32, 32), seed=0)
    synth.write(s, folder)
    jobs = [{"kind": "import", "survey": "demo", "segy": {"file": str(folder / "seismic.sgy")}}]
    pts = sorted(str(p) for p in (folder / "picks").glob("*.pts"))
    pattern = r"(?P<name>.+)\.pts"
    jobs.append({"kind": "import", "survey": "demo", "picks": {"files": pts, "class_pattern": pattern}})
    jobs.append({"kind": "import", "survey": "demo",
                 "picks": {"files": [str(folder / "picks" / "salt.pts")], "class_pattern": pattern, "set": "one"}})
    for job in jobs:
        record = client.wait(client.submit(job)["id"], timeout=60)
        assert record["state"] == "succeeded", record["error"]


def train_job(output: str, *, epochs: int = 2, batches: int = 8, **train: Any) -> dict[str, Any]:
    return {"kind": "train", "output": output,
            "data": {"survey": "demo", "crop": {"size": [15, 15]}, "batch_size": 16, "batches_per_epoch": batches,
                     "val_batches": 2, "split": {"block": 4}},
            "model": {"name": "patchcnn", "params": {"filters": [8, 8, 8]}},
            "train": {"epochs": epochs, "seed": 0, "checkpoint_every_steps": 5, "progress_interval_s": 0.1,
                      "early_stop": {"enabled": False}, **train}}


@pytest.fixture(scope="module")
def trained(demo: RunningDaemon) -> dict[str, Any]:
    """One finished training job, shared by the output tests."""
    record = demo.client.wait(demo.client.submit(train_job("base"))["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    return record


def last_step(client: Any, job_id: int) -> int:
    steps = [e["data"].get("step") for e in client.job_events(job_id) if e["type"] == "job.progress"]
    return max([s for s in steps if s is not None], default=0)


def test_broken_job_files_are_refused_with_each_problem_named(demo: RunningDaemon) -> None:
    cases = [
        ({"model": {"name": "resnet9000"}}, "model.name: unknown model 'resnet9000'"),
        ({"data": {"crop": {"size": [15, 15, 15], "orientation": "inline"}}}, "data.crop"),
        ({"data": {"crop": {"size": [15, 99]}}}, "data.crop.size: crop [15, 99] (inline) is larger than survey 'demo'"),
        ({"data": {"survey": "nowhere"}}, "data.survey: no survey 'nowhere'"),
        ({"data": {"picks": "one"}}, "data.picks: pick set 'one' has points of 1 class"),
        ({"data": {"augment": {"p_stretch": 0.5, "stretch_range": [0.2, 3.0]}}}, "data.augment: stretch_range"),
        ({"data": {"augment": {"p_warp": 0.5, "warp_max": 40}}}, "data.augment.warp_max"),
    ]
    assert_refused(demo.client, lambda: train_job("refused"), cases)


def assert_refused(client: Any, make_job: Any, cases: list[tuple[dict, str]]) -> None:
    """Each change (section -> keys merged into that section of `make_job()`) is refused at submit with a problem
    that contains its expected text; nothing is queued."""
    from client.api import SeisdError

    before = len(client.jobs())
    for change, expected in cases:
        job = make_job()
        for section, values in change.items():
            job[section] = {**job[section], **values}
        with pytest.raises(SeisdError) as err:
            client.submit(job)
        assert expected in str(err.value) + json.dumps(err.value.details), (change, err.value)
    assert len(client.jobs()) == before  # nothing was queued


def test_a_job_file_with_mistakes_in_five_sections_is_refused_once_naming_all(demo: RunningDaemon) -> None:
    from client.api import SeisdError

    job = train_job("five")
    job["data"]["batchsize"] = 16                         # data: a typo
    job["model"]["params"] = {"filters": [8, 8, 8], "colour": 1}  # model: a parameter patchcnn does not have
    job["optim"] = {"name": "adamw", "lr": -1}            # optim: out of range
    job["schedule"] = {"kind": "cosine", "warmup": 2}     # schedule: a typo of warmup_steps
    job["train"]["epocs"] = 3                             # train: a typo
    before = len(demo.client.jobs())
    with pytest.raises(SeisdError) as err:
        demo.client.submit(job)
    problems = err.value.details["problems"]
    assert len(problems) >= 5, problems
    for key in ("data.batchsize", "model.params.colour", "optim.lr", "schedule.warmup", "train.epocs"):
        assert any(p.startswith(key) for p in problems), (key, problems)
    batch = next(p for p in problems if p.startswith("data.batchsize"))
    assert "did you mean 'batch_size'" in batch and "accepted here: " in batch and "val_batches" in batch, batch
    assert len(demo.client.jobs()) == before


USER_MODEL = """
import torch


def build_model(in_channels, n_classes, width=4):
    return torch.nn.Sequential(torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, n_classes))
"""


def test_user_model_is_checked_at_submit_and_trains(demo: RunningDaemon, tmp_path: Path) -> None:
    from client.api import Client, SeisdError

    # a user model is checked at submit in a child process that imports torch: seconds, more on a busy machine
    checking = Client(home=demo.home, timeout=180)

    broken = tmp_path / "broken.py"
    broken.write_text("def build_model(in_channels, n_classes):\n    raise RuntimeError('no model here')\n")
    job = train_job("user_model", epochs=1)
    job["model"] = {"name": "user", "params": {"path": str(broken)}}
    with pytest.raises(SeisdError, match="model.params.path"):
        checking.submit(job)
    good = tmp_path / "small.py"
    good.write_text(USER_MODEL)
    job["model"] = {"name": "user", "params": {"path": str(good), "width": 6}}
    record = demo.client.wait(checking.submit(job)["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    assert record["result"]["step"] == 8 and (demo.home / "models" / "user_model.h5").is_file()
    # an ensemble of the user's model: `members` is checked and consumed by seisd, never passed to the file; the
    # model file predicts through a predict job like any other
    job["model"]["params"]["members"] = 2
    job["output"] = "user_ensemble"
    record = demo.client.wait(checking.submit(job)["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    with h5py.File(demo.home / "models" / "user_ensemble.h5", "r") as h5:
        keys = list(h5["weights"])
        assert all(k.startswith("members.") for k in keys) and {k.split(".")[1] for k in keys} == {"0", "1"}
    predicted = demo.client.wait(checking.submit({"kind": "predict", "model": "user_ensemble", "survey": "demo",
                                                     "output": "user_ensemble_pred"})["id"], timeout=120)
    assert predicted["state"] == "succeeded", predicted["error"]


def test_existing_model_name_is_refused_unless_overwrite(demo: RunningDaemon, trained: dict) -> None:
    from client.api import SeisdError as DaemonError

    with pytest.raises(DaemonError, match="output: a model 'base' already exists"):
        demo.client.submit(train_job("base"))


def test_outputs_model_file_summary_and_tensorboard(demo: RunningDaemon, trained: dict) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, job_dir = trained["result"], Path(trained["dir"])
    assert result["stopped"] == "finished" and result["step"] == 16 and result["epoch"] == 2
    assert (job_dir / "checkpoints" / "last.pt").is_file() and (job_dir / "checkpoints" / "best.pt").is_file()
    with h5py.File(job_dir / "summary.h5", "r") as h5:
        assert list(h5["steps/step"][:]) == list(range(16))
        assert len(h5["epochs/epoch"]) == 2
    acc = EventAccumulator(str(job_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert {"val/pixel_accuracy", "val/macro_f1", "val/val_loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("val/pixel_accuracy")] == [8, 16]
    assert {"val/confusion", "val/preview"} <= set(acc.Tags()["images"])
    info = demo.client.call("models.info", name="base")
    text = json.dumps(info)
    for key in ("input_spec", "normalisation", "provenance", "classes"):
        assert key in text
    log = (job_dir / "log").read_text()
    assert "validation" in log and "model written" in log  # the seisd.training logger reaches the job log
    assert trained["metrics"] is not None


def test_model_file_predicts_the_same_in_a_new_process(demo: RunningDaemon, trained: dict) -> None:
    job_dir = Path(trained["dir"])
    expected = np.load(job_dir / "preview_final.npy")
    code = ("import sys, numpy as np; "
            "from daemon.executor.training.preview import predict_inline_from_file as predict_slice; "
            "np.save(sys.argv[4], predict_slice(sys.argv[1], sys.argv[2], int(sys.argv[3]), stride=2))")
    out = job_dir.parent / "fresh_prediction.npy"
    subprocess.run([sys.executable, "-c", code, str(demo.home / "models" / "base.h5"),
                    str(demo.home / "surveys" / "demo"), str(trained["result"]["preview_inline"]), str(out)],
                   check=True, cwd=ROOT, timeout=120)
    got = np.load(out)
    assert got.shape == (32, 32) and np.array_equal(got, expected)


def test_transfer_changes_only_unfrozen_parameters(demo: RunningDaemon, trained: dict) -> None:
    c = demo.client
    job = train_job("transferred", epochs=1, mode="transfer", init_from="models/base.h5", trainable_layers=1)
    record = c.wait(c.submit(job)["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    with h5py.File(demo.home / "models" / "base.h5") as a, h5py.File(demo.home / "models" / "transferred.h5") as b:
        keys = list(a["weights"])
        changed = [k for k in keys if not np.array_equal(a["weights"][k][()], b["weights"][k][()])]
    last_layer = sorted({k.rsplit(".", 1)[0] for k in keys if k.endswith("weight")})[-1]
    assert changed and all(k.startswith(last_layer + ".") for k in changed), (last_layer, changed)


def test_cancel_saves_a_checkpoint(tmp_path: Path) -> None:
    """A daemon of its own with the default grace of a cancel (the tests' 1 s ends a job whose step and checkpoint
    take longer on a loaded machine before it could save, and the test failed for the machine's sake)."""
    with RunningDaemon(tmp_path / "home", env={"SEISD_EXECUTOR__CANCEL_GRACE_S": "30"}) as d:
        c = d.client
        import_demo(c, tmp_path / "synth")
        job_id = c.submit(train_job("cancelled", epochs=50, batches=1000, checkpoint_every_steps=100000))["id"]
        wait_for(lambda: last_step(c, job_id) >= 3, timeout=120, what="training steps")
        c.cancel(job_id)
        record = wait_state(c, job_id, timeout=120)
        assert record["state"] == "cancelled"
        assert "did not stop" not in (record["error"] or "")  # it stopped by itself, within the grace
        import torch

        state = torch.load(Path(record["dir"]) / "checkpoints" / "last.pt", weights_only=True)
        assert state["step"] >= 3
        assert not (d.home / "models" / "cancelled.h5").exists()


def test_workers_resize_and_stop_after_epoch(demo: RunningDaemon) -> None:
    c = demo.client
    job_id = c.submit(train_job("stopped", epochs=50, batches=150))["id"]
    wait_for(lambda: last_step(c, job_id) >= 2, timeout=60, what="training steps")
    assert c.workers(job_id, 1) == {"count": 1}
    wait_for(lambda: (c.show(job_id)["metrics"] or {}).get("workers") == 1, timeout=30,
             what="the pool statistics to show one worker")
    assert c.call("stop_after_epoch", id=job_id) == {"stopping": True}
    record = wait_state(c, job_id, timeout=90)
    assert record["state"] == "succeeded", record["error"]
    assert record["result"]["stopped"] == "stop_after_epoch" and record["result"]["epoch"] < 50
    assert (demo.home / "models" / "stopped.h5").is_file()


def test_resume_after_kill9_continues_step_count_and_loss_history(daemon: RunningDaemon, tmp_path: Path) -> None:
    c = daemon.client
    import_demo(c, tmp_path / "synth")
    job_id = c.submit(train_job("resumed", epochs=3, batches=200, checkpoint_every_steps=10))["id"]
    job_dir = daemon.home / "jobs" / str(job_id)
    # past the end of epoch 1 (step 200) and a later checkpoint: both the epoch row and the steps must continue
    wait_for(lambda: last_step(c, job_id) >= 215, timeout=240, what="training past epoch 1 and a checkpoint")
    daemon.kill9()
    daemon.restart()
    c = daemon.client
    record = wait_state(c, job_id, timeout=300)  # bounds for a loaded machine: 600 steps took 20-40 s idle
    assert record["state"] == "succeeded", record["error"]
    assert record["attempts"] == 2 and record["result"]["step"] == 600
    assert "continuing from" in (job_dir / "log").read_text()
    with h5py.File(job_dir / "summary.h5", "r") as h5:
        steps, losses = h5["steps/step"][:], h5["steps/loss"][:]
        assert list(steps) == list(range(600))  # no gap, no repeat across the restart
        assert np.isfinite(losses).all() and list(h5["epochs/epoch"][:]) == [1, 2, 3]


def test_a_segmentation_job_learns_from_the_picks_without_a_label_volume(demo: RunningDaemon) -> None:
    """A U-Net learns per voxel from the picks: its crops carry the picks they cover, made from the picks
    themselves (workers.sampling.PointLabels), so nothing as large as the survey is written for them."""
    job = train_job("segmenter", epochs=2, batches=6)
    job["model"] = {"name": "unet", "params": {"base": 4, "depth": 2}}
    job["data"]["crop"], job["data"]["split"] = {"size": [16, 16]}, {"block": 4, "gap": 2}
    record = demo.client.wait(demo.client.submit(job)["id"], timeout=180)
    assert record["state"] == "succeeded", record["error"]
    assert record["result"]["step"] == 12
    survey_bytes = (demo.home / "surveys" / "demo" / "seismic.f32").stat().st_size
    # a float32 label volume (what the job wrote before) has the survey cache's size exactly
    written = [p for p in Path(record["dir"]).rglob("*") if p.is_file() and p.stat().st_size == survey_bytes]
    assert written == [], written


NAN_MODEL = """
import torch


class Diverged(torch.nn.Module):
    def __init__(self, in_channels, n_classes):
        super().__init__()
        self.head = torch.nn.Linear(in_channels, n_classes)

    def forward(self, x):
        # every logit NaN: the loss and the validation figures are NaN, as after a diverged learning rate
        return self.head(x.mean(dim=(2, 3))) * float("nan")


def build_model(in_channels, n_classes):
    return Diverged(in_channels, n_classes)
"""


def test_a_diverged_run_fails_with_a_clear_reason(demo: RunningDaemon, tmp_path: Path) -> None:
    """A model whose loss turns NaN ends its job as failed, naming the loss and what to change; the events of
    the job still reach a subscriber and `events` (JSON has no NaN), and the daemon runs on."""
    from client import protocol as P
    from client.api import Client

    checking = Client(home=demo.home, timeout=180)
    path = tmp_path / "nan_model.py"
    path.write_text(NAN_MODEL)
    job = train_job("nan_model", epochs=1)
    job["model"] = {"name": "user", "params": {"path": str(path)}}
    sub = demo.client.subscribe("job")
    try:
        jid = checking.submit(job)["id"]
        record = demo.client.wait(jid, timeout=120)
        published, deadline = [], time.monotonic() + 30  # until a 0.3 s quiet gap, at most 30 s
        while time.monotonic() < deadline and sub.poll(300):
            published.append(P.Event.decode(sub.recv_multipart()))
    finally:
        sub.close()
    assert record["state"] == "failed" and "loss became nan" in record["error"], record
    assert "optim.lr" in record["error"]
    types = [e["type"] for e in demo.client.call("events", id=jid)["events"]]
    assert types[-1] == "job.state" and any(e.topic == f"job.{jid}" and e.data.get("state") == "failed"
                                            for e in published)
    assert demo.client.status()["pid"] == demo.proc.pid


def test_survey_and_model_used_by_a_queued_train_job_cannot_be_removed(demo: RunningDaemon, trained: dict) -> None:
    """A train job names its survey one level down (data.survey) and the model it starts from under
    train.init_from (a path): both count as uses, as predict's top-level survey and model do."""
    from client.api import SeisdError
    from tests.harness import steps_job

    c = demo.client
    blocker = c.submit(steps_job(steps=400, step_s=0.02))["id"]   # keeps the one CPU slot busy
    wait_state(c, blocker, "running")
    queued = c.submit(train_job("from_base", epochs=1, mode="transfer", init_from="models/base.h5"))["id"]
    try:
        for op in ("survey.rm", "models.rm"):
            with pytest.raises(SeisdError) as err:
                c.call(op, name="demo" if op == "survey.rm" else "base")
            assert err.value.code == "conflict" and str(queued) in err.value.message, (op, err.value.message)
    finally:
        c.cancel(queued)
        c.cancel(blocker)
        wait_state(c, blocker)


SLEEPY_MODEL = """
import time

import torch


class Sleepy(torch.nn.Module):
    \"\"\"A small model whose every forward pass waits 0.15 s without computing: as a job on a machine busy with
    other work waits for a CPU.\"\"\"

    def __init__(self, in_channels, n_classes):
        super().__init__()
        self.head = torch.nn.Linear(in_channels, n_classes)

    def forward(self, x):
        time.sleep(0.4)
        return self.head(x.mean(dim=(2, 3)))


def build_model(in_channels, n_classes):
    return Sleepy(in_channels, n_classes)
"""


def test_a_cpu_clock_budget_is_not_spent_by_waiting(demo: RunningDaemon, tmp_path: Path) -> None:
    """train.max_minutes on the wall clock stops a run whose epochs wait (here: sleep) past the budget; on the cpu
    clock the same run is charged only for its computing and trains every epoch it was given."""
    from client.api import Client

    checking = Client(home=demo.home, timeout=180)
    path = tmp_path / "sleepy.py"
    path.write_text(SLEEPY_MODEL)
    results = {}
    for clock in ("wall", "cpu"):
        job = train_job(f"sleepy_{clock}", epochs=4, batches=4, max_minutes=0.05, budget_clock=clock)
        job["model"] = {"name": "user", "params": {"path": str(path)}}
        record = demo.client.wait(checking.submit(job)["id"], timeout=180)
        assert record["state"] == "succeeded", record["error"]
        results[clock] = record["result"]
    # each epoch sleeps >= 2.4 s (4 training and 2 validation batches): past 3 s after the first on the wall; on the
    # cpu clock the 3 s leave room for the runs' own computing on a slow machine (1.2 s did not on one, session 35)
    assert results["wall"]["stopped"] == "time_limit" and results["wall"]["epoch"] == 1, results["wall"]
    assert results["cpu"]["stopped"] == "finished" and results["cpu"]["epoch"] == 4, results["cpu"]


def test_a_model_with_context_sections_trains_previews_and_predicts(demo: RunningDaemon, tmp_path: Path) -> None:
    """data.context 1: the model reads each section with the one on either side. The train job writes its preview,
    and a predict job through the daemon gives what the apply engine gives from the model file (both ways, as the
    swapped crops advise); the preview is the inline-way prediction of its inline (its block's neighbours real)."""
    from daemon.executor.modelfile import load_model_file
    from daemon.executor.predict.apply import predict_volume
    from daemon.executor.predict.outputs import load_outputs
    from daemon.executor.predict.recipe import recipe_of
    from workers.survey import Survey

    job = train_job("with_context", epochs=1, batches=4)
    job["model"] = {"name": "unet", "params": {"base": 4, "depth": 2}}
    job["data"].update(crop={"size": [16, 16]}, split={"block": 4, "gap": 2}, context=1, augment={"p_swap": 0.5})
    record = demo.client.wait(demo.client.submit(job)["id"], timeout=180)
    assert record["state"] == "succeeded", record["error"]
    model, info = load_model_file(demo.home / "models" / "with_context.h5")
    assert info.in_channels == 3 and info.input_spec["context"] == 1
    recipe = recipe_of(info)
    assert recipe.orientation == "both" and recipe.apply_kwargs((32, 32, 32))["context"] == 1
    volume = Survey.open(demo.home / "surveys" / "demo").volume("seismic")
    # "both" as the predict job runs it (the recipe's precision, 'auto'); "inline" in float32, as the preview is
    # drawn (apply_block's default): a model trained for one epoch has near-ties that bfloat16 may tip
    direct = {o: load_outputs(predict_volume(model, volume, out_dir=tmp_path / o, outputs=["labels", "probabilities"],
                                             device="cpu", **{**recipe.apply_kwargs(volume.shape), "orientation": o,
                                                              **extra}))
              for o, extra in (("both", {}), ("inline", {"precision": "float32"}))}
    preview = np.load(Path(record["dir"]) / "preview_final.npy")
    assert np.array_equal(preview, direct["inline"]["labels"][record["result"]["preview_inline"]])
    done = demo.client.wait(demo.client.submit({"kind": "predict", "model": "with_context", "survey": "demo",
                                                "output": "with_context", "format": "hdf5",
                                                "outputs": ["labels", "probabilities"],
                                                "figures": {"enabled": False}})["id"], timeout=180)
    assert done["state"] == "succeeded", done["error"]
    with h5py.File(Path(done["result"]["output"]) / "prediction.h5") as h5:
        np.testing.assert_allclose(h5["probabilities"][()], direct["both"]["probabilities"], atol=1e-5)


def test_an_ensemble_trained_both_ways_is_predicted_split(demo: RunningDaemon, tmp_path: Path) -> None:
    """An ensemble that trained on swapped crops advises "split" (each member along one way, half the passes), and
    a predict job through the daemon gives what the apply engine gives from the model file that way."""
    from daemon.executor.modelfile import load_model_file
    from daemon.executor.predict.apply import predict_volume
    from daemon.executor.predict.outputs import load_outputs
    from daemon.executor.predict.recipe import recipe_of
    from workers.survey import Survey

    job = train_job("pair", epochs=1, batches=4)
    job["model"] = {"name": "unet", "params": {"base": 4, "depth": 2, "members": 2}}
    job["data"].update(crop={"size": [16, 16]}, split={"block": 4, "gap": 2}, augment={"p_swap": 0.5})
    record = demo.client.wait(demo.client.submit(job)["id"], timeout=180)
    assert record["state"] == "succeeded", record["error"]
    model, info = load_model_file(demo.home / "models" / "pair.h5")
    recipe = recipe_of(info)
    assert info.input_spec["apply_orientation"] == "split" and recipe.orientation == "split"
    volume = Survey.open(demo.home / "surveys" / "demo").volume("seismic")
    direct = load_outputs(predict_volume(model, volume, out_dir=tmp_path / "split", outputs=["probabilities"],
                                         device="cpu", **recipe.apply_kwargs(volume.shape)))
    done = demo.client.wait(demo.client.submit({"kind": "predict", "model": "pair", "survey": "demo",
                                                "output": "pair", "format": "hdf5", "outputs": ["probabilities"],
                                                "figures": {"enabled": False}})["id"], timeout=180)
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["recipe"]["orientation"] == "split"
    with h5py.File(Path(done["result"]["output"]) / "prediction.h5") as h5:
        np.testing.assert_allclose(h5["probabilities"][()], direct["probabilities"], atol=1e-5)


def test_a_roll_trains_a_unet_and_fails_a_patch_model_naming_it(demo: RunningDaemon) -> None:
    """data.augment.p_roll moves a crop's centre sample, so only a model that labels every voxel may use it."""
    job = train_job("rolled", epochs=1, batches=4)
    job["model"] = {"name": "unet", "params": {"base": 4, "depth": 2}}
    job["data"]["crop"], job["data"]["split"] = {"size": [16, 16]}, {"block": 4, "gap": 2}
    job["data"]["augment"] = {"p_roll": 1.0, "p_flip": 0.5}
    record = demo.client.wait(demo.client.submit(job)["id"], timeout=180)
    assert record["state"] == "succeeded", record["error"]
    patch = train_job("rolled-patch", epochs=1, batches=4)
    patch["data"]["augment"] = {"p_roll": 0.5}
    record = demo.client.wait(demo.client.submit(patch)["id"], timeout=120)
    assert record["state"] == "failed" and "data.augment.p_roll" in record["error"], record["error"]
    assert not (demo.home / "models" / "rolled-patch.h5").exists()
