"""Section 5, "Operations", one by one through raw frames: results and errors as the spec lists them, including
what makes a request safe to send again (a submit's key, a repeated cancel, stream.open's key, a repeated
stream.close) and the `schema` operation. Job files and job states (section 8) are test_s8_jobs.py's."""
from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from tests.conformance.wire import Conn, Daemon, wait_until

STEPS = {"kind": "test.steps", "steps": 1, "step_s": 0.0}


@pytest.fixture(scope="module")
def c(daemon: Daemon):
    conn = daemon.conn()
    yield conn
    conn.close()


def _final(c: Conn, job_id: int) -> dict:
    return wait_until(lambda: (lambda j: j if j["state"] in ("succeeded", "failed", "cancelled") else None)(
        c.call("show", {"id": job_id})), what=f"job {job_id} to end")


def test_ping_status_devices(c: Conn, daemon: Daemon) -> None:
    ping = c.call("ping")
    assert set(ping) == {"session", "version"}
    st = c.call("status")
    for key in ("version", "protocol", "pid", "session", "started", "home", "python", "stopping", "devices", "jobs",
                "endpoints", "authorized_keys", "security", "heartbeat", "limits"):
        assert key in st, key
    assert st["protocol"] == 1 and st["home"] == str(daemon.home) and st["heartbeat"] is None  # no tcp here
    assert set(st["jobs"]) == {"queued", "running", "succeeded", "failed", "cancelled", "interrupted"}
    assert set(st["limits"]) == {"max_header_bytes", "max_message_bytes", "max_frames"}
    slot = c.call("devices")["devices"][0]
    assert set(slot) == {"slot", "kind", "description", "executor_pid", "state", "job", "restarts", "threads"}
    assert isinstance(slot["threads"], int) and slot["threads"] >= 1, slot   # the executor said hello before


def test_submit_show_jobs_logs_events(c: Conn) -> None:
    sub = c.call("submit", {"job": {**STEPS, "name": "conf-1"}, "priority": 3})
    assert sub == {"id": sub["id"], "state": "queued", "repeated": False}
    job = _final(c, sub["id"])
    assert job["state"] == "succeeded" and job["priority"] == 3 and job["name"] == "conf-1"
    assert [h["state"] for h in job["history"]] == ["queued", "running", "succeeded"]
    assert job["spec"]["steps"] == 1 and job["dir"].endswith(f"/jobs/{sub['id']}")
    listed = c.call("jobs", {"state": ["succeeded"], "kind": "test.steps", "limit": 1})["jobs"]
    assert [j["id"] for j in listed] == [sub["id"]]
    assert c.error("jobs", {"state": ["done"]})["code"] == "bad_args"
    log = c.call("logs", {"id": sub["id"], "max_bytes": 10})
    assert log["offset"] == 10 and log["size"] > 10 and log["state"] == "succeeded"
    events = c.call("events", {"id": sub["id"]})["events"]
    assert [e["data"]["state"] for e in events if e["type"] == "job.state"] == ["queued", "running", "succeeded"]
    assert all(set(e) >= {"seq", "time", "type", "data"} for e in events)
    assert c.call("events", {"id": sub["id"], "after": events[0]["seq"]})["events"] == events[1:]


def test_submit_with_a_key_is_done_once(c: Conn) -> None:
    key = uuid.uuid4().hex
    first = c.call("submit", {"job": STEPS, "key": key})
    again = c.call("submit", {"job": STEPS, "key": key})
    assert again["id"] == first["id"] and again["repeated"] is True and first["repeated"] is False
    err = c.error("submit", {"job": {**STEPS, "steps": 2}, "key": key})
    assert err["code"] == "conflict" and err["details"] == {"id": first["id"]}
    assert c.error("submit", {"job": STEPS, "key": ""})["code"] == "bad_args"
    assert c.error("submit", {"job": STEPS, "key": "k" * 129})["code"] == "bad_args"


def test_cancel_is_safe_to_repeat(c: Conn) -> None:
    blocker = c.call("submit", {"job": {"kind": "test.steps", "steps": 2000, "step_s": 0.01}})["id"]
    queued = c.call("submit", {"job": STEPS})["id"]
    wait_until(lambda: c.call("show", {"id": blocker})["state"] == "running", what="the blocker to run")
    assert c.call("cancel", {"id": queued}) == {"id": queued, "state": "cancelled"}
    assert c.call("cancel", {"id": queued}) == {"id": queued, "state": "cancelled"}
    assert c.call("cancel", {"id": blocker})["state"] == "cancelling"
    assert c.call("cancel", {"id": blocker})["state"] in ("cancelling", "cancelled")
    assert _final(c, blocker)["state"] == "cancelled"
    assert [h["state"] for h in c.call("show", {"id": queued})["history"]] == ["queued", "cancelled"]
    done = c.call("submit", {"job": STEPS})["id"]
    _final(c, done)
    assert c.error("cancel", {"id": done})["code"] == "conflict"
    assert c.error("cancel", {"id": 999999})["code"] == "not_found"


