"""The executor protocol (daemon/common/execproto.py) and the one table of what a job's end leads to
(daemon/server/lifecycle.py fate): messages survive the wire, a stranger's frame is refused naming why, and every
failure cause has its fate."""
from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from daemon.common import execproto as E
from daemon.common.execproto import FailureCause as C
from daemon.server.lifecycle import Fate, fate
from daemon.server.store import JobStore

EXAMPLES: list[E.Message] = [
    E.RunJob(job=3, kind="train", spec={"epochs": 2}, job_dir="/h/jobs/3", attempt=2, resume=True, device="cuda:0"),
    E.CancelJob(job=3, reason="cancelled by the user"),
    E.Control(token="t1", job=3, name="workers", args={"count": 4}),
    E.StreamOpen(token="t2", session="s1", model_path="/h/models/m.h5", model="m", outputs=["labels"],
                 batch_size=None, options={"tile": [64, 64, 64]}, torch_device="cpu"),
    E.StreamApply(token="t3", session="s1", arrays=[{"dtype": "float32", "shape": [2, 3, 4]}]),
    E.StreamClose(token="t4", session="s1"),
    E.Exit(),
    E.StreamWelcome(session="abc"),
    E.Hello(slot="cpu", pid=1234, threads=4),
    E.StreamHello(slot="cpu", pid=1234, direct="ipc:///run/seisd/stream-cpu.sock"),
    E.Heartbeat(pid=1234, job=None),
    E.JobProgress(job=3, fraction=0.5, message="epoch 1/2", eta_s=12.0, fields={"epoch": 1}),
    E.JobLog(job=3, level="info", message="started"),
    E.JobMetrics(job=3, figures={"loss": 0.25}),
    E.Done(job=3, outcome=E.Outcome.SUCCEEDED, result={"model": "m"}),
    E.Done(job=3, outcome=E.Outcome.FAILED, cause=C.JOB_ERROR, error="ValueError: no"),
    E.Done(job=3, outcome=E.Outcome.CANCELLED, cause=C.DAEMON_STOPPING, error="daemon stopping"),
    E.Reply(token="t1", ok=True, result={"count": 4}),
    E.Reply.failure("t1", "conflict", "job 3 is not running on cpu"),
]


def test_every_message_has_a_docstring_and_a_type_and_is_in_one_direction() -> None:
    every = E.TO_EXECUTOR + E.TO_STREAM + E.TO_DAEMON
    assert len({m.TYPE for m in every}) == len(every) == len(E.MESSAGES)
    assert all(m.__doc__ and m.TYPE for m in every)
    assert {type(m) for m in EXAMPLES} == set(every)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: m.TYPE)
def test_messages_survive_the_wire_with_their_version(msg: E.Message) -> None:
    frame = E.encode(msg)
    body = json.loads(frame)
    assert body["v"] == E.PROTOCOL_VERSION and body["type"] == msg.TYPE
    assert E.decode(frame) == msg


def test_numpy_figures_go_as_plain_numbers() -> None:
    msg = E.decode(E.encode(E.JobMetrics(job=1, figures={"loss": np.float32(0.5), "n": np.int64(3)})))
    assert msg.figures == {"loss": 0.5, "n": 3} and type(msg.figures["n"]) is int


def test_another_version_is_refused_naming_both() -> None:
    body = json.loads(E.encode(E.Hello(slot="cpu", pid=1)))
    other = E.PROTOCOL_VERSION + 1
    with pytest.raises(E.ExecProtocolError, match=f"version {other}, this side speaks {E.PROTOCOL_VERSION}"):
        E.decode(json.dumps({**body, "v": other}).encode())
    body.pop("v")
    with pytest.raises(E.ExecProtocolError, match="version None"):
        E.decode(json.dumps(body).encode())


