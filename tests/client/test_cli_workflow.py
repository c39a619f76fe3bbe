"""An interpreter's workflow through the real seisctl against a real daemon: import, picks, extract, train,
predict and a custom script; the names `jobs` shows and its filters; `submit --set` and `retry`; default
prediction names and `predictions list | info | rm`; and messages that name the flag a seisctl command took, or
the key of a job file. A 32^3 synthetic survey (tools/synth.py) and a tiny patchcnn keep it to seconds."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.client.test_cli import job_file, seisctl, seisctl_json
from tests.harness import ROOT, RunningDaemon, steps_job, wait_state

sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402


def train_job(output: str) -> dict[str, Any]:
    return {"kind": "train", "output": output,
            "data": {"survey": "s1", "crop": {"size": [15, 15]}, "batch_size": 16, "batches_per_epoch": 4,
                     "val_batches": 1, "split": {"block": 4}},
            "model": {"name": "patchcnn", "params": {"filters": [8, 8, 8]}},
            "train": {"epochs": 1, "seed": 0, "progress_interval_s": 0.1, "early_stop": {"enabled": False}}}


class Flow:
    """The module's daemon, its files, and the ids of the jobs that built the home."""

    def __init__(self, d: RunningDaemon, folder: Path):
        self.d, self.folder, self.home = d, folder, d.home
        self.ids: dict[str, int] = {}

    def run(self, *args: str, code: int = 0) -> dict[str, Any]:
        return seisctl_json(self.home, *args, code=code)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    root = tmp_path_factory.mktemp("workflow")
    synth.write(synth.generate(shape=(32, 32, 32), seed=0), root / "synth")
    with RunningDaemon(root / "home") as d:
        f = Flow(d, root)
        segy = str(root / "synth" / "seismic.sgy")
        pts = sorted(str(p) for p in (root / "synth" / "picks").glob("*.pts"))
        f.ids["import"] = f.run("survey", "import", segy, "--name", "s1")["id"]
        f.ids["import2"] = f.run("survey", "import", segy, "--name", "s2")["id"]
        f.ids["picks"] = f.run("picks", "import", "s1", *pts, "--pattern", r"(?P<name>.+)\.pts")["id"]
        f.ids["extract"] = f.run("examples", "extract", "e1", "--survey", "s1", "--size", "5", "5")["id"]
        f.train_file = job_file(root, train_job("m"), "train.yaml")
        f.ids["train"] = f.run("submit", f.train_file)["id"]
        script = root / "hello.py"
        script.write_text("print('hello')\n")
        f.ids["custom"] = f.run("submit", job_file(root, {"kind": "custom", "script": str(script)}, "custom.yaml"))[
            "id"]
        for key in f.ids:
            assert d.client.show(f.ids[key])["state"] == "succeeded", (key, d.client.show(f.ids[key])["error"])
        yield f


def predict(f: Flow, *args: str) -> Any:
    """`seisctl predict` on the tiny model, quick: every 4th voxel, no figures."""
    return seisctl(f.home, "predict", *args, "--stride", "4", "--no-figures", timeout=120)


def test_default_prediction_names_do_not_clash_across_surveys(flow: Flow) -> None:
    for survey in ("s1", "s2"):
        r = predict(flow, "m", survey)
        assert r.returncode == 0, r.stderr
    listed = flow.run("predictions", "list")["predictions"]
    assert {(p["name"], p["model"], p["survey"]) for p in listed} >= {("m-s1", "m", "s1"), ("m-s2", "m", "s2")}
    again = predict(flow, "m", "s1")
    assert again.returncode == 2
    assert "--overwrite" in again.stderr and "--name" in again.stderr, again.stderr
    assert "overwrite: true" not in again.stderr and "`output" not in again.stderr, again.stderr


