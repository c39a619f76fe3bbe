"""The wire protocol as data: encode/decode round trips, arrays, argument checks, limits. No daemon needed."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import protocol as P
from client.api import topic_matches


def _roundtrip_request(req: P.Request) -> P.Request:
    return P.decode_request([bytes(f) for f in req.encode()])


# -- requests, replies, events -------------------------------------------------------------------------------------


def test_request_round_trip_keeps_op_args_id() -> None:
    req = P.Request(op="submit", args={"job": {"kind": "x", "n": [1, 2.5, None, "é"]}, "priority": 3})
    back = _roundtrip_request(req)
    assert (back.op, back.args, back.id, back.arrays) == (req.op, req.args, req.id, [])
    header = json.loads(req.encode()[0])
    assert header["v"] == P.PROTOCOL_VERSION and header["arrays"] == []


def test_reply_round_trip_ok_and_error() -> None:
    ok = P.Reply(re="abc", ok=True, session="s1", result={"x": 1}, arrays=[np.arange(6, dtype=np.int32).reshape(2, 3)])
    back = P.decode_reply([bytes(f) for f in ok.encode()])
    assert (back.re, back.ok, back.session, back.result, back.error) == ("abc", True, "s1", {"x": 1}, None)
    np.testing.assert_array_equal(back.arrays[0], ok.arrays[0])
    err = P.Reply.failure("abc", "s1", P.ProtocolError(P.ErrorCode.NOT_FOUND, "no job 3", {"id": 3}))
    back = P.decode_reply([bytes(f) for f in err.encode()])
    assert not back.ok and back.result is None
    assert back.error == {"code": "not_found", "message": "no job 3", "details": {"id": 3}}


def test_reply_of_another_version_is_refused() -> None:
    frames = P.Reply(re="a", ok=True, session="s").encode()
    h = json.loads(bytes(frames[0]))
    h["v"] = 99
    with pytest.raises(P.ProtocolError) as err:
        P.decode_reply([json.dumps(h).encode()])
    assert err.value.code == P.ErrorCode.BAD_VERSION


def test_event_round_trip() -> None:
    ev = P.Event(P.job_topic(12), P.EventType.JOB_PROGRESS, {"fraction": 0.5, "message": "half"}, "sess", 41, 1.5)
    frames = ev.encode()
    assert frames[0] == b"job.12"
    assert P.Event.decode(frames) == ev
    with pytest.raises(P.ProtocolError) as err:
        P.Event.decode(frames[:1])
    assert err.value.code == P.ErrorCode.BAD_MESSAGE


def test_numpy_scalars_become_json_and_nan_is_refused() -> None:
    assert json.loads(P.dumps({"a": np.float32(1.5), "b": np.int64(3), "c": np.arange(2)})) == \
        {"a": 1.5, "b": 3, "c": [0, 1]}
    with pytest.raises(ValueError):
        P.dumps({"x": float("nan")})
    with pytest.raises(TypeError):
        P.dumps({"x": object()})


# -- arrays --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", P.WIRE_DTYPES)
@pytest.mark.parametrize("order", ["<", ">"])
def test_arrays_of_every_dtype_and_byte_order(dtype: str, order: str) -> None:
    dt = np.dtype(dtype).newbyteorder(order)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    a = np.array([[info.min, 0, 1], [info.max, 2, 3]], dtype=dt)
    desc = P.array_descriptor(a)
    # one-byte types have no byte order; they are named native
    expected = sys.byteorder if dt.itemsize == 1 else ("little" if order == "<" else "big")
    assert desc == {"dtype": dtype, "shape": [2, 3], "byteorder": expected}
    back = _roundtrip_request(P.Request(op="ping", arrays=[a])).arrays[0]
    assert back.dtype.name == dtype and back.shape == (2, 3)
    np.testing.assert_array_equal(back, a)
    assert not back.flags.writeable  # decoded without a copy


def test_native_order_is_named_explicitly() -> None:
    desc = P.array_descriptor(np.zeros(2, dtype=np.float64))
    assert desc["byteorder"] == sys.byteorder


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,) * 8])
def test_array_shapes_at_the_edges(shape: tuple[int, ...]) -> None:
    a = np.full(shape, 7, dtype=np.int16)
    back = _roundtrip_request(P.Request(op="ping", arrays=[a])).arrays[0]
    assert back.shape == shape
    np.testing.assert_array_equal(back, a)


def test_non_contiguous_arrays_are_sent_in_c_order() -> None:
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2].T
    back = _roundtrip_request(P.Request(op="ping", arrays=[a, np.asfortranarray(a)])).arrays
    np.testing.assert_array_equal(back[0], a)
    np.testing.assert_array_equal(back[1], a)


@pytest.mark.parametrize("dtype", ["float16", "bool", "complex64", "uint64", "object"])
def test_dtypes_off_the_wire_are_refused_by_name(dtype: str) -> None:
    with pytest.raises(P.ProtocolError) as err:
        P.array_descriptor(np.zeros(2, dtype=dtype))
    assert err.value.code == P.ErrorCode.BAD_ARGS and dtype in err.value.message


@pytest.mark.parametrize("desc,nbytes,words", [
    ({"dtype": "float32", "shape": [4]}, 15, "15 bytes"),
    ({"dtype": "float32", "shape": [4]}, 17, "17 bytes"),
    ({"dtype": "float16", "shape": [4]}, 8, "float16"),
    ({"dtype": "int32", "shape": [2], "byteorder": "middle"}, 8, "byteorder"),
    ({"dtype": "int32", "shape": [-1]}, 4, "shape"),
    ({"dtype": "int32", "shape": [True]}, 4, "shape"),
    ({"dtype": "int32", "shape": "2"}, 8, "shape"),
    ({"dtype": "uint8", "shape": [1] * 9}, 1, "shape"),
    ("float32", 4, "arrays[0]"),
])
def test_bad_array_descriptors_are_bad_messages(desc, nbytes: int, words: str) -> None:
    with pytest.raises(P.ProtocolError) as err:
        P.decode_array(desc, b"\0" * nbytes, 0)
    assert err.value.code == P.ErrorCode.BAD_MESSAGE and words in err.value.message


def test_shape_whose_size_overflows_is_a_bad_message() -> None:
    # 2**32 * 2**32 elements wraps to 0 in int64 arithmetic; an empty frame must not pass for that shape
    with pytest.raises(P.ProtocolError) as err:
        P.decode_array({"dtype": "uint8", "shape": [2 ** 32, 2 ** 32]}, b"", 0)
    assert err.value.code == P.ErrorCode.BAD_MESSAGE


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(P.WIRE_DTYPES), st.sampled_from(["<", ">"]),
       st.lists(st.integers(0, 4), min_size=0, max_size=4), st.integers(0, 2 ** 31))
def test_any_array_round_trips(dtype: str, order: str, shape: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    a = raw.view(np.dtype(dtype).newbyteorder(order)).reshape(shape)
    back = _roundtrip_request(P.Request(op="ping", arrays=[a])).arrays[0]
    assert back.tobytes() == a.tobytes() and back.dtype == a.dtype and back.shape == a.shape


# -- requests that are not right -----------------------------------------------------------------------------------


def _frames(header: object, *arrays: bytes) -> list[bytes]:
    return [json.dumps(header).encode()] + list(arrays)


GOOD = {"v": 1, "id": "r1", "op": "ping", "args": {}, "arrays": []}


@pytest.mark.parametrize("frames,code", [
    ([], P.ErrorCode.BAD_MESSAGE),
    ([b"\xff\xfe not json"], P.ErrorCode.BAD_MESSAGE),
    ([b'{"v": 1,'], P.ErrorCode.BAD_MESSAGE),
    ([b"[1, 2]"], P.ErrorCode.BAD_MESSAGE),
    (_frames({**GOOD, "v": 2}), P.ErrorCode.BAD_VERSION),
    (_frames({k: v for k, v in GOOD.items() if k != "v"}), P.ErrorCode.BAD_VERSION),
    (_frames({**GOOD, "id": ""}), P.ErrorCode.BAD_MESSAGE),
    (_frames({**GOOD, "id": "x" * 129}), P.ErrorCode.BAD_MESSAGE),
    (_frames({**GOOD, "op": 3}), P.ErrorCode.BAD_MESSAGE),
    (_frames({**GOOD, "args": [1]}), P.ErrorCode.BAD_ARGS),
    (_frames({**GOOD, "arrays": {}}), P.ErrorCode.BAD_MESSAGE),
    (_frames(GOOD, b"extra"), P.ErrorCode.BAD_MESSAGE),
    (_frames({**GOOD, "arrays": [{"dtype": "uint8", "shape": [1]}]}), P.ErrorCode.BAD_MESSAGE),
])
def test_malformed_requests(frames: list[bytes], code: str) -> None:
    with pytest.raises(P.ProtocolError) as err:
        P.decode_request(frames)
    assert err.value.code == code
    assert err.value.message  # a message naming the problem


def test_limits_name_the_limit() -> None:
    with pytest.raises(P.ProtocolError) as err:
        P.decode_request([b"{}" * 600], max_header=1024)
    assert err.value.code == P.ErrorCode.TOO_LARGE and err.value.details["limit"] == "max_header_bytes"
    with pytest.raises(P.ProtocolError) as err:
        P.decode_request(_frames({**GOOD, "arrays": [{"dtype": "uint8", "shape": [5000]}]}, b"\0" * 5000),
                         max_message=4096)
    assert err.value.code == P.ErrorCode.TOO_LARGE and err.value.details == {"limit": "max_message_bytes",
                                                                              "max": 4096}
    with pytest.raises(P.ProtocolError) as err:
        P.decode_request(_frames(GOOD, *[b""] * 5), max_frames=4)
    assert err.value.code == P.ErrorCode.TOO_LARGE and err.value.details["limit"] == "max_frames"


def test_null_args_mean_none() -> None:
    assert P.decode_request(_frames({**GOOD, "args": None})).args == {}


def test_peek_request_id() -> None:
    assert P.peek_request_id(b'{"id": "abc", "v": 99}') == "abc"
    assert P.peek_request_id(b'{"id": 5}') is None
    assert P.peek_request_id(b"\xff") is None
    assert P.peek_request_id(b"[]") is None
    assert P.peek_request_id(json.dumps({"id": "x" * 200}).encode()) is None


# -- argument checks -----------------------------------------------------------------------------------------------


def test_check_args_lists_every_problem() -> None:
    op = P.OPERATIONS["logs"]  # id: int, offset: int?, max_bytes: int?
    with pytest.raises(P.ProtocolError) as err:
        P.check_args(op, {"offset": "3", "max_bytes": True, "colour": "red"})
    problems = err.value.details["problems"]
    assert err.value.code == P.ErrorCode.BAD_ARGS
    assert sorted(p.split(":")[0] for p in problems) == ["colour", "id", "max_bytes", "offset"]
    assert any("colour: unknown argument" in p for p in problems)
    assert any(p == "id: required (int)" for p in problems)
    assert any(p == "max_bytes: expected int, got bool" for p in problems)
    assert all(p in err.value.message for p in problems)


def test_check_args_accepts_good_and_optional_absent() -> None:
    P.check_args(P.OPERATIONS["logs"], {"id": 3})
    P.check_args(P.OPERATIONS["logs"], {"id": 3, "offset": None})
    P.check_args(P.OPERATIONS["ping"], {})
    with pytest.raises(P.ProtocolError):
        P.check_args(P.OPERATIONS["ping"], {"x": 1})


def test_every_operation_has_a_doc_and_known_types() -> None:
    for op in P.OPERATIONS.values():
        assert op.doc
        assert all(t.rstrip("?") in ("int", "number", "string", "bool", "object", "array", "any")
                   for t in op.args.values())


# -- topics and endpoints ------------------------------------------------------------------------------------------


def test_topics_match_exactly_unless_prefix() -> None:
    assert topic_matches("job.1", ("job.1",))
    assert not topic_matches("job.12", ("job.1",))
    assert topic_matches("job.12", ("job.",))
    assert topic_matches("daemon", ())
    assert not topic_matches("daemon", ("job.",))


def test_runtime_dir_is_short_and_per_home(tmp_path) -> None:
    a, b = P.runtime_dir(tmp_path / ("x" * 200)), P.runtime_dir(tmp_path / "y")
    assert a != b and a == P.runtime_dir(tmp_path / ("x" * 200))
    assert len(P.control_endpoint(tmp_path / ("x" * 200))) < 100
    assert P.control_endpoint(tmp_path).startswith("ipc://") and P.events_endpoint(tmp_path).endswith("events.sock")


def test_deeply_nested_json_is_a_bad_message_not_a_crash() -> None:
    nested = b'{"v": 1, "id": "deep", "op": "ping", "args": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    assert P.peek_request_id(nested) is None
    with pytest.raises(P.ProtocolError) as err:
        P.decode_request([nested])
    assert err.value.code == P.ErrorCode.BAD_MESSAGE
