"""Malformed requests sent with raw ZeroMQ sockets: each gets an error reply with the right code, and the daemon
keeps answering (a ping after every one, on the same socket and from a fresh Client)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import zmq

from client import protocol as P
from client.api import Client
from tests.harness import RunningDaemon

SMALL_MESSAGE = 1 << 16  # the smallest max_message_bytes the settings accept


@pytest.fixture(scope="module")
def small_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon whose messages may carry at most 64 KiB."""
    with RunningDaemon(tmp_path_factory.mktemp("small") / "home",
                       env={"SEISD_LIMITS__MAX_MESSAGE_BYTES": str(SMALL_MESSAGE)}) as d:
        yield d


@pytest.fixture
def dealer(shared_daemon: RunningDaemon) -> Iterator[zmq.Socket]:
    with _connect(shared_daemon.home, zmq.DEALER) as s:
        yield s


class _connect:
    """A raw socket to a daemon's control endpoint, closed on exit."""

    def __init__(self, home: Path, kind: int):
        self.sock = zmq.Context.instance().socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(P.control_endpoint(home))

    def __enter__(self) -> zmq.Socket:
        return self.sock

    def __exit__(self, *exc: object) -> None:
        self.sock.close(0)


def _header(**over: object) -> dict:
    h = {"v": 1, "id": "req-1", "op": "ping", "args": {}, "arrays": []}
    h.update(over)
    return {k: v for k, v in h.items() if v is not _DROP}


_DROP = object()


def _exchange(sock: zmq.Socket, frames: list[bytes], timeout_s: float = 5.0) -> dict:
    sock.send_multipart(frames)
    assert sock.poll(int(timeout_s * 1000)), "the daemon sent no reply"
    reply = sock.recv_multipart()
    return json.loads(reply[0])


def _error(sock: zmq.Socket, frames: list[bytes]) -> dict:
    reply = _exchange(sock, frames)
    assert reply["v"] == P.PROTOCOL_VERSION and reply["ok"] is False, reply
    assert reply["error"]["code"] in P.ErrorCode.ALL and reply["error"]["message"]
    return reply


def _still_answers(sock: zmq.Socket, home: Path) -> None:
    pong = _exchange(sock, [json.dumps(_header(id="after")).encode()])
    assert pong["ok"] and pong["re"] == "after"
    with Client(home=home, timeout=5) as c:
        assert c.ping()["session"] == pong["session"]


def _j(obj: object) -> bytes:
    return json.dumps(obj).encode()