@pytest.mark.parametrize("frame, words", [
    (b"not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"v": 3, "type": "launch"}', "unknown message type 'launch'"),
    (b'{"v": 3, "type": "hello", "slot": "cpu"}', "missing fields ['pid']"),
    (b'{"v": 3, "type": "hello", "slot": "cpu", "pid": 1, "colour": 2}', "unknown fields ['colour']"),
    (b'{"v": 3, "type": "hello", "slot": "cpu", "pid": "1"}', "hello.pid: expected int"),
    (b'{"v": 3, "type": "hello", "slot": "cpu", "pid": 1, "threads": "2"}', "hello.threads"),
    (b'{"v": 3, "type": "heartbeat", "pid": true, "job": null}', "heartbeat.pid: expected int"),
    (b'{"v": 3, "type": "done", "job": 1, "outcome": "exploded"}', "done.outcome"),
    (b'{"v": 3, "type": "done", "job": 1, "outcome": "failed"}', "cannot have cause None"),
    (b'{"v": 3, "type": "done", "job": 1, "outcome": "succeeded", "cause": "hung"}', "cannot have cause hung"),
    (b'{"v": 3, "type": "reply", "token": "t", "ok": false}', "needs an error code"),
])
def test_bad_frames_are_refused_naming_the_problem(frame: bytes, words: str) -> None:
    with pytest.raises(E.ExecProtocolError, match=words.replace("[", r"\[").replace("]", r"\]")):
        E.decode(frame)


def test_each_side_accepts_only_its_own_direction() -> None:
    with pytest.raises(E.ExecProtocolError, match="unknown message type 'run'"):
        E.decode(E.encode(EXAMPLES[0]), E.TO_DAEMON)
    assert E.decode(E.encode(E.Exit()), E.TO_EXECUTOR) == E.Exit()


FATES = {  # cause -> (fate while running, fate while the daemon stops, fate when retryable)
    None: (Fate.SUCCEED, Fate.SUCCEED, Fate.SUCCEED),
    C.JOB_ERROR: (Fate.FAIL, Fate.FAIL, Fate.FAIL),
    C.CANCELLED: (Fate.CANCEL, Fate.INTERRUPT, Fate.CANCEL),
    C.DAEMON_STOPPING: (Fate.INTERRUPT, Fate.INTERRUPT, Fate.INTERRUPT),
    C.EXECUTOR_DIED: (Fate.FAIL, Fate.INTERRUPT, Fate.RETRY),
    C.OUT_OF_MEMORY: (Fate.FAIL, Fate.INTERRUPT, Fate.RETRY),
    C.HUNG: (Fate.FAIL, Fate.INTERRUPT, Fate.RETRY),
    C.NO_HELLO: (Fate.FAIL, Fate.INTERRUPT, Fate.RETRY),
    C.CANCEL_TIMEOUT: (Fate.CANCEL, Fate.INTERRUPT, Fate.CANCEL),
    C.CANCELLED_BEFORE_START: (Fate.CANCEL, Fate.INTERRUPT, Fate.CANCEL),
    C.TIME_LIMIT: (Fate.FAIL, Fate.INTERRUPT, Fate.FAIL),
    C.END_NOT_RECORDED: (Fate.FAIL, Fate.INTERRUPT, Fate.FAIL),
}


def test_every_cause_has_its_fate() -> None:
    assert set(FATES) - {None} == set(C)
    for cause, (running, stopping, retryable) in FATES.items():
        assert fate(cause, stopping=False, retryable=False) is running, cause
        assert fate(cause, stopping=True, retryable=False) is stopping, cause
        assert fate(cause, stopping=False, retryable=True) is retryable, cause


def test_the_store_records_causes_and_counts_retries_also_in_an_older_store(tmp_path: Path) -> None:
    db = tmp_path / "seisd.db"
    old = sqlite3.connect(db)  # a store from before causes were recorded
    old.executescript("CREATE TABLE job_history (job_id INTEGER NOT NULL, time REAL NOT NULL, state TEXT NOT NULL, "
                      "reason TEXT); INSERT INTO job_history VALUES (1, 0, 'queued', 'submitted');")
    old.close()
    store = JobStore(db)
    job = store.add_job("test.steps", {}, 0, "auto", None)
    for cause in (C.EXECUTOR_DIED, C.DAEMON_STOPPING, C.HUNG):
        store.set_state(job, "running", "started", slot="cpu")
        store.set_state(job, "interrupted", "lost", cause=cause)
        store.set_state(job, "queued", "again")
    lost = [c.value for c in (C.EXECUTOR_DIED, C.HUNG, C.NO_HELLO)]
    assert store.count_transitions(job, "interrupted", lost) == 2
    assert store.count_transitions(job, "interrupted", [C.DAEMON_STOPPING.value]) == 1
    assert set(store.history(job)[0]) == {"time", "state", "reason", "cause"}  # `show` gives each entry's cause
    assert [h["cause"] for h in store.history(job)[-3:]] == [None, "hung", None]
    store.close()


def test_messages_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXAMPLES[0].job = 4  # type: ignore[misc]
