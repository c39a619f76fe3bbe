"""train.pretrain: masks of patch-sized cells, a loss over the blanked voxels only, and jobs through a real seisd
that pretrain on crops anywhere in the survey, hand the start to the selection and the refit, keep the class head's
initial weights, skip pretraining on a resume, and are refused where pretraining cannot work."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daemon.executor.models import build_model
from daemon.executor.training import pretrain
from daemon.executor.training.modes import read_start_state
from tests.daemon.test_refit import refit_job
from tests.daemon.test_train_job import assert_refused
from tests.harness import RunningDaemon


def test_a_mask_blanks_whole_cells_at_about_its_share() -> None:
    x = torch.zeros(64, 1, 30, 20)
    mask = pretrain.masked(x, 0.3, 8, torch.Generator().manual_seed(0))
    assert mask.shape == (64, 1, 30, 20) and set(mask.unique().tolist()) <= {0.0, 1.0}
    cells = mask[:, :, ::8, ::8]  # each cell is one value: its first voxel stands for all of it
    assert torch.equal(mask, cells.repeat_interleave(8, 2).repeat_interleave(8, 3)[:, :, :30, :20])
    assert 0.25 < float(cells.mean()) < 0.35


def test_the_loss_counts_the_blanked_voxels_only_and_each_member() -> None:
    x = torch.zeros(2, 1, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    out = torch.zeros(2, 1, 4, 4)
    out[:, :, 2:] = 5.0  # wrong only where nothing was blanked
    assert float(pretrain.reconstruction_loss(out, x, mask)) == 0.0
    out[:, :, :2] = 2.0  # wrong by 2 on every blanked voxel
    assert float(pretrain.reconstruction_loss(out, x, mask)) == pytest.approx(4.0)
    members = torch.stack([out, torch.zeros_like(out)])  # the second member is right everywhere blanked
    assert float(pretrain.reconstruction_loss(members, x, mask)) == pytest.approx(2.0)


def test_a_pretrained_job_starts_its_selection_and_refit_from_the_survey(demo: RunningDaemon) -> None:
    c = demo.client
    job = refit_job("pretrained", pretrain={"steps": 60, "patch": 4})
    job["model"]["params"]["members"] = 2
    record = c.wait(c.submit(job)["id"], timeout=300)
    assert record["state"] == "succeeded", record["error"]
    r, job_dir = record["result"], Path(record["dir"])
    learnt = r["pretrain"]
    assert learnt["steps"] == 60 and learnt["patch"] == 4 and learnt["seconds"] > 0
    assert learnt["loss_last"] < learnt["loss_first"]  # it learnt to fill in the blanked patches
    assert r["train_seconds"] == pytest.approx(r["refit"]["selection_train_seconds"] + r["refit"]["train_seconds"]
                                               + learnt["seconds"])
    start = read_start_state(job_dir / "pretrain" / "start.pt")["model"]
    torch.manual_seed(0)  # the job's train.seed: the weights it builds before pretraining
    classes = start["members.0.head.bias"].shape[0]  # the demo survey's classes
    fresh = build_model("unet", 1, classes, [16, 16], {"base": 4, "depth": 2, "members": 2}).state_dict()
    heads = [k for k in fresh if ".head." in k]
    assert heads and all(torch.equal(start[k], fresh[k]) for k in heads)  # the class heads start as built
    assert not torch.equal(start["members.0.down.0.0.weight"], fresh["members.0.down.0.0.weight"])
    log = (job_dir / "log").read_text()
    assert "pretrained 60 steps" in log and "refit: training again" in log

    # a resume from that model does not pretrain again: it starts from the model's weights
    again = refit_job("pretrained-resumed", pretrain={"steps": 60}, mode="resume", init_from="models/pretrained.h5")
    again["model"]["params"]["members"] = 2
    record = c.wait(c.submit(again)["id"], timeout=300)
    assert record["state"] == "succeeded", record["error"]
    assert "pretrain" not in record["result"] and not (Path(record["dir"]) / "pretrain").exists()
    assert "train.pretrain: not run, a resume run" in (Path(record["dir"]) / "log").read_text()


def test_pretraining_is_refused_where_it_cannot_work(demo: RunningDaemon) -> None:
    assert_refused(demo.client, lambda: refit_job("refused", pretrain={"steps": 10}), [
        ({"model": {"name": "patchcnn", "params": {}}}, "pretraining needs model.name unet"),
        ({"data": {"survey": None, "examples": ["x"]}}, "train.pretrain.steps"),
        ({"train": {"refit": False, "pretrain": {"steps": 10}, "distributed": {"world_size": 2}}},
         "pretraining runs on one rank"),
        ({"train": {"pretrain": {"steps": -1}}}, "train.pretrain.steps"),
        ({"train": {"pretrain": {"steps": 10, "mask": 1.0}}}, "train.pretrain.mask")])