CASES = {
    "garbage bytes": ([b"\x00\xff\xfegarbage\x80"], P.ErrorCode.BAD_MESSAGE, None),
    "bad json": ([b'{"v": 1, "id": "req-1", "op": '], P.ErrorCode.BAD_MESSAGE, None),
    "json not an object": ([b'["ping"]'], P.ErrorCode.BAD_MESSAGE, None),
    "json string": ([b'"ping"'], P.ErrorCode.BAD_MESSAGE, None),
    "undeclared array frame": ([_j(_header()), b"\x01\x02\x03\x04"], P.ErrorCode.BAD_MESSAGE, "req-1"),
    "declared array missing": ([_j(_header(arrays=[{"dtype": "uint8", "shape": [4], "byteorder": "little"}]))],
                               P.ErrorCode.BAD_MESSAGE, "req-1"),
    "array bytes lie": ([_j(_header(arrays=[{"dtype": "float32", "shape": [2, 3], "byteorder": "little"}])),
                         b"\0" * 23], P.ErrorCode.BAD_MESSAGE, "req-1"),
    "array dtype unknown": ([_j(_header(arrays=[{"dtype": "float16", "shape": [2], "byteorder": "little"}])),
                             b"\0" * 4], P.ErrorCode.BAD_MESSAGE, "req-1"),
    "wrong version": ([_j(_header(v=2))], P.ErrorCode.BAD_VERSION, "req-1"),
    "no version": ([_j(_header(v=_DROP))], P.ErrorCode.BAD_VERSION, "req-1"),
    "no id": ([_j(_header(id=_DROP))], P.ErrorCode.BAD_MESSAGE, None),
    "op not a string": ([_j(_header(op=["ping"]))], P.ErrorCode.BAD_MESSAGE, "req-1"),
    "unknown op": ([_j(_header(op="launch_missiles"))], P.ErrorCode.UNKNOWN_OP, "req-1"),
    "args not an object": ([_j(_header(args=[1]))], P.ErrorCode.BAD_ARGS, "req-1"),
    "wrong arg type": ([_j(_header(op="show", args={"id": "seven"}))], P.ErrorCode.BAD_ARGS, "req-1"),
    "bool for int": ([_j(_header(op="show", args={"id": True}))], P.ErrorCode.BAD_ARGS, "req-1"),
    "missing arg": ([_j(_header(op="show"))], P.ErrorCode.BAD_ARGS, "req-1"),
    "unknown arg": ([_j(_header(args={"loud": True}))], P.ErrorCode.BAD_ARGS, "req-1"),
    "too many frames": ([_j(_header())] + [b""] * P.MAX_FRAMES, P.ErrorCode.TOO_LARGE, "req-1"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_request_gets_error_reply(name: str, dealer: zmq.Socket, shared_daemon: RunningDaemon) -> None:
    frames, code, re = CASES[name]
    reply = _error(dealer, frames)
    assert reply["error"]["code"] == code, reply
    assert reply["re"] == re  # the reply names the request whenever its id could be read
    assert reply["session"] == shared_daemon.client.ping()["session"]
    _still_answers(dealer, shared_daemon.home)


def test_bad_args_list_every_problem(dealer: zmq.Socket) -> None:
    reply = _error(dealer, [_j(_header(op="logs", args={"id": "x", "offset": 1.5, "colour": 1}))])
    problems = reply["error"]["details"]["problems"]
    assert sorted(p.split(":")[0] for p in problems) == ["colour", "id", "offset"]


def test_unknown_op_lists_the_operations(dealer: zmq.Socket) -> None:
    reply = _error(dealer, [_j(_header(op="pingg"))])
    assert "ping" in reply["error"]["details"]["operations"] and "pingg" in reply["error"]["message"]


def test_header_over_one_mib(dealer: zmq.Socket, shared_daemon: RunningDaemon) -> None:
    padded = _header(args={"pad": "x" * (P.MAX_HEADER_BYTES + 10)})
    reply = _error(dealer, [_j(padded)])
    assert reply["error"]["code"] == P.ErrorCode.TOO_LARGE
    assert reply["error"]["details"] == {"limit": "max_header_bytes", "max": P.MAX_HEADER_BYTES}
    _still_answers(dealer, shared_daemon.home)


def test_message_over_the_configured_limit(small_daemon: RunningDaemon) -> None:
    assert small_daemon.client.status()["limits"]["max_message_bytes"] == SMALL_MESSAGE
    desc = {"dtype": "uint8", "shape": [40_000], "byteorder": "little"}
    with _connect(small_daemon.home, zmq.DEALER) as s:
        frames = [_j(_header(arrays=[desc, desc])), b"\0" * 40_000, b"\0" * 40_000]
        reply = _error(s, frames)
        assert reply["error"]["code"] == P.ErrorCode.TOO_LARGE
        assert reply["error"]["details"] == {"limit": "max_message_bytes", "max": SMALL_MESSAGE}
        _still_answers(s, small_daemon.home)
        # just under the limit is accepted
        ok = _exchange(s, [_j(_header(arrays=[desc])), b"\0" * 40_000])
        assert ok["ok"], ok


def test_huge_frame_drops_only_that_connection(small_daemon: RunningDaemon) -> None:
    """A frame far above the limit is cut off by ZeroMQ before it fills memory; other clients are unaffected."""
    with _connect(small_daemon.home, zmq.DEALER) as s:
        s.send_multipart([_j(_header()), b"\0" * (4 * SMALL_MESSAGE)])
        s.poll(500)
    with Client(home=small_daemon.home, timeout=5) as c:
        assert c.ping()["session"]


def test_req_socket_gets_replies(shared_daemon: RunningDaemon) -> None:
    with _connect(shared_daemon.home, zmq.REQ) as s:
        ok = _exchange(s, [_j(_header(id="via-req"))])
        assert ok["ok"] and ok["re"] == "via-req"
        err = _exchange(s, [_j(_header(id="req-2", op="nope"))])
        assert not err["ok"] and err["error"]["code"] == P.ErrorCode.UNKNOWN_OP and err["re"] == "req-2"
        ok = _exchange(s, [_j(_header(id="req-3", op="status"))])
        assert ok["result"]["pid"] == shared_daemon.pid


def test_request_with_valid_arrays_is_accepted(dealer: zmq.Socket) -> None:
    """Well-formed array frames (big-endian, 0-d) pass the checks; ping ignores them."""
    descs = [{"dtype": "int16", "shape": [3], "byteorder": "big"},
             {"dtype": "float64", "shape": [], "byteorder": "little"}]
    reply = _exchange(dealer, [_j(_header(arrays=descs)), b"\0\1\0\2\0\3", b"\0" * 8])
    assert reply["ok"], reply


# -- inputs that once took a handler or the whole daemon down: each on a daemon of its own ------------------------


def test_deeply_nested_header_is_a_bad_message(daemon: RunningDaemon) -> None:
    """200 KB of nested brackets (under the header limit) makes json recurse too deep; that is bad input, not a
    reason for the daemon to exit."""
    nested = b'{"v": 1, "id": "deep", "op": "ping", "args": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with _connect(daemon.home, zmq.DEALER) as s:
        s.send_multipart([nested])
        got_reply = s.poll(5000)
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon exited:\n" + daemon.output_tail()
        assert got_reply, "no reply to a deeply nested header"
        reply = json.loads(s.recv_multipart()[0])
        assert reply["error"]["code"] == P.ErrorCode.BAD_MESSAGE
        _still_answers(s, daemon.home)


@pytest.mark.parametrize("op", ["show", "cancel", "logs", "events"])
def test_job_id_beyond_64_bits_is_not_an_internal_error(op: str, dealer: zmq.Socket) -> None:
    reply = _error(dealer, [_j(_header(op=op, args={"id": 2 ** 70}))])
    assert reply["error"]["code"] in (P.ErrorCode.BAD_ARGS, P.ErrorCode.NOT_FOUND), reply["error"]
