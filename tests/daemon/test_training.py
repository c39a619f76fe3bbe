"""The training loop on tiny in-memory problems: learning, determinism, resume, transfer, outputs."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from daemon.executor.models import build_model
from daemon.executor.training.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from daemon.kinds.registry import InvalidJob, parse_spec
from daemon.kinds.train_spec import EarlyStopSection, OptimSection, ScheduleSection, TrainSection, TrainSpec
from daemon.executor.training.loop import TrainControl, train
from daemon.executor.training.optim import LRSchedule

N_CLASSES = 3


def _batches(seed: int, n_batches: int, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Crops whose mean amplitude tells the class: separable, but only after learning it."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, N_CLASSES, (size,), generator=gen)
        x = torch.randn(size, 2, 8, 8, generator=gen) * 0.5
        x[:, 0] += (y.float() - 1).view(-1, 1, 1) * 1.5
        out.append((x, y))
    return out


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("patchcnn", 2, N_CLASSES, (8, 8), {"filters": [4, 8], "dropout": 0.2})


def _cfg(**kw) -> TrainSection:
    base = dict(epochs=2, checkpoint_every_steps=None, checkpoint_every_minutes=None, log_every_steps=1)
    base.update(kw)
    return TrainSection(**base)


def _job(**sections) -> TrainSpec:
    """A train job file with these optim / schedule / train sections, read as submit reads it (schema only)."""
    return parse_spec(TrainSpec, {"kind": "train", "output": "m", "data": {"survey": "s", "crop": {"size": [8, 8]}},
                                  "model": {"name": "patchcnn"}, **sections})


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loop_learns_a_separable_problem(tmp_path: Path) -> None:
    model = _model()
    result = train(model, _batches(1, 10), tmp_path, config=_cfg(epochs=3), val_batches=_batches(2, 3))
    assert result.stopped == "finished" and result.step == 30
    assert result.history[-1]["pixel_accuracy"] > 0.85  # chance is 1/3
    assert result.report["classes"]["1"]["support"] > 0
    with h5py.File(tmp_path / "summary.h5", "r") as h5:
        assert h5["steps/loss"].shape == (30,) and h5["epochs/confusion"].shape == (3, N_CLASSES, N_CLASSES)
        assert h5["epochs/confusion"][-1].sum() == 48


def test_same_seed_gives_identical_loss_history(tmp_path: Path) -> None:
    runs = [train(_model(), _batches(1, 6), tmp_path / str(i), config=_cfg(seed=7)).losses for i in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 12
    other = train(_model(), _batches(1, 6), tmp_path / "other", config=_cfg(seed=8)).losses
    assert other != runs[0]  # dropout masks follow the seed


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    data = _batches(1, 5)
    whole = _model()
    train(whole, data, tmp_path / "whole", config=_cfg())
    steps = {"n": 0}

    def cancel_after_7() -> bool:
        steps["n"] += 1
        return steps["n"] >= 7

    part = _model()
    first = train(part, data, tmp_path / "job", config=_cfg(), control=TrainControl(should_stop=cancel_after_7))
    assert first.stopped == "cancelled" and first.step == 7
    saved = load_checkpoint(tmp_path / "job" / "checkpoints" / "last.pt")
    assert (saved["step"], saved["epoch"], saved["batch_index"]) == (7, 1, 2)
    resumed_model = _model(seed=99)  # different initial weights: everything must come from the checkpoint
    resumed = train(resumed_model, data, tmp_path / "job",
                    config=_cfg(mode="resume", init_from=str(tmp_path / "job" / "checkpoints" / "last.pt")))
    assert resumed.step == 10 and resumed.stopped == "finished"
    for key, value in _params(whole).items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with h5py.File(tmp_path / "job" / "summary.h5", "r") as h5:  # appended across resume, no duplicate steps
        np.testing.assert_array_equal(h5["steps/step"][()], np.arange(10))


def test_resume_from_another_jobs_checkpoint_keeps_its_best_weights(tmp_path: Path) -> None:
    """A user resumes (train.init_from) from a failed job's last.pt written after its last epoch: nothing is left to
    train, and the model must still end with the best weights (best.pt beside that checkpoint), not the last ones;
    best.pt is copied into the new job's checkpoints, so resuming the new job finds it too."""
    data, val = _batches(1, 5), _batches(2, 2)
    # min_delta so large that only the first epoch counts as better: the best weights are epoch 1's, not the last
    cfg = dict(epochs=3, early_stop=EarlyStopSection(enabled=False, metric="val_loss", min_delta=1e9))
    ref = _model()
    first = train(ref, data, tmp_path / "failed", config=_cfg(**cfg), val_batches=val)
    assert first.best_epoch == 1 and first.step == 15
    best = load_checkpoint(tmp_path / "failed" / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "failed" / "checkpoints" / "last.pt")
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in best["model"])  # they differ
    resumed_model = _model(seed=99)
    resumed = train(resumed_model, data, tmp_path / "again", val_batches=val, config=_cfg(
        **cfg, mode="resume", init_from=str(tmp_path / "failed" / "checkpoints" / "last.pt")))
    assert resumed.step == 15
    for key, value in _params(ref).items():  # ref ended with its best (epoch 1) weights restored
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(best["model"][key], value, rtol=0, atol=0, msg=key)
    copied = load_checkpoint(tmp_path / "again" / "checkpoints" / "best.pt")
    assert all(torch.equal(copied["model"][k], best["model"][k]) for k in best["model"])


