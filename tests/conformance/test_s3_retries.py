"""Section 3, "Retries, restarts and timeouts", through raw frames and real daemon restarts: a submit whose reply
was never read, sent again with its key on a new socket, makes one job, also when the daemon was killed with
SIGKILL in between; a request queued in a DEALER while no daemon runs is answered by the daemon that starts; a
subscription made before a restart hears the new daemon's daemon.started, and what it missed is in `events`; a
stream session does not outlive its daemon."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from tests.conformance.wire import Conn, Daemon, dealer, header, next_event, subscriber, wait_until

SLOW = {"kind": "test.steps", "steps": 400, "step_s": 0.01}


@pytest.fixture()
def fresh(tmp_path: Path):
    d = Daemon({"SEISD_HOME": str(tmp_path / "home")}, log=tmp_path / "seisd.out")
    with d:
        yield d


def _jobs_named(c: Conn, name: str) -> list[dict]:
    return [j for j in c.call("jobs", {"limit": 10000})["jobs"] if j["name"] == name]


def _submit_and_drop(d: Daemon, job: dict, key: str) -> None:
    """Send a submit and close the socket without reading the reply, once the daemon has the job."""
    s = dealer(d.control)
    s.send(header("submit", {"job": job, "key": key}))
    watcher = d.conn()
    try:
        wait_until(lambda: _jobs_named(watcher, job["name"]), what="the daemon to take the submit")
    finally:
        watcher.close()
    s.close(0)


def test_a_retried_submit_after_a_lost_reply_makes_one_job(fresh: Daemon) -> None:
    key, job = uuid.uuid4().hex, {**SLOW, "name": "once"}
    _submit_and_drop(fresh, job, key)
    c = fresh.conn()
    try:
        again = c.call("submit", {"job": job, "key": key})
        assert again["repeated"] is True
        assert [j["id"] for j in _jobs_named(c, "once")] == [again["id"]]
    finally:
        c.close()


def test_a_retried_submit_across_a_kill9_makes_one_job(fresh: Daemon) -> None:
    # 40 s of steps: still queued or running after the restart on a loaded machine (it is cancelled at the end)
    key, job = uuid.uuid4().hex, {**SLOW, "steps": 4000, "name": "once-9"}
    _submit_and_drop(fresh, job, key)
    fresh.kill9()
    fresh.start()
    c = fresh.conn()
    try:
        again = c.call("submit", {"job": job, "key": key})
        assert again["repeated"] is True and again["state"] in ("queued", "running")
        assert [j["id"] for j in _jobs_named(c, "once-9")] == [again["id"]]
        c.call("cancel", {"id": again["id"]})
    finally:
        c.close()


def test_queued_requests_subscriptions_and_sessions_across_a_restart(fresh: Daemon) -> None:
    c = fresh.conn(60_000)
    first = c.call("status")["session"]
    last_seq = max([0] + [e["seq"] for e in c.call("events")["events"]])
    sub = subscriber(fresh.events, "daemon")
    time.sleep(0.3)  # let the subscription reach the daemon
    assert fresh.stop() == 0
    stopping = next_event(sub, 10, lambda ev: ev["type"] == "daemon.stopping")
    assert stopping is not None and stopping["seq"] > last_seq and stopping["session"] == first
    # requests sent while no daemon runs wait in the DEALER (one connected to the old daemon, one connected after it
    # stopped) and are answered by the next daemon
    c.sock.send(header("ping", rid="old-dealer"))
    waiting = dealer(fresh.control, 60_000)
    waiting.send(header("ping", rid="new-dealer"))
    time.sleep(0.5)
    fresh.start()
    reply = json.loads(waiting.recv_multipart()[0])
    waiting.close(0)
    assert reply["re"] == "new-dealer" and reply["ok"] and reply["session"] != first
    old = json.loads(c.sock.recv_multipart()[0])
    c.close()
    assert old["re"] == "old-dealer" and old["session"] == reply["session"]
    # the subscription made before the restart hears the new daemon start (the SUB reconnected by itself)
    started = next_event(sub, 10, lambda ev: ev["type"] == "daemon.started")
    sub.close(0)
    assert started is not None and started["session"] == reply["session"] and started["seq"] > stopping["seq"]
    assert started["data"]["session"] == reply["session"] and started["_topic"] == "daemon"
    # and what a subscriber missed is read back by seq, whatever its topic
    c = fresh.conn()
    try:
        missed = c.call("events", {"after": last_seq})["events"]
        types = [e["type"] for e in missed]
        assert "daemon.stopping" in types and "daemon.started" in types
        assert [e["seq"] for e in missed] == sorted(e["seq"] for e in missed)
        assert all(e["topic"] == "daemon" for e in missed if e["type"].startswith("daemon."))
    finally:
        c.close()