def test_jobs_names_every_kind(flow: Flow) -> None:
    by_id = {j["id"]: j for j in flow.run("jobs")["jobs"]}
    names = {key: by_id[job_id]["name"] for key, job_id in flow.ids.items()}
    assert names == {"import": "s1", "import2": "s2", "picks": "s1", "extract": "e1", "train": "m",
                     "custom": "hello.py"}, names
    predicts = [j["name"] for j in by_id.values() if j["kind"] == "predict"]
    assert "m-s1" in predicts and "m-s2" in predicts, predicts
    table = seisctl(flow.home, "jobs").stdout.splitlines()
    name_col = table[0].index("NAME")
    assert all(row[name_col] != "-" for row in table[1:]), table


def test_jobs_filters_by_name_kind_and_state(flow: Flow) -> None:
    assert [j["id"] for j in flow.run("jobs", "--kind", "train")["jobs"]] == [flow.ids["train"]]
    assert {j["name"] for j in flow.run("jobs", "--name", "s*")["jobs"]} == {"s1", "s2"}
    assert {j["id"] for j in flow.run("jobs", "--name", "s1", "--kind", "import")["jobs"]} == \
        {flow.ids["import"], flow.ids["picks"]}
    assert flow.run("jobs", "--state", "failed", "--kind", "import")["jobs"] == []
    r = seisctl(flow.home, "jobs", "--kind", "trian")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "did you mean 'train'?" in r.stderr and "import" in r.stderr and "predict" in r.stderr, r.stderr
    r = seisctl(flow.home, "jobs", "--state", "succeded")
    assert r.returncode == 2 and "did you mean 'succeeded'?" in r.stderr and "cancelled" in r.stderr, r.stderr


def test_submit_set_changes_the_job_file_values(flow: Flow, tmp_path: Path) -> None:
    path = job_file(tmp_path, steps_job(steps=50, step_s=0.5))
    r = flow.run("submit", path, "--set", "steps=2", "--set", "step_s=0.01", "--set", "name=quick")
    assert r["state"] == "succeeded", r
    sent = yaml.safe_load((flow.home / "jobs" / str(r["id"]) / "job.yaml").read_text())
    assert (sent["steps"], sent["step_s"], sent["name"]) == (2, 0.01, "quick"), sent
    for bad, says in ((["--set", "steps"], "KEY.PATH=VALUE"), (["--set", "steps.count=3"], "steps"),
                      (["--set", "=3"], "KEY.PATH=VALUE")):
        r = seisctl(flow.home, "submit", path, *bad)
        assert r.returncode == 2 and says in r.stderr, (bad, r.stderr)


def test_retry_resubmits_a_job_read_back_from_the_daemon(flow: Flow, tmp_path: Path) -> None:
    failed = seisctl_json(flow.home, "submit", job_file(tmp_path, steps_job(steps=3, fail_at=1)), code=1)
    assert failed["state"] == "failed"
    again = flow.run("retry", str(failed["id"]), "--set", "fail_at=null")
    assert again["state"] == "succeeded" and again["id"] != failed["id"], again
    assert flow.run("show", str(again["id"]))["spec"]["steps"] == 3
    r = seisctl(flow.home, "retry", "99999")
    assert r.returncode == 5 and "no job 99999" in r.stderr, r.stderr


