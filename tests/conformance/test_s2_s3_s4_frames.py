"""Sections 2 ("Sockets and framing"), 3 ("Requests and replies") and 4 ("Binary array frames"), through raw
frames: DEALER and REQ, the empty delimiter, replies matched on `re`; every header rule and error code of section
3 in the order the spec gives; the session id; array descriptors and frames (section 4), checked and ignored on
operations that take none."""
from __future__ import annotations

import json
import re
import struct

import pytest
import zmq

from tests.conformance.wire import CTX, Conn, Daemon, dealer, exchange, header


# -- section 2 ---------------------------------------------------------------------------------------------------

def test_dealer_requests_are_answered_with_their_id_and_may_be_pipelined(daemon: Daemon) -> None:
    s = dealer(daemon.control)
    try:
        for k in range(5):
            s.send(header("ping", rid=f"p{k}"))
        got = sorted(json.loads(s.recv_multipart()[0])["re"] for _ in range(5))
        assert got == [f"p{k}" for k in range(5)]
    finally:
        s.close(0)


def test_req_socket_and_a_dealer_that_writes_the_delimiter(daemon: Daemon) -> None:
    req = CTX.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 15_000)
    req.connect(daemon.control)
    try:
        req.send(header("ping", rid="r1"))
        reply = req.recv_multipart()
        assert len(reply) == 1 and json.loads(reply[0])["re"] == "r1"
    finally:
        req.close(0)
    s = dealer(daemon.control)
    try:
        s.send_multipart([b"", header("ping", rid="d1")])
        reply = s.recv_multipart()
        assert reply[0] == b"" and json.loads(reply[1])["re"] == "d1"
    finally:
        s.close(0)


# -- section 3 ---------------------------------------------------------------------------------------------------

def test_reply_header_fields_and_session(daemon: Daemon) -> None:
    c = daemon.conn()
    try:
        head, arrays = c.request("ping")
        assert set(head) == {"v", "re", "ok", "session", "result", "arrays"} and arrays == []
        assert head["v"] == 1 and head["ok"] is True and head["arrays"] == []
        assert re.fullmatch(r"[0-9a-f]{32}", head["session"]) and head["result"]["session"] == head["session"]
        bad, _ = c.request("show", {"id": 999999})
        assert set(bad) == {"v", "re", "ok", "session", "error", "arrays"} and bad["ok"] is False
        assert set(bad["error"]) == {"code", "message", "details"} and bad["error"]["code"] == "not_found"
        assert bad["session"] == head["session"] == c.call("status")["session"]
    finally:
        c.close()


@pytest.mark.parametrize("frame,code,re_", [
    (b"\xff\xfe", "bad_message", None),                                            # not UTF-8
    (b"[1, 2]", "bad_message", None),                                              # not an object
    (b'{"v": 1, "op": "ping"}', "bad_message", None),                              # no id
    (b'{"v": 1, "id": "", "op": "ping"}', "bad_message", None),                    # an empty id: re null
    (json.dumps({"v": 1, "id": "x" * 129, "op": "ping"}).encode(), "bad_message", None),
    (b'{"v": 1, "id": 7, "op": "ping"}', "bad_message", None),
    (b'{"v": 1, "id": "a", "op": 7}', "bad_message", "a"),
    (b'{"id": "a", "op": "ping"}', "bad_version", "a"),                            # v missing
    (b'{"v": 2, "id": "a", "op": "ping"}', "bad_version", "a"),
    (b'{"v": true, "id": "a", "op": "ping"}', "bad_version", "a"),                 # true is not the int 1
    (b'{"v": 1.0, "id": "a", "op": "ping"}', "bad_version", "a"),                  # nor is 1.0
    (b'{"v": "1", "id": "a", "op": "ping"}', "bad_version", "a"),
    (b'{"v": 1, "id": "a", "op": "ping", "args": [1]}', "bad_args", "a"),
    (b'{"v": 1, "id": "a", "op": "ping", "arrays": {}}', "bad_message", "a"),
    (b'{"v": 1, "id": "a", "op": "frobnicate"}', "unknown_op", "a"),
    (b'{"v": 2, "id": "a", "op": "frobnicate"}', "bad_version", "a"),              # v is checked before op
    (b'{"v": 1, "id": "a", "op": "frobnicate", "args": 3}', "bad_args", "a"),      # args before the op's name
])
def test_header_rules_and_error_codes(daemon: Daemon, frame: bytes, code: str, re_: str | None) -> None:
    s = dealer(daemon.control)
    try:
        head, arrays = exchange(s, [frame])
        assert head["ok"] is False and head["error"]["code"] == code, head
        assert head["re"] == re_ and arrays == [] and head["arrays"] == []
        if code == "bad_version":
            assert head["error"]["details"] == {"supported": [1]}
        if code == "unknown_op":
            assert "ping" in head["error"]["details"]["operations"]
    finally:
        s.close(0)


