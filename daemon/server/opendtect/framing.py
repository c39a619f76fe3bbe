"""OpendTect's apply-server framing: what one request and one reply look like on the socket.

Every message (OpendTect's Network::RequestPacket, dgbpy's deeplearning_apply_serverlib):

    10 bytes   int32 payload length, int32 request id, int16 sub-id; the sender's native byte order
    payload    int32 length + a JSON header: byteorder, content-type, content-encoding, content-length
               (+ array-shape for arrays, + debug-message on an error reply); then the body:
                 text/json      int32 length + a JSON object
                 binary/array   the raw arrays one after another; `array-shape` lists their shapes and
                                `content-encoding` their numpy dtype names; `byteorder` (little | big) is theirs

One request per connection: the server reads one request, answers with the same request id and sub-id, and closes.
Both ends run on one machine (AF_UNIX or 127.0.0.1), so "native" is this machine's byte order.
"""
from __future__ import annotations

import json
import math
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER = struct.Struct("=iih")       # payload length, request id, sub-id
INT32 = struct.Struct("=i")
TEXT_JSON = "text/json"
BINARY_ARRAY = "binary/array"
DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float32", "float64")  # as seisd's wire


class FramingError(ValueError):
    """A request that breaks the framing; `request_id` is known when the 10-byte header was read (an answer can
    then be sent), None when not even that arrived."""

    def __init__(self, message: str, request_id: int | None = None, sub_id: int = 0):
        super().__init__(message)
        self.request_id, self.sub_id = request_id, sub_id


