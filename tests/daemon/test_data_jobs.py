"""The data job kinds through a real daemon and the real seisctl: import SEG-Y and picks, extract, example sets."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import segyio

from client.api import SeisdError
from tests.harness import RunningDaemon, daemon_env, steps_job, wait_state
from workers.picks import pick_set_names


def seisctl(home: Path, *args: str, extra_env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """Run the real seisctl with --json; returns (exit code, parsed stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "client.cli", "--json", *args], capture_output=True, text=True,
                       env=daemon_env(home, extra_env), timeout=120)
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr


@pytest.fixture(scope="module")
def data_daemon(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    home = tmp_path_factory.mktemp("datahome")
    allowed = f"[{shared_data.resolve()}, {home.parent.resolve()}]"
    with RunningDaemon(home, env={"SEISD_PATHS__INPUTS": allowed}) as d:
        yield d


def test_import_f3_keeps_its_geometry(data_daemon: RunningDaemon, shared_data: Path) -> None:
    home = data_daemon.home
    code, job, err = seisctl(home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name", "f3")
    assert code == 0, err
    assert job["state"] == "succeeded"
    assert job["result"]["inlines"] == [111, 133] and job["result"]["crosslines"] == [875, 892]
    code, info, _ = seisctl(home, "survey", "info", "f3")
    with segyio.open(shared_data / "segyio" / "f3.sgy") as f:
        assert info["shape"] == [len(f.ilines), len(f.xlines), len(f.samples)]
        assert info["samples"] == [float(f.samples[0]), float(f.samples[-1])]
    code, listing, _ = seisctl(home, "survey", "list")
    assert [s["name"] for s in listing["surveys"]] == ["f3"]


def test_little_endian_file_needs_no_flag(data_daemon: RunningDaemon, shared_data: Path) -> None:
    code, job, err = seisctl(data_daemon.home, "survey", "import", str(shared_data / "segyio" / "f3-lsb.sgy"),
                             "--name", "f3lsb")
    assert code == 0, err
    assert job["result"]["endian"] == "little"


@pytest.mark.parametrize("name,why", [("broken.sgy", "truncated"), ("text.sgy", ""), ("shot-gather.sgy", "")])
def test_bad_segy_fails_with_the_reason_and_daemon_goes_on(data_daemon: RunningDaemon, shared_data: Path,
                                                           name: str, why: str) -> None:
    code, job, _ = seisctl(data_daemon.home, "survey", "import", str(shared_data / "segyio" / name), "--name",
                           "bad-" + name.split(".")[0])
    assert code == 1 and job["state"] == "failed"
    assert name in job["error"] and why in job["error"]
    assert not (data_daemon.home / "surveys" / ("bad-" + name.split(".")[0])).exists()
    assert data_daemon.client.ping()["session"]


def test_picks_outside_the_survey_are_refused_then_dropped(data_daemon: RunningDaemon, shared_data: Path,
                                                           tmp_path: Path) -> None:
    home = data_daemon.home
    if not (home / "surveys" / "f3").exists():
        seisctl(home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name", "f3")
    malenov = sorted((shared_data / "malenov-picks").glob("*.pts"))
    code, job, _ = seisctl(home, "picks", "import", "f3", *map(str, malenov[:2]))
    assert code == 1 and "outside survey" in job["error"]
    mine = tmp_path / "multi_sand_ilxl.pts"
    mine.write_text("120\t880\t100\n120\t881\t104\n120\t881\t104\n999\t880\t100\n")
    code, job, err = seisctl(home, "picks", "import", "f3", str(mine), "--set", "mine", "--drop-outside")
    assert code == 0, err
    assert job["result"]["classes"] == {"sand": 2}
    assert job["result"]["dropped_outside"] == 1 and job["result"]["dropped_duplicates"] == 1


def test_example_set_round_trip(data_daemon: RunningDaemon, shared_data: Path, tmp_path: Path) -> None:
    home = data_daemon.home
    if not (home / "surveys" / "f3").exists():
        seisctl(home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name", "f3")
    rng = np.random.default_rng(0)
    for cls in ("sand", "shale"):
        rows = [f"{rng.integers(111, 134)}\t{rng.integers(875, 893)}\t{4 * rng.integers(2, 74)}" for _ in range(30)]
        (tmp_path / f"multi_{cls}_ilxl.pts").write_text("\n".join(rows) + "\n")
    code, _, err = seisctl(home, "picks", "import", "f3", *map(str, sorted(tmp_path.glob("*.pts"))), "--set", "two")
    assert code == 0, err
    code, job, err = seisctl(home, "examples", "extract", "ex1", "--survey", "f3", "--picks", "two",
                             "--size", "16", "16")
    assert code == 0, err
    code, info, _ = seisctl(home, "examples", "info", "ex1")
    assert info["count"] == job["result"]["count"] > 0 and set(info["classes"]) == {"sand", "shale"}
    assert info["crop"] == {"size": [16, 16], "orientation": "inline"} and info["job"] == str(job["id"])
    assert seisctl(home, "examples", "lock", "ex1")[1]["locked"] is True
    code, out, _ = seisctl(home, "examples", "rm", "ex1")
    assert code == 5 and out["error"]["code"] == "conflict" and "locked" in out["error"]["message"]
    assert (home / "examples" / "ex1.h5").exists()
    assert seisctl(home, "examples", "unlock", "ex1")[1]["locked"] is False
    assert seisctl(home, "examples", "rm", "ex1")[0] == 0
    assert seisctl(home, "examples", "list")[1]["examples"] == []


def test_job_files_naming_bad_paths_and_names_are_refused(data_daemon: RunningDaemon, tmp_path: Path) -> None:
    c = data_daemon.client
    with pytest.raises(SeisdError) as err:
        c.submit({"kind": "import", "survey": "../escape", "segy": {"file": "/etc/hostname"}})
    problems = err.value.details["problems"]
    assert err.value.code == "invalid_job"
    assert any(p.startswith("segy.file:") and "outside the folders" in p for p in problems)
    with pytest.raises(SeisdError) as err:
        c.submit({"kind": "import", "survey": "../escape", "segy": {"file": str(tmp_path / "none.sgy")}})
    problems = err.value.details["problems"]
    assert any(p.startswith("survey:") and "not a valid name" in p for p in problems)
    assert any(p.startswith("segy.file:") and "does not exist" in p for p in problems)
    with pytest.raises(SeisdError) as err:
        c.submit({"kind": "import", "survey": "x"})
    assert "exactly one of" in err.value.message


def test_survey_in_use_cannot_be_removed(data_daemon: RunningDaemon, shared_data: Path) -> None:
    home, c = data_daemon.home, data_daemon.client
    if not (home / "surveys" / "f3").exists():
        seisctl(home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name", "f3")
    blocker = c.submit(steps_job(steps=400, step_s=0.02))["id"]   # keeps the one CPU slot busy
    wait_state(c, blocker, "running")
    queued = c.submit({"kind": "extract", "examples": "later", "sources": [{"survey": "f3", "picks": "mine"}],
                       "crop": {"size": [8, 8]}})["id"]
    with pytest.raises(SeisdError) as err:
        c.call("survey.rm", name="f3")
    assert err.value.code == "conflict" and str(queued) in err.value.message
    c.cancel(queued)
    c.cancel(blocker)
    wait_state(c, blocker)


def test_names_past_the_file_systems_limit_are_refused_by_name(data_daemon: RunningDaemon, tmp_path: Path,
                                                               shared_data: Path) -> None:
    """A name of 300 characters (past NAME_MAX) is a problem of the job file, never an OSError of a check that
    looked for it on disk (found by tests/reliability/test_fuzz_jobfiles.py: a survey, an example set, then a pick
    set of an existing survey)."""
    if not (data_daemon.home / "surveys" / "f3" / "survey.json").is_file():
        code, _, err = seisctl(data_daemon.home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name",
                               "f3")
        assert code == 0, err
    long = "x" * 300
    pts = tmp_path / "multi_sand_ilxl.pts"
    pts.write_text("120\t880\t100\n")
    jobs = {"survey": {"kind": "import", "survey": long, "picks": {"files": [str(pts)]}},
            "data.examples.0": {"kind": "train", "output": "m", "data": {"examples": [long], "crop": {"size": [8, 8]}},
                                "model": {"name": "patchcnn"}},
            "sources.0.picks": {"kind": "extract", "examples": "ex", "crop": {"size": [8, 8]},
                                "sources": [{"survey": "f3", "picks": long}]},
            "data.picks": {"kind": "train", "output": "m", "model": {"name": "patchcnn"},
                           "data": {"survey": "f3", "picks": long, "crop": {"size": [8, 8]}}}}
    for key, job in jobs.items():
        with pytest.raises(SeisdError) as err:
            data_daemon.client.submit(job)
        assert err.value.code == "invalid_job", (key, err.value.code, err.value.message)
        assert any(p.startswith(f"{key}:") and "not a valid name" in p for p in err.value.details["problems"]), \
            err.value.details


def test_a_missing_pick_set_is_refused_by_name_with_the_sets_the_survey_has(data_daemon: RunningDaemon,
                                                                          shared_data: Path) -> None:
    """train and extract name the missing pick set, and the sets the survey has (daemon/kinds/data.py
    pick_set_problem, which suggest's check uses too); train adds the import that would make it."""
    if not (data_daemon.home / "surveys" / "f3" / "survey.json").is_file():
        code, _, err = seisctl(data_daemon.home, "survey", "import", str(shared_data / "segyio" / "f3.sgy"), "--name",
                               "f3")
        assert code == 0, err
    listed = ", ".join(pick_set_names(data_daemon.home / "surveys" / "f3")) or "none"
    jobs = {"sources.0.picks": {"kind": "extract", "examples": "ex", "crop": {"size": [8, 8]},
                                "sources": [{"survey": "f3", "picks": "absent"}]},
            "data.picks": {"kind": "train", "output": "m", "model": {"name": "patchcnn"},
                           "data": {"survey": "f3", "picks": "absent", "crop": {"size": [8, 8]}}}}
    for key, job in jobs.items():
        with pytest.raises(SeisdError) as err:
            data_daemon.client.submit(job)
        problems = err.value.details["problems"]
        want = f"{key}: survey 'f3' has no pick set 'absent' (it has {listed})"
        assert any(p.startswith(want) for p in problems), (want, problems)
        if key == "data.picks":
            assert any("seisctl picks import f3 FILES --set absent" in p for p in problems), problems