def test_a_train_job_whose_model_exists_is_refused_saying_how(flow: Flow) -> None:
    before = len(flow.run("jobs", "--limit", "1000")["jobs"])
    for args in (["submit", flow.train_file], ["retry", str(flow.ids["train"])]):
        r = seisctl(flow.home, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert "--set overwrite=true" in r.stderr and "--set output=NEW" in r.stderr, (args, r.stderr)
    assert len(flow.run("jobs", "--limit", "1000")["jobs"]) == before  # nothing queued, nothing overwritten
    r = flow.run("retry", str(flow.ids["train"]), "--set", "output=m2", "--detach")
    assert flow.d.client.show(r["id"])["spec"]["output"] == "m2"
    flow.d.client.cancel(r["id"])
    wait_state(flow.d.client, r["id"], timeout=60)


def test_predictions_list_info_rm(flow: Flow, tmp_path: Path) -> None:
    if not any(p["name"] == "m-s2" for p in flow.run("predictions", "list")["predictions"]):
        assert predict(flow, "m", "s2").returncode == 0
    info = flow.run("predictions", "info", "m-s2")
    assert (info["name"], info["model"], info["survey"]) == ("m-s2", "m", "s2"), info
    assert any(f["path"].endswith(".sgy") for f in info["files"]), info["files"]
    human = seisctl(flow.home, "predictions", "list").stdout
    assert "m-s2" in human and "{" not in human, human
    assert flow.run("predictions", "rm", "m-s2") == {"removed": "m-s2"}
    assert "m-s2" not in [p["name"] for p in flow.run("predictions", "list")["predictions"]]
    assert not (flow.home / "predictions" / "m-s2").exists()
    for args in (["predictions", "rm", "m-s2"], ["predictions", "info", "nope"]):
        r = seisctl(flow.home, *args)
        assert r.returncode == 5 and "no prediction" in r.stderr, (args, r.stderr)
    # a prediction a queued job will write is not removed from under it
    blocker = flow.run("submit", "--detach", job_file(tmp_path, steps_job(steps=400, step_s=0.05)))["id"]
    writer = flow.run("predict", "m", "s1", "--overwrite", "--no-figures", "--detach")["id"]
    r = seisctl(flow.home, "predictions", "rm", "m-s1")
    assert r.returncode == 5 and f"written by queued or running jobs {writer}" in r.stderr, r.stderr
    for job_id in (writer, blocker):
        flow.d.client.cancel(job_id)
        wait_state(flow.d.client, job_id, timeout=60)
    assert (flow.home / "predictions" / "m-s1").is_dir()


def test_messages_name_the_flags_of_a_command_and_the_keys_of_a_job_file(flow: Flow, shared_data: Path,
                                                                        tmp_path: Path) -> None:
    outside = tmp_path / "multi_far_ilxl.pts"
    outside.write_text("1\t1\t10\n5000\t5000\t10\n")
    r = seisctl(flow.home, "picks", "import", "s1", str(outside), "--set", "far")
    assert r.returncode == 1, r.stderr
    assert "--drop-outside" in r.stdout + r.stderr and "drop_outside" not in r.stdout + r.stderr, r.stdout
    job = {"kind": "import", "survey": "s1", "picks": {"files": [str(outside)], "set": "far"}}
    r = seisctl(flow.home, "submit", job_file(tmp_path, job))
    assert r.returncode == 1 and "`picks.drop_outside: true`" in r.stdout, r.stdout
    r = seisctl(flow.home, "survey", "import", str(flow.folder / "synth" / "seismic.sgy"), "--name", "s1")
    assert r.returncode == 2 and "--add" in r.stderr and "add_volume" not in r.stderr, r.stderr
    assert "--name: a survey 's1' already exists" in r.stderr, r.stderr
    segyio = shared_data / "segyio"
    r = seisctl(flow.home, "survey", "import", str(segyio / "small-ps.sgy"), "--name", "ps")
    assert r.returncode == 1 and "--offset" in r.stdout and "offset=" not in r.stdout, r.stdout
    r = seisctl(flow.home, "survey", "import", str(segyio / "small-lsb.sgy"), "--name", "lsb", "--endian", "big")
    assert r.returncode == 1 and "little-endian" in r.stdout and "--endian little" in r.stdout, r.stdout
    assert "truncated" not in r.stdout, r.stdout
    r = seisctl(flow.home, "submit", job_file(tmp_path, {"kind": "import", "survey": "lsb", "segy": {
        "file": str(segyio / "small-lsb.sgy"), "endian": "big"}}))
    assert r.returncode == 1 and "`segy.endian: little`" in r.stdout, r.stdout
    json_err = json.loads(seisctl(flow.home, "--json", "survey", "import", str(segyio / "small-ps.sgy"), "--name",
                                  "ps2").stdout)
    assert "`segy.offset: N`" in json_err["error"], json_err  # --json: the daemon's own words, keys and all
