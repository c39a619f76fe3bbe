"""host_client: a host application (such as OpendTect) applying a seisd model to data it holds in memory.

    python tools/host_client.py --model facies --segy cube.sgy
    python tools/host_client.py --home /data/seisd --model facies --cache surveys/f3/seismic.f32 --shape 651,951,462

The reference example for host developers: it uses pyzmq, numpy and json only (segyio just to read a SEG-Y),
never seisd's own modules, and follows docs/PROTOCOL.md. It opens a streaming session (stream.open), sends the
survey inline by inline as float32 binary frames (stream.apply), receives class labels and confidence frames,
closes the session (stream.close), and prints what it measured: blocks per second and latency per block.

When stream.open offers a `direct` endpoint (a local daemon: PROTOCOL.md "The direct endpoint"), the blocks go
there, straight to the executor that holds the session, and a socket monitor tells when that executor went away;
`--relay` sends them through the daemon instead. The report says which way they went (`path`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zmq

# where the daemon of a home listens (PROTOCOL.md section 1): the other spec-only example has it
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from raw_client import control_endpoint, home_dir  # noqa: E402


class DaemonError(RuntimeError):
    """An error reply: `code` is the protocol's error code (switch on it), the message is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class Connection:
    """One DEALER socket to the daemon; requests carry an id, and replies are matched on `re`."""

    def __init__(self, endpoint: str, timeout_s: float = 310.0, watch: bool = False):
        # the daemon answers stream.* within 300 s
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)  # never hang at exit when the daemon is gone
        # nor on a send: a connection the peer dropped leaves nowhere to queue a message until libzmq reconnects
        self.sock.setsockopt(zmq.SNDTIMEO, int(timeout_s * 1000))
        # a direct endpoint is watched: a dead executor answers nothing, and its socket's disconnect says so at once
        self.watch = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED) if watch else None
        self.sock.connect(endpoint)
        self.endpoint, self.timeout_ms = endpoint, int(timeout_s * 1000)
        self.poller = zmq.Poller()  # made once: every block waits on it
        for s in (self.sock, self.watch):
            if s is not None:
                self.poller.register(s, zmq.POLLIN)

    def close(self) -> None:
        if self.watch is not None:
            self.sock.disable_monitor()
            self.watch.close()
        self.sock.close()

    def _wait(self, op: str) -> None:
        """Until a reply is there; raises on the timeout or, when watched, on the peer's going away."""
        ready = dict(self.poller.poll(self.timeout_ms))
        if self.sock in ready:
            return
        if self.watch is not None and self.watch in ready:
            self.watch.recv_multipart()  # [event + value, address]
            raise DaemonError("not_found", f"the executor at {self.endpoint} went away; open a new session")
        raise DaemonError("timeout", f"no reply to {op} in {self.timeout_ms / 1000:g} s (is seisd running?)")

    def call(self, op: str, args: dict[str, Any], arrays: list[np.ndarray] = ()) -> tuple[dict, list[np.ndarray]]:
        """Send [header, array frames...]; return (result, arrays) of the reply, or raise DaemonError."""
        rid = uuid.uuid4().hex
        # Each array is described in the header and travels as raw C-order bytes in its own frame.
        descs = [{"dtype": a.dtype.name, "shape": list(a.shape), "byteorder": "little"} for a in arrays]
        header = {"v": 1, "id": rid, "op": op, "args": args, "arrays": descs}
        try:
            self.sock.send_multipart([json.dumps(header).encode()] + [np.ascontiguousarray(a) for a in arrays])
        except zmq.Again:
            raise DaemonError("timeout", f"could not send {op} in {self.timeout_ms / 1000:g} s (is seisd running?)") \
                from None
        while True:
            self._wait(op)
            frames = self.sock.recv_multipart()
            reply = json.loads(frames[0])
            if reply.get("re") == rid:
                break  # anything else is a late reply to an earlier request
        if not reply["ok"]:
            raise DaemonError(reply["error"]["code"], reply["error"]["message"])
        out = [np.frombuffer(f, dtype=np.dtype(d["dtype"]).newbyteorder("<" if d.get("byteorder", "little")
                                                                        == "little" else ">")).reshape(d["shape"])
               for d, f in zip(reply.get("arrays", []), frames[1:])]
        return reply["result"], out


