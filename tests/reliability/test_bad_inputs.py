"""Bad inputs refused at submit, and no data lost to a name: a real daemon with tcp on and paths.inputs empty (the
default), stocked with the F3 crop; the cases are in tests/reliability/badinputs.py (tools/bench_reliability.py
counts the same ones)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from client.api import Client
from tests.harness import RunningDaemon, steps_job, wait_state
from tests.reliability import badinputs as B


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[tuple[RunningDaemon, Client, Path]]:
    base = tmp_path_factory.mktemp("bad-inputs")
    d, secret = B.tcp_daemon(base)
    with d:
        B.stock(d, base / "files", shared_data)
        with B.tcp_client(d, secret) as tcp:
            yield d, tcp, base


def _cases(bad: tuple[RunningDaemon, Client, Path], group: str) -> list[B.Outcome]:
    d, tcp, base = bad
    cases = [c for c in B.cases(d.home, base / "scratch", base / "files") if c.group == group]
    assert cases
    return B.run_cases(d, tcp, cases)


def _unclear(outcomes: list[B.Outcome]) -> list[tuple[str, str]]:
    return [(o.case.name, o.message) for o in outcomes if not o.clear]


def test_importing_a_survey_keeps_a_survey_named_like_its_temporary_folder(bad, shared_data: Path) -> None:
    d, _, base = bad
    lost, why = B.name_collision_losses(d, base / "files" / "f3.sgy")
    assert lost == 0, why


def test_names_shaped_like_temporary_names_are_refused(bad) -> None:
    assert _unclear(_cases(bad, "names")) == []


def test_listings_show_no_temporary_names(bad) -> None:
    """What an interrupted import or pick-set save leaves behind is never listed as a survey or a pick set."""
    d, _, _ = bad
    left = d.home / "surveys" / ".h.partial"
    left.mkdir(exist_ok=True)
    (left / "survey.json").write_text((d.home / "surveys" / "f3" / "survey.json").read_text())
    (d.home / "surveys" / "f3" / "picks" / ".two.tmp.npz").write_bytes(
        (d.home / "surveys" / "f3" / "picks" / "two.npz").read_bytes())
    try:
        listing = {s["name"]: s for s in d.client.call("survey.list")["surveys"]}
        assert ".h.partial" not in listing and "f3" in listing, listing
        assert listing["f3"]["picks"] == ["two"], listing["f3"]
    finally:
        (d.home / "surveys" / "f3" / "picks" / ".two.tmp.npz").unlink()
        (left / "survey.json").unlink()
        left.rmdir()


def test_hostile_paths_are_refused_naming_the_key(bad) -> None:
    assert _unclear(_cases(bad, "paths")) == []


def test_a_relative_path_out_of_the_home_is_no_oracle_of_which_files_exist(bad) -> None:
    """`../../../etc/hostname` (exists) and `../../../etc/no-such-file-here` get the same answer."""
    outcomes = {o.case.name: o for o in _cases(bad, "paths")}
    pairs = [(k, k.replace("etc/hostname", "etc/no-such-file-here")) for k in outcomes if "etc/hostname" in k]
    assert pairs
    for there, absent in pairs:
        a, b = outcomes[there], outcomes[absent]
        assert a.refused and b.refused, (a.message, b.message)
        assert a.message.replace("hostname", "X") == b.message.replace("no-such-file-here", "X"), (a.message,
                                                                                                 b.message)


def test_oversized_requests_are_refused_naming_the_machine(bad) -> None:
    outcomes = _cases(bad, "sizes")
    assert _unclear(outcomes) == []
    workers = next(o for o in outcomes if o.case.name == "data.workers 256")
    assert f"{len(os.sched_getaffinity(0))} CPU" in workers.message, workers.message


def test_code_and_outside_files_are_refused_over_tcp(bad) -> None:
    d, tcp, base = bad
    outcomes = _cases(bad, "code")
    assert _unclear(outcomes) == []
    assert not (base / "scratch" / "ran").exists(), "a program named by a tcp client ran"
    # the same custom job over the local socket is accepted (and runs)
    job = next(o.case.job for o in outcomes if o.case.name == "custom script over tcp")
    done = wait_state(d.client, d.client.submit(job)["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert (base / "scratch" / "ran").read_text() == "ran"
    (base / "scratch" / "ran").unlink()


def test_picks_swapped_for_a_fifo_after_submit_fail_the_job_instead_of_blocking_it(bad) -> None:
    d, _, base = bad
    c = d.client
    picks = base / "scratch" / "late.pts"
    picks.parent.mkdir(exist_ok=True)
    picks.write_text((base / "files" / "multi_sand_ilxl.pts").read_text())
    blocker = c.submit(steps_job(steps=400, step_s=0.02))["id"]  # the one CPU slot is busy: the import waits
    wait_state(c, blocker, "running")
    job = c.submit({"kind": "import", "survey": "f3", "picks": {"files": [str(picks)], "set": "late",
                                                                 "class_pattern": "(?P<name>late)"}})["id"]
    picks.unlink()
    os.mkfifo(picks)
    c.cancel(blocker)
    try:
        done = wait_state(c, job, timeout=30)
    finally:
        if c.show(job)["state"] not in ("failed", "succeeded", "cancelled"):
            c.cancel(job)
            time.sleep(2)
    assert done["state"] == "failed" and "not a regular file" in done["error"] and str(picks) in done["error"], done
    assert c.ping()


def test_tcp_allow_code_lets_tcp_clients_run_code(tmp_path: Path) -> None:
    """The setting that opens the door is wired: with tcp.allow_code true the same custom job over tcp runs (its
    script inside paths.inputs, the rule for files still holding)."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    script = inputs / "run.py"
    script.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    d, secret = B.tcp_daemon(tmp_path, {"SEISD_TCP__ALLOW_CODE": "true", "SEISD_PATHS__INPUTS": f"[{inputs}]"})
    with d, B.tcp_client(d, secret) as tcp:
        done = wait_state(tcp, tcp.submit({"kind": "custom", "script": str(script)})["id"], timeout=60)
        assert done["state"] == "succeeded" and (tmp_path / "ran").read_text() == "ran", done
        outside = B.submit(tcp, B.Case("outside", "code", {"kind": "custom", "script": str(tmp_path / "x.py")},
                                       "script", "outside the folders", "tcp"))
        assert outside.clear, outside.message
