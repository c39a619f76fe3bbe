"""opendtect_apply_server: stands where dgbpy's deeplearning_apply-server.py stands, and hands the work to seisd.

OpendTect's machine-learning plugin starts one apply server per model, as

    python deeplearning_apply-server.py MODEL.h5 --address localhost --port N [--local] --ppid PID

waits until it listens on that address (with --local, an AF_UNIX socket whose path is given as the port), and
sends it requests in its own framing. Put this script in that place (docs/opendtect.md says how) and it listens
where the plugin expects, passes each request on to seisd's OpendTect endpoint (settings `opendtect`), and passes
the answer back: the model is kept warm in a seisd executor, seisd schedules the device, and the plugin changes
nothing. It adds one thing to a parameters request: the model file's path (`modelfile`), whose stem names the
seisd model (models/<stem>.h5 of the daemon's home). A kill request ends seisd's session and this process; so does
the plugin's exit (--ppid is watched).

Where seisd listens: $SEISD_OPENDTECT_ENDPOINT (unix:///path or tcp://127.0.0.1:PORT), else the AF_UNIX socket of
the daemon of $SEISD_HOME (or the default home). Standard library only; nothing of seisd is imported.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import struct
import sys
import tempfile
import threading
from pathlib import Path

HEADER = struct.Struct("=iih")
INT32 = struct.Struct("=i")


def seisd_endpoint() -> str:
    """$SEISD_OPENDTECT_ENDPOINT, else <runtime folder of the home>/opendtect.sock (as client.protocol derives it)."""
    if os.environ.get("SEISD_OPENDTECT_ENDPOINT"):
        return os.environ["SEISD_OPENDTECT_ENDPOINT"]
    home = os.environ.get("SEISD_HOME") or str(Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" /
                                                    "share") / "seisd")
    digest = hashlib.sha1(str(Path(home).expanduser().resolve()).encode()).hexdigest()[:12]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return f"unix://{Path(base) / f'seisd-{os.getuid()}-{digest}' / 'opendtect.sock'}"


def _recv(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_message(s: socket.socket) -> tuple[int, int, bytes]:
    length, rid, sub = HEADER.unpack(_recv(s, HEADER.size))
    if length < INT32.size:
        raise ConnectionError(f"payload length {length}")
    return rid, sub, _recv(s, length)


def with_model(payload: bytes, model_file: str) -> tuple[bytes, str | None]:
    """A text/json request with `modelfile` added to a parameters (or dgbpy `outputs`) request; its action."""
    (hlen,) = INT32.unpack_from(payload)
    header = json.loads(payload[4:4 + hlen])
    if header.get("content-type") != "text/json":
        return payload, None
    body = payload[4 + hlen:4 + hlen + header["content-length"]]
    (blen,) = INT32.unpack_from(body)
    content = json.loads(body[4:4 + blen])
    action = content.get("action")
    if action in ("parameters", "outputs"):
        target = content["value"] if isinstance(content.get("value"), dict) else content
        target.setdefault("modelfile", model_file)
        text = json.dumps(content).encode("utf-8")
        body = INT32.pack(len(text)) + text
        header["content-length"] = len(body)
        head = json.dumps(header).encode("utf-8")
        payload = INT32.pack(len(head)) + head + body
    return payload, action


def connect(endpoint: str) -> socket.socket:
    if endpoint.startswith("unix://"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(endpoint[len("unix://"):])
        return s
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    return socket.create_connection((host, int(port)))


def relay(conn: socket.socket, endpoint: str, model_file: str) -> str | None:
    """One request of the plugin to seisd and its answer back; returns the request's action."""
    rid, sub, payload = read_message(conn)
    payload, action = with_model(payload, model_file)
    try:
        with connect(endpoint) as up:
            up.sendall(HEADER.pack(len(payload), rid, sub) + payload)
            _, _, answer = read_message(up)
    except OSError as exc:  # seisd is not running, or its endpoint is off: the plugin gets dgbpy's error form
        text = json.dumps({"result": f"Error: seisd's OpendTect endpoint {endpoint} did not answer ({exc}); start "
                           "seisd with opendtect.enabled: true"}).encode()
        body = INT32.pack(len(text)) + text
        head = json.dumps({"byteorder": sys.byteorder, "content-type": "text/json", "content-encoding": "utf-8",
                           "content-length": len(body)}).encode()
        answer = INT32.pack(len(head)) + head + body
    conn.sendall(HEADER.pack(len(answer), rid, sub) + answer)
    return action


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modelfile", help="the model file the plugin names (its stem is the seisd model)")
    ap.add_argument("--address", default="localhost")
    ap.add_argument("--port", default="65432", help="tcp port, or with --local the AF_UNIX socket's path")
    ap.add_argument("--local", action="store_true", help="listen on an AF_UNIX socket (OpendTect's LOCAL)")
    ap.add_argument("--ppid", type=int, default=-1, help="exit when this process (the plugin's) has ended")
    ap.add_argument("--log", "--syslog", "--mldir", "--Order", dest="ignored", action="append", default=[],
                    help="accepted and ignored, as dgbpy's script takes them")
    ap.add_argument("--fakeapply", action="store_true", help="accepted and ignored")
    a = ap.parse_args(argv)
    local = a.local or a.address == "LOCAL"
    if local:
        Path(a.port).unlink(missing_ok=True)
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(a.port)
    else:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1" if a.address in ("localhost", "") else a.address, int(a.port)))
    lsock.listen(16)
    lsock.settimeout(1.0)
    endpoint, model_file = seisd_endpoint(), str(Path(a.modelfile).resolve())
    print(f"listening on {a.port if local else (a.address, a.port)}; requests go to seisd at {endpoint}",
          flush=True)
    done = threading.Event()
    try:
        while not done.is_set():
            if a.ppid > 0 and not Path(f"/proc/{a.ppid}").exists():
                print("the plugin's process has ended; exiting", flush=True)
                break
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(330)
                try:
                    if relay(conn, endpoint, model_file) == "kill":
                        done.set()
                except (OSError, ValueError, KeyError) as exc:
                    print(f"request dropped: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        lsock.close()
        if local:
            Path(a.port).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