def test_workers_and_stop_after_epoch(c: Conn) -> None:
    assert c.error("workers", {"id": 999999, "count": 2})["code"] == "not_found"
    assert c.error("workers", {"id": 1, "count": 0})["code"] == "bad_args"
    done = c.call("submit", {"job": STEPS})["id"]
    _final(c, done)
    assert c.error("workers", {"id": done, "count": 2})["code"] == "conflict"
    assert c.error("stop_after_epoch", {"id": done})["code"] == "conflict"
    running = c.call("submit", {"job": {"kind": "test.steps", "steps": 2000, "step_s": 0.01}})["id"]
    wait_until(lambda: c.call("show", {"id": running})["progress"] > 0, what="the job to count")
    assert c.call("workers", {"id": running, "count": 3}) == {"count": 3}
    c.call("cancel", {"id": running})
    _final(c, running)


def test_catalogue_operations(c: Conn) -> None:
    assert c.call("models.list") == {"models": []}
    assert c.error("models.info", {"name": "nope"})["code"] == "not_found"
    assert c.error("models.rm", {"name": "../x"})["code"] == "bad_args"
    assert c.call("survey.list") == {"surveys": []}
    assert c.error("survey.info", {"name": "f4"})["code"] == "not_found"
    assert c.error("survey.rm", {"name": "a/b"})["code"] == "bad_args"
    assert c.call("examples", {"action": "list"}) == {"examples": [], "default": None}
    assert c.error("examples", {"action": "info"})["code"] == "bad_args"
    assert c.error("examples", {"action": "info", "name": "nope"})["code"] == "not_found"
    viewers = c.call("viewer.status")["viewers"]
    assert {v["name"] for v in viewers} == {"tensorboard", "examples"}
    assert c.error("viewer.start", {"name": "gallery"})["code"] == "not_found"


