"""The control plane through a real daemon: submit, list, show, cancel, priorities, failures, events.

One daemon (one CPU slot) serves the whole module; every test leaves it idle and healthy.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from client import protocol as P
from client.api import SeisdError
from tests.harness import RunningDaemon, job_states, steps_job, wait_for, wait_state


def _occupy(d: RunningDaemon) -> int:
    """Start a long job that holds the only slot; the caller cancels it."""
    blocker = d.client.submit(steps_job(steps=2000, step_s=0.01))["id"]
    wait_state(d.client, blocker, "running")
    return blocker


def test_status_names_daemon_devices_and_counts(shared_daemon: RunningDaemon) -> None:
    s = shared_daemon.client.status()
    assert s["pid"] == shared_daemon.pid
    assert s["protocol"] == P.PROTOCOL_VERSION and s["version"]
    assert len(s["session"]) >= 16
    assert [d["slot"] for d in s["devices"]] == ["cpu"]
    assert s["devices"][0]["state"] == "ready" and s["devices"][0]["executor_pid"]
    assert set(s["jobs"]) == set(P.JOB_STATES)
    assert s["limits"]["max_header_bytes"] == P.MAX_HEADER_BYTES
    keys = Path(s["authorized_keys"])  # where `seisctl` puts authorised client keys: tcp.authorized_keys resolved
    assert keys.is_absolute() and keys == shared_daemon.home.resolve() / "keys" / "authorized"


def test_submit_list_show(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    before = c.status()["jobs"]["succeeded"]
    r = c.submit(steps_job(steps=4, name="counting"), priority=7)
    assert r["state"] == "queued" and isinstance(r["id"], int)
    job = wait_state(c, r["id"])
    assert job["state"] == "succeeded", job
    assert job["kind"] == "test.steps" and job["name"] == "counting" and job["priority"] == 7
    assert job["progress"] == 1.0 and job["error"] is None and job["attempts"] == 1
    assert job["result"] == {"steps": 4, "resumed_from": 0, "workers": 1}
    assert job_states(job) == ["queued", "running", "succeeded"]
    assert job["spec"]["steps"] == 4
    assert job["started"] >= job["created"] and job["finished"] >= job["started"]
    assert any(j["id"] == r["id"] for j in c.jobs(state=["succeeded"], kind="test.steps"))
    assert not any(j["id"] == r["id"] for j in c.jobs(state=["failed"]))
    assert c.status()["jobs"]["succeeded"] == before + 1


def test_jobs_lists_newest_first_and_limits(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    ids = [c.submit(steps_job(steps=1))["id"] for _ in range(3)]
    for i in ids:
        wait_state(c, i)
    listed = [j["id"] for j in c.jobs(limit=2)]
    assert listed == [ids[2], ids[1]]


def test_invalid_job_is_refused_with_every_problem(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    before = c.status()["jobs"]
    with pytest.raises(SeisdError) as err:
        c.submit({"kind": "test.steps", "steps": 0, "step_s": "slow", "stepz": 3})
    assert err.value.code == P.ErrorCode.INVALID_JOB
    problems = err.value.details["problems"]
    assert len(problems) == 3
    assert any(p.startswith("steps:") for p in problems)
    assert any(p.startswith("step_s:") for p in problems)
    assert any(p.startswith("stepz:") and "unknown key" in p for p in problems)
    with pytest.raises(SeisdError) as err:
        c.submit({"kind": "no.such.kind"})
    assert err.value.code == P.ErrorCode.INVALID_JOB and "test.steps" in err.value.message
    assert c.status()["jobs"] == before  # nothing queued


def test_unknown_job_is_not_found(shared_daemon: RunningDaemon) -> None:
    for call in (lambda c: c.show(999_999), lambda c: c.cancel(999_999), lambda c: c.logs(999_999)):
        with pytest.raises(SeisdError) as err:
            call(shared_daemon.client)
        assert err.value.code == P.ErrorCode.NOT_FOUND and "999999" in err.value.message


def test_cancel_queued_and_running(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    blocker = _occupy(shared_daemon)
    queued = c.submit(steps_job(steps=1))["id"]
    assert c.cancel(queued) == {"id": queued, "state": "cancelled"}
    assert c.show(queued)["state"] == "cancelled"
    assert c.cancel(blocker)["state"] == "cancelling"
    job = wait_state(c, blocker)
    assert job["state"] == "cancelled"
    assert job_states(job) == ["queued", "running", "cancelled"]
    assert 0 < job["progress"] < 1
    assert job_states(c.show(queued)) == ["queued", "cancelled"]
    # a repeated cancel (its first reply lost) gets the same answer, and changes nothing
    assert c.cancel(queued) == {"id": queued, "state": "cancelled"}
    assert job_states(c.show(queued)) == ["queued", "cancelled"]
    done = c.submit(steps_job(steps=1))["id"]
    assert wait_state(c, done)["state"] == "succeeded"
    with pytest.raises(SeisdError) as err:
        c.cancel(done)
    assert err.value.code == P.ErrorCode.CONFLICT


def test_priorities_then_fifo(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    blocker = _occupy(shared_daemon)
    plan = [("a", 0), ("b", 5), ("c", 5), ("d", -1), ("e", 0), ("f", 9)]
    ids = {name: c.submit(steps_job(steps=1, name=name), priority=prio)["id"] for name, prio in plan}
    assert all(c.show(i)["state"] == "queued" for i in ids.values())
    c.cancel(blocker)
    done = {name: wait_state(c, i) for name, i in ids.items()}
    assert all(j["state"] == "succeeded" for j in done.values())
    order = sorted(done, key=lambda name: done[name]["started"])
    assert order == ["f", "b", "c", "a", "e", "d"]


def test_failing_job_names_error_and_logs_traceback(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    job_id = c.submit(steps_job(steps=5, fail_at=2))["id"]
    job = wait_state(c, job_id)
    assert job["state"] == "failed"
    assert "ValueError" in job["error"] and "asked to fail at step 2" in job["error"]
    log = c.logs(job_id)["text"]
    assert "Traceback (most recent call last)" in log
    assert "ValueError: asked to fail at step 2" in log
    # the executor survives a failing job: the next one runs
    assert wait_state(c, c.submit(steps_job(steps=1))["id"])["state"] == "succeeded"


def test_events_over_sub_and_stored(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    sub = c.subscribe("job.")
    try:
        time.sleep(0.3)  # a SUB socket receives only what is published after it has connected
        job_id = c.submit(steps_job(steps=6, step_s=0.1))["id"]
        wait_state(c, job_id)
        received, deadline = [], time.monotonic() + 30  # until a 0.5 s quiet gap, at most 30 s
        while time.monotonic() < deadline and sub.poll(500):
            ev = P.Event.decode(sub.recv_multipart())
            if ev.topic == P.job_topic(job_id):
                received.append(ev)
    finally:
        sub.close(0)
    states = [e.data["state"] for e in received if e.type == P.EventType.JOB_STATE]
    assert states == ["queued", "running", "succeeded"]
    fractions = [e.data["fraction"] for e in received if e.type == P.EventType.JOB_PROGRESS]
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert {e.session for e in received} == {c.status()["session"]}
    stored = c.job_events(job_id)
    assert [e["seq"] for e in stored] == sorted(e.seq for e in received if e.type != P.EventType.JOB_LOG)
    assert [e["type"] for e in stored if e["type"] == P.EventType.JOB_STATE] == [P.EventType.JOB_STATE] * 3
    later = c.job_events(job_id, after=stored[0]["seq"])
    assert later == stored[1:]


def test_workers_control_reaches_running_job(shared_daemon: RunningDaemon) -> None:
    c = shared_daemon.client
    job_id = c.submit(steps_job(steps=2000, step_s=0.01))["id"]
    wait_state(c, job_id, "running")
    wait_for(lambda: c.show(job_id)["progress"] > 0, what="the job to start counting")
    assert c.workers(job_id, 3) == {"count": 3}
    c.cancel(job_id)
    assert wait_state(c, job_id)["state"] == "cancelled"
    with pytest.raises(SeisdError) as err:
        c.workers(job_id, 2)
    assert err.value.code == P.ErrorCode.CONFLICT


def test_daemon_is_idle_after_the_module(shared_daemon: RunningDaemon) -> None:
    s = shared_daemon.client.status()
    assert s["jobs"]["running"] == 0 and s["jobs"]["queued"] == 0
    assert s["devices"][0]["restarts"] == 0  # nothing above killed an executor
