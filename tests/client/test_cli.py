"""The real `seisctl` (python -m client.cli) against a real daemon: --json output and exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from client import protocol as P
from tests.harness import (ROOT, RunningDaemon, daemon_env, seisctl, seisctl_json,  # noqa: F401  (others import them from here)
                           steps_job, wait_for, wait_state)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with RunningDaemon(tmp_path_factory.mktemp("cli") / "home") as d:
        yield d


def job_file(tmp_path: Path, job: dict, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job))
    return str(path)


def test_daemon_status_json(daemon: RunningDaemon) -> None:
    s = seisctl_json(daemon.home, "daemon", "status")
    assert s["pid"] == daemon.pid and s["version"] and s["session"] == daemon.client.ping()["session"]
    assert [d["slot"] for d in s["devices"]] == ["cpu"]
    assert set(s["jobs"]) >= {"queued", "running", "succeeded", "failed", "cancelled"}
    assert all(isinstance(n, int) for n in s["jobs"].values())


def test_submit_detach_then_show(daemon: RunningDaemon, tmp_path: Path) -> None:
    r = seisctl_json(daemon.home, "submit", "--detach", "--priority", "3", job_file(tmp_path, steps_job(steps=2)))
    job_id = r["id"]
    assert isinstance(job_id, int) and r["state"] == "queued"
    wait_state(daemon.client, job_id)
    shown = seisctl_json(daemon.home, "show", str(job_id))
    for key in ("id", "kind", "state", "priority", "progress", "error"):
        assert key in shown
    assert (shown["id"], shown["kind"], shown["state"], shown["priority"], shown["progress"], shown["error"]) == \
        (job_id, "test.steps", "succeeded", 3, 1.0, None)
    listed = seisctl_json(daemon.home, "jobs", "--state", "succeeded")
    assert job_id in [j["id"] for j in listed["jobs"]]


def test_submit_waits_and_exits_0(daemon: RunningDaemon, tmp_path: Path) -> None:
    r = seisctl_json(daemon.home, "submit", job_file(tmp_path, steps_job(steps=3, step_s=0.05)))
    assert r["state"] == "succeeded" and isinstance(r["id"], int)
    assert r["result"]["steps"] == 3
    assert daemon.client.show(r["id"])["state"] == "succeeded"


def test_failed_job_exits_1(daemon: RunningDaemon, tmp_path: Path) -> None:
    r = seisctl_json(daemon.home, "submit", job_file(tmp_path, steps_job(steps=3, fail_at=1)), code=1)
    assert r["state"] == "failed" and "asked to fail at step 1" in r["error"]


def test_invalid_job_file_exits_2_listing_every_problem(daemon: RunningDaemon, tmp_path: Path) -> None:
    path = job_file(tmp_path, {"kind": "test.steps", "steps": -1, "step_s": "fast", "colour": "red"})
    before = daemon.client.status()["jobs"]
    r = seisctl(daemon.home, "submit", path)
    assert r.returncode == 2
    assert "3 problems" in r.stderr
    for key in ("steps", "step_s", "colour"):
        assert f"  - {key}:" in r.stderr
    j = seisctl_json(daemon.home, "submit", path, code=2)
    assert j["error"]["code"] == P.ErrorCode.INVALID_JOB and len(j["error"]["details"]["problems"]) == 3
    assert daemon.client.status()["jobs"] == before


def test_unreadable_job_files_exit_2(daemon: RunningDaemon, tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kind: [unclosed\n")
    r = seisctl(daemon.home, "submit", str(bad_yaml))
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = seisctl(daemon.home, "submit", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "cannot read job file" in r.stderr
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    r = seisctl(daemon.home, "submit", str(listed))
    assert r.returncode == 2 and "mapping" in r.stderr


def test_cancelled_job_exits_4(daemon: RunningDaemon, tmp_path: Path) -> None:
    path = job_file(tmp_path, steps_job(steps=3000, step_s=0.01, name="to-cancel"))
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", "--json", "submit", path], cwd=ROOT,
                            env=daemon_env(daemon.home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        c = daemon.client
        job = wait_for(lambda: next((j for j in c.jobs(state=["running"]) if j["name"] == "to-cancel"), None),
                       what="the submitted job to run")
        assert seisctl_json(daemon.home, "cancel", str(job["id"]))["state"] == "cancelling"
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 4, err
    assert json.loads(out)["state"] == "cancelled"


def test_unknown_job_exits_5(daemon: RunningDaemon) -> None:
    j = seisctl_json(daemon.home, "show", "987654", code=5)
    assert j["error"]["code"] == P.ErrorCode.NOT_FOUND


def test_no_daemon_exits_3_and_says_how_to_start(tmp_path: Path) -> None:
    home = tmp_path / "nobody-home"
    r = seisctl(home, "--timeout", "1", "daemon", "status")
    assert r.returncode == 3
    assert "seisctl daemon start" in r.stderr and str(home.resolve()) in r.stderr
    j = seisctl_json(home, "--timeout", "1", "jobs", code=3)
    assert j["error"]["code"] == "unavailable" and "seisctl daemon start" in j["error"]["message"]


def test_logs_and_devices(daemon: RunningDaemon, tmp_path: Path) -> None:
    job_id = seisctl_json(daemon.home, "submit", job_file(tmp_path, steps_job(steps=2)))["id"]
    logs = seisctl_json(daemon.home, "logs", str(job_id))
    assert "counting from 0 to 2" in logs["text"] and logs["offset"] == len(logs["text"].encode())
    devices = seisctl_json(daemon.home, "devices")["devices"]
    assert devices[0]["slot"] == "cpu" and devices[0]["executor_pid"] in daemon.executor_pids()
    human = seisctl(daemon.home, "show", str(job_id))
    assert human.returncode == 0 and "succeeded" in human.stdout and "history:" in human.stdout


def test_data_commands_leave_the_defaults_to_the_daemon(daemon: RunningDaemon, shared_data: Path,
                                                        tmp_path: Path) -> None:
    """survey import, picks import and examples extract without options: the job the daemon stored (its `spec`,
    defaults filled in) has the daemon's defaults, e.g. inline byte 189 and crossline byte 193."""
    imported = seisctl_json(daemon.home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name",
                            "f3-defaults")
    segy = seisctl_json(daemon.home, "show", str(imported["id"]))["spec"]["segy"]
    assert (segy["iline"], segy["xline"], segy["volume"], segy["add_volume"], segy["endian"], segy["sample_unit"],
            segy["offset"]) == (189, 193, "seismic", False, "auto", "ms", None)
    assert imported["state"] == "succeeded", imported
    picks_file = tmp_path / "multi_sand_ilxl.pts"
    picks_file.write_text("".join(f"{il}\t{xl}\t100\n" for il in (115, 120, 125) for xl in (880, 885)))
    job = seisctl_json(daemon.home, "picks", "import", "f3-defaults", str(picks_file))
    picks = seisctl_json(daemon.home, "show", str(job["id"]))["spec"]["picks"]
    assert (picks["set"], picks["z_unit"], picks["drop_outside"], picks["class_column"]) == \
        ("default", "auto", False, None)
    assert job["state"] == "succeeded", job
    job = seisctl_json(daemon.home, "examples", "extract", "ex-defaults", "--survey", "f3-defaults", "--size", "8",
                       "8")
    spec = seisctl_json(daemon.home, "show", str(job["id"]))["spec"]
    assert (spec["sources"][0]["picks"], spec["sources"][0]["volumes"], spec["crop"]["orientation"],
            spec["notes"]) == ("default", ["seismic"], "inline", "")
    assert job["state"] == "succeeded", job