@dataclass
class Request:
    """One decoded request: its ids, its JSON header, and either a JSON object (text/json) or arrays."""

    request_id: int
    sub_id: int
    header: dict[str, Any]
    content: dict[str, Any] | None = None
    arrays: list[np.ndarray] = field(default_factory=list)

    @property
    def is_arrays(self) -> bool:
        return self.header.get("content-type") == BINARY_ARRAY


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """`n` bytes, or ConnectionError when the peer closes first (socket timeouts propagate)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError(f"the peer closed the connection after {got} of {n} bytes")
        got += k
    return bytes(buf)


def read_request(sock: socket.socket, max_message: int, max_header: int) -> Request:
    """Read and decode one request; FramingError names what is wrong with it."""
    length, rid, sub = HEADER.unpack(recv_exactly(sock, HEADER.size))
    if not INT32.size < length <= max_message:
        raise FramingError(f"payload length {length} is outside 5..{max_message} bytes (a 10-byte header "
                           "int32 length + int32 request id + int16 sub-id, in native byte order, comes first)",
                           rid, sub)
    return decode_payload(recv_exactly(sock, length), rid, sub, max_header)


def decode_payload(payload: bytes, rid: int, sub: int, max_header: int) -> Request:
    header, rest = _json_block(payload, "JSON header", max_header, rid, sub)
    missing = [k for k in ("byteorder", "content-type", "content-encoding", "content-length") if k not in header]
    if missing:
        raise FramingError(f"the JSON header lacks {', '.join(missing)}", rid, sub)
    size = header["content-length"]
    if not isinstance(size, int) or size < 0 or size > len(rest):
        raise FramingError(f"content-length {size!r} does not fit the {len(rest)} bytes after the JSON header", rid,
                           sub)
    body = rest[:size]
    kind = header["content-type"]
    if kind == TEXT_JSON:
        content, _ = _json_block(body, "text/json body", len(body), rid, sub)
        return Request(rid, sub, header, content=content)
    if kind == BINARY_ARRAY:
        return Request(rid, sub, header, arrays=_arrays(header, body, rid, sub))
    raise FramingError(f"content-type {kind!r} is not served; send {TEXT_JSON} or {BINARY_ARRAY}", rid, sub)


def _json_block(data: bytes, what: str, limit: int, rid: int, sub: int) -> tuple[dict[str, Any], bytes]:
    """An int32 length + a JSON object at the start of `data`, and what follows it."""
    if len(data) < INT32.size:
        raise FramingError(f"the {what} is missing (an int32 length and a JSON object were expected)", rid, sub)
    (n,) = INT32.unpack_from(data)
    if not 0 < n <= min(limit, len(data) - INT32.size):
        raise FramingError(f"the {what} length {n} does not fit ({len(data) - INT32.size} bytes follow, at most "
                           f"{limit} allowed)", rid, sub)
    try:
        obj = json.loads(data[INT32.size:INT32.size + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FramingError(f"the {what} is not UTF-8 JSON: {exc}", rid, sub) from None
    if not isinstance(obj, dict):
        raise FramingError(f"the {what} must be a JSON object, got {type(obj).__name__}", rid, sub)
    return obj, data[INT32.size + n:]


def _arrays(header: dict[str, Any], body: bytes, rid: int, sub: int) -> list[np.ndarray]:
    shapes, dtypes, order = header.get("array-shape"), header["content-encoding"], header["byteorder"]
    if isinstance(dtypes, str):
        dtypes = [dtypes]
    if (not isinstance(shapes, list) or not shapes or not isinstance(dtypes, list) or len(dtypes) != len(shapes)):
        raise FramingError("a binary/array request needs `array-shape` (a list of shapes) and `content-encoding` "
                           "(a list of dtype names), one per array", rid, sub)
    if order not in ("little", "big"):
        raise FramingError(f"byteorder must be 'little' or 'big', got {order!r}", rid, sub)
    out, offset = [], 0
    for k, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        if dtype not in DTYPES:
            raise FramingError(f"array {k}: dtype {dtype!r} is not one of {', '.join(DTYPES)}", rid, sub)
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise FramingError(f"array {k}: shape {shape!r} is not a list of at most 8 sizes", rid, sub)
        dt = np.dtype(dtype).newbyteorder("<" if order == "little" else ">")
        nbytes = math.prod(shape) * dt.itemsize
        if offset + nbytes > len(body):
            raise FramingError(f"array {k} ({dtype} {shape}, {nbytes} bytes) runs past the body's {len(body)} "
                               "bytes", rid, sub)
        out.append(np.frombuffer(body, dtype=dt, count=math.prod(shape), offset=offset).reshape(shape))
        offset += nbytes
    if offset != len(body):
        raise FramingError(f"the arrays take {offset} bytes but content-length is {len(body)}", rid, sub)
    return out


# -- replies -------------------------------------------------------------------------------------------------------

Buffers = list[bytes | memoryview]  # a message as pieces to send one after another (arrays are not copied)


def _message(rid: int, sub: int, header: dict[str, Any], body: Buffers) -> Buffers:
    head = json.dumps(header, ensure_ascii=False).encode("utf-8")
    size = INT32.size + len(head) + sum(len(b) for b in body)
    return [HEADER.pack(size, rid, sub) + INT32.pack(len(head)) + head, *body]


def json_reply(rid: int, sub: int, content: dict[str, Any], debug: str | None = None) -> Buffers:
    """A text/json reply; `debug` goes into the header's debug-message (dgbpy puts tracebacks there)."""
    text = json.dumps(content, ensure_ascii=False, default=str).encode("utf-8")
    body = INT32.pack(len(text)) + text
    header: dict[str, Any] = {"byteorder": sys.byteorder, "content-type": TEXT_JSON, "content-encoding": "utf-8",
                              "content-length": len(body)}
    if debug:
        header["debug-message"] = debug
    return _message(rid, sub, header, [body])


def array_reply(rid: int, sub: int, arrays: list[np.ndarray]) -> Buffers:
    """A binary/array reply: the arrays in native byte order, C order, one after another."""
    native = [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")) for a in arrays]
    body: Buffers = [memoryview(a.reshape(-1).view(np.uint8)) if a.size else b"" for a in native]
    header = {"byteorder": sys.byteorder, "content-type": BINARY_ARRAY,
              "content-encoding": [a.dtype.name for a in native], "content-length": sum(a.nbytes for a in native),
              "array-shape": [list(a.shape) for a in native]}
    return _message(rid, sub, header, body)