def test_transfer_trains_only_the_last_layers(tmp_path: Path) -> None:
    source = _model()
    train(source, _batches(1, 4), tmp_path / "src", config=_cfg(epochs=1))
    before = _params(source)
    target = _model(seed=5)
    train(target, _batches(3, 4), tmp_path / "dst",
          config=_cfg(mode="transfer", init_from=str(tmp_path / "src" / "checkpoints" / "last.pt"),
                      trainable_layers=1, epochs=1))
    after = target.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}  # batch-norm statistics of frozen layers did not drift


def test_early_stopping_keeps_a_copy_of_the_best_weights(tmp_path: Path) -> None:
    model = _model()
    # a huge rate makes later epochs worse than the first: the best weights must be restored
    result = train(model, _batches(1, 4), tmp_path, optim=OptimSection(lr=0.5, name="sgd"),
                   config=_cfg(epochs=6, early_stop=EarlyStopSection(patience=1, metric="val_loss")),
                   val_batches=_batches(2, 2))
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert best["epoch"] == result.best_epoch
    for key, value in best["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    if result.best_epoch != last["epoch"]:
        assert any(not torch.equal(last["model"][k], best["model"][k]) for k in best["model"])


def test_early_stopping_waits_for_min_epochs(tmp_path: Path) -> None:
    """The same diverging run: patience 1 alone stops it early; with min_epochs 5 it runs to epoch 5 at least,
    and still restores the best weights."""
    runs = {}
    for min_epochs in (0, 5):
        runs[min_epochs] = train(_model(), _batches(1, 4), tmp_path / str(min_epochs),
                                 optim=OptimSection(lr=0.5, name="sgd"), val_batches=_batches(2, 2),
                                 config=_cfg(epochs=6, early_stop=EarlyStopSection(patience=1, metric="val_loss",
                                                                                  min_epochs=min_epochs)))
    assert runs[0].stopped == "early_stop" and runs[0].epoch < 5  # the premise: this run does stop early
    assert runs[5].epoch >= 5 and runs[5].best_epoch <= runs[5].epoch
    with pytest.raises(InvalidJob, match="train.early_stop.min_epochs: expected >= 0"):
        _job(train={"early_stop": {"min_epochs": -1}})


def test_controls_progress_and_stop_after_epoch(tmp_path: Path) -> None:
    reports = []
    control = TrainControl(on_progress=reports.append, stop_after_epoch=lambda: True)
    result = train(_model(), _batches(1, 6), tmp_path, config=_cfg(epochs=5, progress_interval_s=0.0),
                   control=control)
    assert result.stopped == "stop_after_epoch" and result.epoch == 1
    assert reports and reports[-1].step == 6 and reports[-1].total_steps == 30
    assert reports[-1].eta_s is not None and reports[-1].samples_per_s > 0


def test_tensorboard_scalars_and_images_read_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    preview = lambda model: (np.random.rand(16, 20), np.random.randint(0, N_CLASSES, (16, 20)))  # noqa: E731
    train(_model(), _batches(1, 4), tmp_path, config=_cfg(), val_batches=_batches(2, 1),
          control=TrainControl(preview=preview))
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))
    assert len(acc.Scalars("val/macro_f1")) == 2
    assert set(acc.Tags()["images"]) == {"val/confusion", "val/preview"}