def test_schema_operation(c: Conn) -> None:
    every = c.call("schema")
    assert {"import", "extract", "train", "predict", "custom", "test.steps"} <= set(every["kinds"])
    assert every["schema"]["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert every["schema"]["properties"]["kind"]["enum"] == every["kinds"]
    one = c.call("schema", {"kind": "import"})
    assert one["kind"] == "import" and one["schema"]["properties"]["kind"] == {"const": "import",
                                                                               "description": "the job kind"}
    err = c.error("schema", {"kind": "nope"})
    assert err["code"] == "not_found" and "import" in err["details"]["kinds"]


# -- streaming -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(daemon: Daemon) -> str:
    """A small U-Net model file in the daemon's home, as a train job writes one."""
    import torch

    from daemon.executor.modelfile import ModelInfo, save_model_file
    from daemon.executor.models import build_model

    torch.manual_seed(0)
    params = {"base": 4, "depth": 2}
    net = build_model("unet", 1, 3, (32, 32), params).eval()
    info = ModelInfo(name="unet", params=params, in_channels=1, n_classes=3, input_shape=[32, 32],
                     classes=["a", "b", "c"], input_spec={"apply_kind": "fcn", "crop": [32, 32],
                                                          "orientation": "inline", "volumes": ["seismic"]},
                     normalisation={"volumes": [{"mean": 0.0, "std": 1.0}]})
    save_model_file(daemon.home / "models" / "m1.h5", net, info)
    return "m1"


def _block(c: Conn, sid: str, block: np.ndarray) -> tuple[dict, list[bytes]]:
    desc = {"dtype": "float32", "shape": list(block.shape), "byteorder": "little"}
    return c.request("stream.apply", {"session": sid}, arrays=[(desc, block.astype("<f4").tobytes())])


def test_streaming_is_bit_identical_to_the_same_model_in_python(c: Conn, daemon: Daemon, model: str) -> None:
    from daemon.executor.predict.stream import StreamSession

    opened = c.call("stream.open", {"model": model, "outputs": ["confidence", "labels", "probabilities"]})
    sid = opened["session"]
    assert opened["outputs"] == ["labels", "probabilities", "confidence"] and opened["classes"] == ["a", "b", "c"]
    listed = [s for s in c.call("stream.list")["sessions"] if s["session"] == sid]
    assert len(listed) == 1 and listed[0]["slot"] == "cpu" and listed[0]["model"] == model
    local = StreamSession.open(daemon.home, {"model": model, "outputs": ["labels", "probabilities", "confidence"]})
    rng = np.random.default_rng(3)
    for shape in [(1, 24, 40), (2, 32, 32)]:
        block = (1000 * rng.normal(size=shape)).astype(np.float32)
        head, frames = _block(c, sid, block)
        assert head["ok"], head
        assert head["result"] == {"outputs": ["labels", "probabilities", "confidence"]}
        want = local.apply([block])
        for desc, frame, name in zip(head["arrays"], frames, head["result"]["outputs"]):
            got = np.frombuffer(frame, np.dtype(desc["dtype"]).newbyteorder("<")).reshape(desc["shape"])
            assert desc["byteorder"] == "little" and got.dtype == want[name].dtype
            assert np.array_equal(got, want[name]), name  # bit for bit
    bad, _ = _block(c, sid, np.zeros((24, 40), np.float32))
    assert bad["error"]["code"] == "bad_args" and "does not fit" in bad["error"]["message"]
    none, _ = c.request("stream.apply", {"session": sid})
    assert none["error"]["code"] == "bad_args" and "exactly one array frame" in none["error"]["message"]
    assert _block(c, sid, np.ones((1, 8, 8), np.float32))[0]["ok"]  # the session survived both
    assert c.call("stream.close", {"session": sid}) == {"closed": sid}
    assert c.call("stream.close", {"session": sid}) == {"closed": sid}  # a repeated close: the same answer
    assert _block(c, sid, np.ones((1, 8, 8), np.float32))[0]["error"]["code"] == "not_found"
    assert c.error("stream.close", {"session": "0123456789abcdef"})["code"] == "not_found"


def test_stream_open_with_a_key_opens_one_session(c: Conn, daemon: Daemon, model: str) -> None:
    key = uuid.uuid4().hex
    # two opens with one key, the second sent before the first is answered (as a retry after a lost reply is)
    c.sock.send_multipart([_hdr("o1", {"model": model, "key": key})])
    c.sock.send_multipart([_hdr("o2", {"model": model, "key": key})])
    replies = {}
    while len(replies) < 2:
        head = json.loads(c.sock.recv_multipart()[0])
        replies[head["re"]] = head
    assert replies["o1"]["ok"] and replies["o2"]["ok"], replies
    sid = replies["o1"]["result"]["session"]
    assert replies["o2"]["result"] == replies["o1"]["result"]
    assert c.call("stream.open", {"model": model, "key": key})["session"] == sid
    assert [s["session"] for s in c.call("stream.list")["sessions"]].count(sid) == 1
    c.call("stream.close", {"session": sid})
    assert c.call("stream.open", {"model": model, "key": key})["session"] != sid  # a closed session's key is free
    for s in c.call("stream.list")["sessions"]:
        c.call("stream.close", {"session": s["session"]})
    assert c.error("stream.open", {"model": "nope"})["code"] == "not_found"
    assert c.error("stream.open", {"model": model, "outputs": []})["code"] == "bad_args"
    assert c.error("stream.open", {"model": model, "device": "cuda:7"})["code"] == "unavailable"


def _hdr(rid: str, args: dict) -> bytes:
    return json.dumps({"v": 1, "id": rid, "op": "stream.open", "args": args}).encode()


def test_the_direct_stream_endpoint_answers_stream_apply_like_the_daemon(c: Conn, daemon: Daemon, model: str) -> None:
    """Section 5, stream.open's `direct`: the same request frames sent to the executor's endpoint get the same
    reply as through the daemon; other operations and unknown sessions get the documented errors."""
    opened = c.call("stream.open", {"model": model, "outputs": ["labels", "confidence"]})
    sid, direct = opened["session"], opened["direct"]
    assert direct.startswith("ipc://") and direct.endswith(".sock"), opened
    block = np.random.default_rng(5).normal(size=(2, 24, 40)).astype(np.float32)
    via_daemon, frames_daemon = _block(c, sid, block)
    d = Conn(direct)
    try:
        head, frames = _block(d, sid, block)
        assert head["ok"] and head["session"] == via_daemon["session"], head
        assert head["result"] == via_daemon["result"] and head["arrays"] == via_daemon["arrays"]
        assert frames == frames_daemon  # byte for byte
        other = d.error("status")
        assert other["code"] == "unknown_op" and "stream.apply only" in other["message"], other
        assert d.error("stream.apply", {"session": sid})["code"] == "bad_args"          # no block
        assert d.error("stream.apply", {"session": sid, "x": 1})["code"] == "bad_args"  # an unknown argument
        broken, _ = d.raw([b"{not json"])
        assert broken["ok"] is False and broken["error"]["code"] == "bad_message" and broken["re"] is None
        assert _block(d, sid, block)[0]["ok"]  # the session survived all of it
        c.call("stream.close", {"session": sid})
        gone, _ = _block(d, sid, block)
        assert gone["error"]["code"] == "not_found", gone
    finally:
        d.close()
