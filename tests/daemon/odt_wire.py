"""A client of OpendTect's apply-server framing, written from /work/shared/interop/opendtect-dgbpy.md alone (raw
sockets and the standard library; nothing of seisd): what OpendTect's plugin sends, to test seisd's endpoint and to
time it (tools/bench_predict.py).

    10-byte header, native byte order: int32 payload length, int32 request id, int16 sub-id
    payload: int32 length + JSON header {byteorder, content-type, content-encoding, content-length[, array-shape]}
             + body (text/json: int32 length + JSON object; binary/array: the raw arrays one after another)
    one request per connection: the server answers (with the request's id) and closes
"""
from __future__ import annotations

import json
import socket
import struct
import sys
from typing import Any

import numpy as np


def connect(address: str, timeout: float = 120.0) -> socket.socket:
    """`unix:///path/to.sock` (OpendTect's LOCAL) or `tcp://127.0.0.1:PORT`."""
    if address.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(address[len("unix://"):])
        return s
    host, port = address[len("tcp://"):].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def _json_block(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj).encode("utf-8")
    return struct.pack("=i", len(text)) + text


def _recv(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def exchange(address: str, header: dict[str, Any], body: bytes, request_id: int,
             sub_id: int = 0) -> tuple[int, int, dict[str, Any], bytes]:
    """Send one request, read the one reply: (request id, sub-id, JSON header, body)."""
    payload = _json_block(header) + body
    with connect(address) as s:
        s.sendall(struct.pack("=iih", len(payload), request_id, sub_id) + payload)
        length, rid, sub = struct.unpack("=iih", _recv(s, 10))
        data = _recv(s, length)
        assert s.recv(1) == b"", "one request per connection: the server closes after its reply"
    (hlen,) = struct.unpack("=i", data[:4])
    reply_header = json.loads(data[4:4 + hlen])
    return rid, sub, reply_header, data[4 + hlen:4 + hlen + reply_header["content-length"]]


def request_json(address: str, content: dict[str, Any], request_id: int = 1) -> tuple[dict[str, Any], dict]:
    """A text/json request: (the reply's JSON object, its JSON header)."""
    body = _json_block(content)
    header = {"byteorder": sys.byteorder, "content-type": "text/json", "content-encoding": "utf-8",
              "content-length": len(body)}
    rid, _, h, reply = exchange(address, header, body, request_id)
    assert rid == request_id and h["content-type"] == "text/json", h
    (n,) = struct.unpack("=i", reply[:4])
    return json.loads(reply[4:4 + n]), h


def apply(address: str, arrays: list[np.ndarray], request_id: int = 7) -> list[np.ndarray] | dict[str, Any]:
    """A binary/array request (an apply): the reply's arrays, or its JSON object when it is an error."""
    body = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    header = {"byteorder": sys.byteorder, "content-type": "binary/array",
              "content-encoding": [a.dtype.name for a in arrays], "content-length": len(body),
              "array-shape": [list(a.shape) for a in arrays]}
    rid, _, h, reply = exchange(address, header, body, request_id)
    assert rid == request_id, (rid, request_id)
    if h["content-type"] == "text/json":
        (n,) = struct.unpack("=i", reply[:4])
        return json.loads(reply[4:4 + n])
    order = "<" if h["byteorder"] == "little" else ">"
    out, offset = [], 0
    for shape, dtype in zip(h["array-shape"], h["content-encoding"]):
        a = np.frombuffer(reply, dtype=np.dtype(dtype).newbyteorder(order), count=int(np.prod(shape)),
                          offset=offset).reshape(shape)
        out.append(a)
        offset += a.nbytes
    return out