def test_segmentation_batches_with_sparse_labels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("unet", 1, 2, (16, 16), {"base": 4, "depth": 2})
    x = torch.randn(4, 1, 16, 16)
    y = torch.full((4, 16, 16), -1)
    y[:, 8, :] = (x[:, 0, 8, :] > 0).long()  # one labelled row per crop
    result = train(model, [(x, y)] * 3, tmp_path, config=_cfg(epochs=1), val_batches=[(x, y)])
    assert result.step == 3 and result.report["support"] == 64


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1})

    def crash_before_rename(handle) -> None:
        handle.write(b"half a checkpoint")
        raise RuntimeError("simulated crash between write and rename")

    with pytest.raises(RuntimeError, match="simulated"):
        atomic_write(path, crash_before_rename)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind


def test_schedules() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    warm = LRSchedule(opt, 1.0, ScheduleSection(kind="step", warmup_steps=4, step_size=10, gamma=0.5), 100)
    assert [warm.lr_at(s) for s in (0, 3, 4, 13, 14)] == [0.25, 1.0, 1.0, 1.0, 0.5]
    cosine = LRSchedule(opt, 1.0, ScheduleSection(kind="cosine", min_lr=0.1), 100)
    assert cosine.lr_at(0) == 1.0 and cosine.lr_at(50) == pytest.approx(0.55) and cosine.lr_at(100) == 0.1
    plateau = LRSchedule(opt, 1.0, ScheduleSection(kind="plateau", plateau_patience=1, plateau_factor=0.5), 10)
    for value in (0.5, 0.6, 0.6, 0.6):
        plateau.end_epoch(value)
    assert plateau.lr_at(3) == 0.5


def test_config_sections_name_every_problem() -> None:
    with pytest.raises(InvalidJob) as info:
        _job(optim={"name": "rmsprop", "lr": "fast"}, schedule={"kind": "cosine"}, train={"mode": "resume",
                                                                                          "epochs": 1.5})
    text = "\n".join(info.value.problems)
    for expected in ("optim.name: expected one of adam, adamw, sgd, got 'rmsprop'", "optim.lr", "train.epochs",
                     "train.init_from: mode 'resume' needs"):
        assert expected in text
    spec = _job(optim={"name": "adamw"}, train={"early_stop": {"patience": 2}})
    assert spec.optim.name == "adamw" and spec.train.early_stop.patience == 2 and spec.train.epochs == 30
    assert spec.schedule == ScheduleSection()  # an absent section: every default


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_channels_last_on_cuda(tmp_path: Path) -> None:
    result = train(_model(), _batches(1, 4), tmp_path, config=_cfg(), val_batches=_batches(2, 2), device="cuda")
    assert result.step == 8 and np.isfinite(result.losses).all()


def _ensemble(seed: int = 0, members: int = 3) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("patchcnn", 2, N_CLASSES, (8, 8), {"filters": [4, 8], "dropout": 0.2, "members": members})


def test_ensemble_members_learn_on_their_own_losses(tmp_path: Path) -> None:
    model = _ensemble()
    result = train(model, _batches(1, 10), tmp_path, config=_cfg(epochs=3), val_batches=_batches(2, 3))
    assert result.history[-1]["pixel_accuracy"] > 0.85
    x, y = _batches(2, 1, size=64)[0]
    model.eval()
    with torch.no_grad():  # every member learnt the problem by itself, not only their average
        for member in model.members:
            assert float((member(x).argmax(1) == y).float().mean()) > 0.8
    # the loss is the members' mean: the same run's first loss equals the mean of the members' own first losses
    fresh = _ensemble()
    x0, y0 = _batches(1, 1)[0]
    fresh.train()
    torch.manual_seed(_cfg().seed)  # the loop seeds its run after the model is built: the same dropout masks
    with torch.no_grad():
        expected = float(sum(torch.nn.functional.cross_entropy(m(x0), y0) for m in fresh.members) / 3)
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)


