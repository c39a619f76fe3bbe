"""Section 6, "Events", through a SUB socket and the `events` operation: two frames (topic, body); the body's
fields; every type the table marks stored has a seq from one increasing counter and is read back by `events` (a
job's with its id, every topic's without), the others have seq 0; topics are byte prefixes."""
from __future__ import annotations

import time

from tests.conformance.wire import Daemon, next_event, subscriber, wait_until

STORED = {"job.state", "job.progress", "job.metrics", "daemon.started", "daemon.stopping", "viewer.state"}
NOT_STORED = {"job.log", "daemon.executor"}


def test_events_frames_seq_and_what_is_stored(daemon: Daemon) -> None:
    sub = subscriber(daemon.events, "")
    c = daemon.conn()
    try:
        time.sleep(0.3)
        earlier = {e["seq"]: e for e in c.call("events", {"limit": 10000})["events"]}
        before = max([0, *earlier])
        job = c.call("submit", {"job": {"kind": "test.steps", "steps": 3, "step_s": 0.05}})["id"]
        c.call("viewer.start", {"name": "examples"})
        wait_until(lambda: c.call("show", {"id": job})["state"] == "succeeded", what="the job to succeed")
        wait_until(lambda: c.call("viewer.status", {"name": "examples"})["state"] in ("running", "crashed"),
                   timeout_s=60, what="the viewer to start")
        c.call("viewer.stop", {"name": "examples"})
        got, deadline = [], time.monotonic() + 30  # until a 1 s quiet gap, at most 30 s
        while time.monotonic() < deadline and (ev := next_event(sub, 1.0)) is not None:
            got.append(ev)
        stored = c.call("events", {"after": before, "limit": 10000})["events"]
    finally:
        sub.close(0)
        c.close()
    assert got, "no events"
    for ev in got:
        assert set(ev) == {"v", "session", "seq", "time", "type", "topic", "data", "_topic"}
        assert ev["topic"] == ev["_topic"] and ev["v"] == 1
    types = {ev["type"] for ev in got}
    assert {"job.state", "job.progress", "job.log", "viewer.state", "daemon.executor"} <= types
    for ev in got:
        if ev["type"] in NOT_STORED:
            assert ev["seq"] == 0, ev
        else:  # stored after `before`, or (daemon.started, published 1 s after the start) stored before it
            assert ev["type"] in STORED and (ev["seq"] > before or ev["seq"] in earlier), ev
    published = [ev["seq"] for ev in got if ev["seq"]]
    assert published == sorted(published) and len(set(published)) == len(published)
    # every stored event published is in `events` (no id: every topic), with the same seq, type, topic and data
    by_seq = earlier | {e["seq"]: e for e in stored}
    for ev in got:
        if ev["seq"]:
            e = by_seq[ev["seq"]]
            assert (e["type"], e["topic"], e["data"]) == (ev["type"], ev["topic"], ev["data"])
    viewer = [e for e in stored if e["type"] == "viewer.state"]
    assert viewer and all(e["topic"] == "viewer.examples" for e in viewer)


def test_subscriptions_are_byte_prefixes(daemon: Daemon) -> None:
    c = daemon.conn()
    sub = subscriber(daemon.events, "job.1")
    try:
        time.sleep(0.3)
        ids = [c.call("submit", {"job": {"kind": "test.steps", "steps": 1, "step_s": 0.0}})["id"] for _ in range(12)]
        wait_until(lambda: all(c.call("show", {"id": i})["state"] == "succeeded" for i in ids), what="12 jobs")
        topics, deadline = set(), time.monotonic() + 30  # until a 1 s quiet gap, at most 30 s
        while time.monotonic() < deadline and (ev := next_event(sub, 1.0)) is not None:
            topics.add(ev["_topic"])
    finally:
        sub.close(0)
        c.close()
    assert topics and all(t.startswith("job.1") for t in topics)
    assert topics == {f"job.{i}" for i in ids if str(i).startswith("1")}  # job.1 delivers job.1x too
