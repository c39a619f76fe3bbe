"""raw_client: send one seisd request built from docs/PROTOCOL.md alone, and print the reply header.

    python tools/raw_client.py status
    python tools/raw_client.py show '{"id": 3}'
    python tools/raw_client.py --home /data/seisd jobs '{"state": ["running"]}'
    python tools/raw_client.py --endpoint ipc:///tmp/seisd-1000-0123456789ab/control.sock ping

It imports pyzmq and the standard library only, never seisd's own modules: it is the proof that the written
specification is enough to talk to the daemon. It speaks ipc only (no CURVE) and sends no array frames; array
frames of a reply are counted on stderr. --compact prints the header on one line, as it came over the wire.
Exit status: 0 for an ok reply, 1 for an error reply, 2 for bad usage, 3 when no reply came within --timeout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import zmq

PROTOCOL_VERSION = 1


class UsageError(ValueError):
    """The command line cannot be turned into a request (arguments that are not a JSON object)."""


def home_dir(given: str | None) -> Path:
    """The daemon's home (PROTOCOL.md section 1): --home, else $SEISD_HOME (a leading "~" is the user's home
    folder), else $XDG_DATA_HOME/seisd when that is an absolute path, else ~/.local/share/seisd; resolved."""
    user = os.environ.get("HOME") or os.path.expanduser("~")
    text = given or os.environ.get("SEISD_HOME", "")
    if text == "~" or text.startswith("~/"):
        text = user.rstrip("/") + text[1:] if text != "~" else user
    if not text:
        data = os.environ.get("XDG_DATA_HOME", "")
        text = os.path.join(data if data.startswith("/") else os.path.join(user, ".local", "share"), "seisd")
    return Path(text).resolve()


def control_endpoint(home: Path) -> str:
    """PROTOCOL.md section 1: <base>/seisd-<uid>-<sha1(home)[:12]>/control.sock, base the first of
    $XDG_RUNTIME_DIR, $TMPDIR that is an absolute path of an existing folder (trailing slashes removed), else /tmp."""
    base = "/tmp"
    for var in ("XDG_RUNTIME_DIR", "TMPDIR"):
        value = os.environ.get(var, "")
        if value.startswith("/") and os.path.isdir(value):
            base = value.rstrip("/")
            break
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:12]
    return f"ipc://{base}/seisd-{os.getuid()}-{digest}/control.sock"


def parse_args_json(text: str | None) -> dict[str, Any]:
    """The operation's arguments: a JSON object, or nothing."""
    if text is None:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"arguments are not JSON ({exc}); write them as an object, e.g. '{{\"id\": 3}}'") from None
    if not isinstance(args, dict):
        raise UsageError(f"arguments must be a JSON object, got {type(args).__name__}")
    return args


def request(endpoint: str, op: str, args: dict[str, Any], timeout_s: float,
            rid: str | None = None) -> tuple[bytes, list[bytes]] | None:
    """Send one request on a fresh DEALER socket; return the reply's header frame and its array frames, or None
    after timeout_s of silence."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    rid = rid or uuid.uuid4().hex[:16]
    header = {"v": PROTOCOL_VERSION, "id": rid, "op": op, "args": args, "arrays": []}
    sock.send(json.dumps(header).encode())
    try:
        while sock.poll(int(timeout_s * 1000)):
            frames = sock.recv_multipart()
            if json.loads(frames[0]).get("re") == rid:  # anything else is not ours (cannot happen on a fresh socket)
                return frames[0], frames[1:]
        return None
    finally:
        sock.close(0)
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="raw_client.py", description="Send one seisd request; print the reply header.")
    ap.add_argument("op", help="the operation, e.g. ping, status, jobs, show")
    ap.add_argument("args", nargs="?", help="its arguments as one JSON object, e.g. '{\"id\": 3}'")
    ap.add_argument("--home", help="the daemon's home (default: $SEISD_HOME, else ~/.local/share/seisd)")
    ap.add_argument("--endpoint", help="an ipc:// endpoint, overriding the one derived from the home")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply (default 5)")
    ap.add_argument("--id", help="the request id (default: 16 random hex characters)")
    ap.add_argument("--compact", action="store_true", help="print the reply header on one line, as received")
    a = ap.parse_args(argv)
    try:
        args = parse_args_json(a.args)
    except UsageError as exc:
        print(f"raw_client: {exc}", file=sys.stderr)
        return 2
    endpoint = a.endpoint or control_endpoint(home_dir(a.home))
    if a.id is not None and not 1 <= len(a.id) <= 128:
        print("raw_client: --id must have 1 to 128 characters", file=sys.stderr)
        return 2
    answer = request(endpoint, a.op, args, a.timeout, a.id)
    if answer is None:
        print(f"raw_client: no reply from {endpoint} within {a.timeout:g} s (is the daemon running?)",
              file=sys.stderr)
        return 3
    header, arrays = answer
    reply = json.loads(header)
    print(header.decode() if a.compact else json.dumps(reply, indent=2))
    for i, frame in enumerate(arrays):
        print(f"array frame {i}: {len(frame)} bytes", file=sys.stderr)
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
