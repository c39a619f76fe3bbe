"""train.consistency and data.unlabelled: targets from the model's own confident classes on unlabelled voxels, the
noisier view that moves labels with the data, a training run that learns from them, and a job through a real
seisd with crops anywhere in the survey and a refit."""
from __future__ import annotations

from pathlib import Path

import torch

from daemon.executor.models import build_model
from daemon.executor.training import consistency
from daemon.executor.training.loop import train
from daemon.kinds.train_spec import TrainSection
from tests.daemon.test_refit import refit_job
from tests.daemon.test_train_job import assert_refused
from tests.harness import RunningDaemon

CPU = dict(device_type="cpu", dtype=torch.bfloat16, enabled=False)


class SignModel(torch.nn.Module):
    """Two-class logits (x, -x): class 0 where x > 0, with probability sigmoid(2x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], dim=1)


def test_targets_are_the_confident_classes_of_unlabelled_voxels_only() -> None:
    x = torch.tensor([[[[2.0, 0.1], [-2.0, 3.0]]]])  # [1, 1, 2, 2]
    y = torch.tensor([[[-1, -1], [-1, 1]]])  # the last voxel is a pick
    target, unlabelled = consistency.targets(SignModel(), x, y, 0.9, CPU)
    # sigmoid(4) = 0.98 -> class 0; sigmoid(0.2) = 0.55 -> unsure; sigmoid(-4) -> class 1 at 0.98; the pick stays
    assert target.tolist() == [[[0, -1], [1, -1]]] and unlabelled == 3


def test_an_ensembles_targets_are_its_members_mean() -> None:
    class Members(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # two members, one sure of class 0, one of class 1
            return torch.stack([torch.cat([x, -x], dim=1), torch.cat([-x, x], dim=1)])

    x = torch.full((1, 1, 2, 2), 3.0)
    target, _ = consistency.targets(Members(), x, torch.full((1, 2, 2), -1), 0.6, CPU)
    assert (target == -1).all()  # their mean is 0.5 / 0.5: no target anywhere


def test_the_noisier_view_moves_labels_and_targets_with_the_data() -> None:
    lateral = torch.arange(6.0).view(1, 1, 6, 1).expand(4, 1, 6, 3) + 1  # x = lateral index + 1
    y = (lateral[:, 0] - 1).long()
    target = y.clone()
    gen = torch.Generator().manual_seed(0)
    x2, y2, t2 = consistency.noisier(lateral.clone(), y, target, 0.0, gen)
    assert torch.equal(y2, t2)
    ratio = x2[:, 0] / (y2 + 1).float()  # the gain of each crop, the same over the crop where labels moved along
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio))
    assert torch.equal(y2[0], y[0]) and torch.equal(y2[1], torch.flip(y[1], dims=(0,)))  # every other crop mirrored
    assert ((ratio[:, 0, 0] > 0.79) & (ratio[:, 0, 0] < 1.26)).all()


def _sparse_batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """16x16 crops whose sign tells the class; one labelled column each, the rest unlabelled."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        y = torch.randint(0, 2, (8, 16, 16), generator=gen)
        x = (1 - 2 * y.float()).unsqueeze(1) + 0.3 * torch.randn(8, 1, 16, 16, generator=gen)
        labels = torch.full_like(y, -1)
        labels[:, 8] = y[:, 8]
        out.append((x, labels))
    return out


def test_a_run_with_consistency_trains_differently_from_one_without(tmp_path: Path) -> None:
    def run(weight: float, name: str) -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model("unet", 1, 2, (16, 16), {"base": 4, "depth": 2})
        cfg = TrainSection(epochs=2, checkpoint_every_steps=None, checkpoint_every_minutes=None,
                           consistency={"weight": weight, "threshold": 0.6})
        result = train(model, _sparse_batches(4), tmp_path / name, config=cfg)
        assert result.stopped == "finished" and all(torch.isfinite(torch.tensor(result.losses)))
        return model

    plain, own = run(0.0, "plain"), run(1.0, "own")
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), own.state_dict().values()))


def test_a_job_with_crops_anywhere_and_consistency_selects_and_refits(demo: RunningDaemon) -> None:
    c = demo.client
    job = refit_job("consistent", consistency={"weight": 1.0, "threshold": 0.7})
    job["data"]["unlabelled"] = 0.25
    record = c.wait(c.submit(job)["id"], timeout=120)
    assert record["state"] == "succeeded", record["error"]
    assert record["result"]["refit"]["stopped"] == "finished" and (demo.home / "models" / "consistent.h5").is_file()
    # refused at submit: crops anywhere need a survey's picks, and a share of 1 leaves no pick in a batch
    assert_refused(c, lambda: refit_job("refused"), [
        ({"data": {"survey": None, "examples": ["x"], "unlabelled": 0.5}}, "data.unlabelled"),
        ({"data": {"unlabelled": 1.0}}, "data.unlabelled")])