@pytest.mark.parametrize("fields", [{"args": None}, {"arrays": None}, {"args": None, "arrays": None},
                                    {"args": {}, "arrays": []}, {"extra": 1}])
def test_null_args_and_arrays_are_absent_and_other_fields_ignored(daemon: Daemon, fields: dict) -> None:
    s = dealer(daemon.control)
    try:
        head, _ = exchange(s, [json.dumps({"v": 1, "id": "n", "op": "ping", **fields}).encode()])
        assert head["ok"] is True and head["re"] == "n", head
    finally:
        s.close(0)


def test_argument_schema_lists_every_problem(daemon: Daemon) -> None:
    c = daemon.conn()
    try:
        err = c.error("show", {"id": "x", "extra": 1})
        assert err["code"] == "bad_args"
        assert sorted(err["details"]["problems"]) == ["extra: unknown argument (expected id)",
                                                      "id: expected int, got str"]
        assert c.error("show", {"id": True})["details"]["problems"] == ["id: expected int, got bool"]
        assert c.error("show", {"id": 1.0})["details"]["problems"] == ["id: expected int, got float"]
        assert c.error("show", {})["details"]["problems"] == ["id: required (int)"]
        assert c.error("show", {"id": None})["details"]["problems"] == ["id: required (int)"]  # null = absent
        assert c.error("logs", {"id": 2 ** 63})["code"] == "bad_args"
        assert c.error("show", {"id": 999999})["code"] == "not_found"
    finally:
        c.close()


# -- section 4 ---------------------------------------------------------------------------------------------------

def _f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


@pytest.mark.parametrize("desc,frame,message", [
    ({"dtype": "float32", "shape": [2, 3]}, _f32(1, 2, 3, 4, 5), "array frame 0 has 20 bytes but its header says "
                                                                  "float32 [2, 3] (24 bytes)"),
    ({"dtype": "float16", "shape": [1]}, b"\0\0", "dtype"),
    ({"dtype": "float32", "shape": [1], "byteorder": "middle"}, _f32(1), "byteorder"),
    ({"dtype": "float32", "shape": [True]}, _f32(1), "shape"),
    ({"dtype": "float32", "shape": [1] * 9}, _f32(1), "shape"),
    ({"dtype": "float32", "shape": [-1]}, b"", "shape"),
    ("float32", _f32(1), "arrays[0]"),
])
def test_bad_array_descriptors_are_bad_message(daemon: Daemon, desc: object, frame: bytes, message: str) -> None:
    s = dealer(daemon.control)
    try:
        h = json.dumps({"v": 1, "id": "a", "op": "ping", "arrays": [desc]}).encode()
        head, _ = exchange(s, [h, frame])
        assert head["error"]["code"] == "bad_message" and message in head["error"]["message"], head
        assert head["re"] == "a"
    finally:
        s.close(0)


def test_array_count_must_match_and_arrays_on_other_operations_are_ignored(daemon: Daemon) -> None:
    c: Conn = daemon.conn()
    try:
        head, _ = c.raw([json.dumps({"v": 1, "id": "c", "op": "ping", "arrays": []}).encode(), _f32(1)])
        assert head["error"]["code"] == "bad_message" and "1 array frames" in head["error"]["message"]
        scalar = ({"dtype": "int64", "shape": [], "byteorder": "big"}, struct.pack(">q", 5))
        head, arrays = c.request("ping", arrays=[scalar, ({"dtype": "uint8", "shape": [0]}, b"")])
        assert head["ok"] is True and head["arrays"] == [] and arrays == []
        err, _ = c.request("stream.apply", {"session": "0" * 16})
        assert err["error"]["code"] in ("bad_args", "not_found")
    finally:
        c.close()