def inlines_of_segy(path: Path) -> Iterator[np.ndarray]:
    """The inlines of a regular post-stack SEG-Y, one [n_crosslines, n_samples] float32 array at a time."""
    import segyio  # only this input path needs it

    with segyio.open(path, "r") as f:
        for number in f.ilines:
            yield np.asarray(f.iline[number], dtype=np.float32)


def inlines_of_cache(path: Path, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """The inlines of a survey cache volume (surveys/<name>/<volume>.f32: float32, C order [il, xl, sample])."""
    volume = np.memmap(path, dtype=np.float32, mode="r", shape=shape)
    for i in range(shape[0]):
        yield np.asarray(volume[i])


def session_id(conn: Connection, result: dict[str, Any], before: set[str]) -> str:
    """The session of a stream.open result; daemons that do not put it there list it in stream.list."""
    if "session" in result:
        return result["session"]
    new = [s["session"] for s in conn.call("stream.list", {})[0]["sessions"] if s["session"] not in before]
    if len(new) != 1:
        raise DaemonError("internal", "cannot tell which stream session was opened")
    return new[0]


def stream(conn: Connection, model: str, inlines: Iterator[np.ndarray], outputs: list[str],
           relay: bool = False) -> dict[str, Any]:
    """Open a session, apply it to every inline, close it; returns the measurements."""
    before = {s["session"] for s in conn.call("stream.list", {})[0]["sessions"]}
    # a key makes the open safe to send again after a timeout: the same key returns the same session
    opened, _ = conn.call("stream.open", {"model": model, "outputs": outputs, "key": uuid.uuid4().hex})
    sid = session_id(conn, opened, before)
    print(f"session {sid}: model {model}, classes {opened['classes']}, input {opened['input']}", file=sys.stderr)
    # blocks to the executor's own endpoint when one is offered; open and close always go to the daemon
    blocks = conn if relay or not opened.get("direct") else Connection(opened["direct"], watch=True)
    latencies, counts = [], None
    t0 = time.perf_counter()
    try:
        for section in inlines:
            block = section[None]  # one inline: [1, n_crosslines, n_samples]
            start = time.perf_counter()
            result, arrays = blocks.call("stream.apply", {"session": sid}, [block])
            latencies.append(time.perf_counter() - start)
            labels = dict(zip(result["outputs"], arrays))["labels"]
            # A host would now display or store the labels; here we only count them per class.
            hist = np.bincount(labels.ravel(), minlength=len(opened["classes"]))
            counts = hist if counts is None else counts + hist
    finally:
        if blocks is not conn:
            blocks.close()
        conn.call("stream.close", {"session": sid})
    seconds = time.perf_counter() - t0
    left = len(conn.call("stream.list", {})[0]["sessions"])
    return {"model": model, "classes": opened["classes"], "path": "relay" if blocks is conn else "direct",
            "blocks": len(latencies),
            "blocks_per_s": len(latencies) / seconds if seconds else None,
            "latency_ms_median": 1000 * statistics.median(latencies) if latencies else None,
            "latency_ms_max": 1000 * max(latencies) if latencies else None,
            "class_counts": [] if counts is None else counts.tolist(), "open_sessions_after": left}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", help="the daemon's home (default $SEISD_HOME or ~/.local/share/seisd)")
    ap.add_argument("--model", required=True, help="model name in the home's models/")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--segy", type=Path, help="a post-stack 3D SEG-Y to stream")
    source.add_argument("--cache", type=Path, help="a survey cache .f32 volume to stream (needs --shape)")
    ap.add_argument("--shape", help="il,xl,samples of the --cache volume")
    ap.add_argument("--outputs", default="labels,confidence")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON line")
    ap.add_argument("--relay", action="store_true", help="send the blocks through the daemon even when the "
                    "executor offers its direct endpoint")
    a = ap.parse_args(argv)
    if a.cache is not None and not a.shape:
        ap.error("--cache needs --shape il,xl,samples")
    inlines = (inlines_of_segy(a.segy) if a.segy else
               inlines_of_cache(a.cache, tuple(int(n) for n in a.shape.split(","))))
    conn = Connection(control_endpoint(home_dir(a.home)))
    try:
        report = stream(conn, a.model, inlines, a.outputs.split(","), relay=a.relay)
    except DaemonError as exc:
        print(f"host_client: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report) if a.json else
          f"{report['blocks']} inlines ({report['path']}), {report['blocks_per_s']:.1f} blocks/s, median latency "
          f"{report['latency_ms_median']:.1f} ms; class counts {report['class_counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