def test_ensemble_transfer_freezes_the_same_layers_in_every_member(tmp_path: Path) -> None:
    source = _model()  # a single model starts every member of the new ensemble
    train(source, _batches(1, 4), tmp_path / "src", config=_cfg(epochs=1))
    target = _ensemble(seed=5, members=2)
    before = {k: v.clone() for k, v in source.state_dict().items()}
    train(target, _batches(3, 4), tmp_path / "dst",
          config=_cfg(mode="transfer", init_from=str(tmp_path / "src" / "checkpoints" / "last.pt"),
                      trainable_layers=1, epochs=1))
    after = target.state_dict()
    changed = {k for k in after if not torch.equal(before[k.split(".", 2)[2]], after[k])}
    assert changed == {f"members.{i}.head.{p}" for i in range(2) for p in ("weight", "bias")}
    # resumed, the transfer run keeps the same layers frozen
    last = load_checkpoint(tmp_path / "dst" / "checkpoints" / "last.pt")
    assert last["transfer_trainable_layers"] == 1


def test_time_budget_begins_no_epoch_that_would_end_past_it(tmp_path: Path) -> None:
    model = _model()
    result = train(model, _batches(1, 4), tmp_path / "tight", config=_cfg(epochs=5, max_minutes=1e-4),
                   val_batches=_batches(2, 1))
    assert (result.stopped, result.epoch, result.step) == ("time_limit", 1, 4)
    assert load_checkpoint(tmp_path / "tight" / "checkpoints" / "last.pt")["elapsed_s"] > 0  # a resume counts it
    resumed = train(_model(), _batches(1, 4), tmp_path / "tight",
                    config=_cfg(epochs=5, max_minutes=60, mode="resume",
                                init_from=str(tmp_path / "tight" / "checkpoints" / "last.pt")),
                    val_batches=_batches(2, 1))
    assert (resumed.stopped, resumed.epoch) == ("finished", 5)  # a larger budget on resume: the rest of the run
    roomy = train(_model(), _batches(1, 4), tmp_path / "roomy", config=_cfg(epochs=3, max_minutes=60),
                  val_batches=_batches(2, 1))
    assert (roomy.stopped, roomy.epoch) == ("finished", 3)
    # the same budget with room kept for a run to follow (a refit's epochs, each as long as the last): after the
    # first epoch, another one plus 10**7 reserved ones cannot fit in an hour, so the run ends there
    reserved = train(_model(), _batches(1, 4), tmp_path / "reserved", config=_cfg(epochs=3, max_minutes=60),
                     val_batches=_batches(2, 1), control=TrainControl(reserve_epochs=lambda epoch, best: 10**7))
    assert (reserved.stopped, reserved.epoch) == ("time_limit", 1)
    # the budget stops no run before train.budget_min_epochs, then the next epoch's check stops it
    floored = train(_model(), _batches(1, 4), tmp_path / "floored",
                    config=_cfg(epochs=5, max_minutes=1e-4, budget_min_epochs=3), val_batches=_batches(2, 1))
    assert (floored.stopped, floored.epoch, floored.step) == ("time_limit", 3, 12)
    # the floor counts the reserved epochs too (a refit of as many epochs as the selection ran): 2 run + 2 reserved
    # reach a floor of 4, so the selection ends after epoch 2 and the job trains 4 epochs in all, not 3 + 3
    shared = train(_model(), _batches(1, 4), tmp_path / "shared",
                   config=_cfg(epochs=5, max_minutes=1e-4, budget_min_epochs=4), val_batches=_batches(2, 1),
                   control=TrainControl(reserve_epochs=lambda epoch, best: epoch))
    assert (shared.stopped, shared.epoch) == ("time_limit", 2)
    with pytest.raises(InvalidJob, match="train.budget_min_epochs"):
        _job(train={"budget_min_epochs": -1})
    with pytest.raises(InvalidJob, match="train.max_minutes"):
        _job(train={"max_minutes": 0})
