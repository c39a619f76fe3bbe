"""A client of docs/PROTOCOL.md written from the spec alone: json, pyzmq, hashlib, no code of seisd's client.

The conformance tests speak to a real daemon only through what is here: frames built with `json` and sent with
pyzmq, endpoints derived from a home by the rules of section 1, and a daemon process started and stopped the way a
user does (`python -m daemon.server.main`, SIGKILL). Nothing here imports `client`.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from tests.procs import ProcessFamily, StartedInWith

ROOT = Path(__file__).resolve().parents[2]
CTX = zmq.Context.instance()

# the daemon's settings for tests: one CPU slot, the test-only job kind, quick timers
TEST_ENV = {"SEISD_DEVICES": "cpu", "SEISD_PLUGINS": "[tests.daemon.testkinds]", "SEISD_EXECUTOR__CANCEL_GRACE_S": "1",
            "SEISD_EXECUTOR__RESTART_BACKOFF_S": "0.2", "SEISD_EXECUTOR__HEARTBEAT_S": "0.2", "SEISD_LOG_LEVEL": "info"}


# -- section 1: where the daemon of a home listens -----------------------------------------------------------------

def spec_resolve(path: str) -> str:
    """Absolute, then component by component from the left: "." and empty parts dropped, ".." removes the last
    part so far, a part naming a symbolic link is replaced by its target resolved the same way, a part that does
    not exist is kept as written (section 1, "The home")."""
    if not path.startswith("/"):
        path = os.getcwd() + "/" + path
    parts: list[str] = []
    todo = [p for p in path.split("/")]
    seen = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        candidate = "/" + "/".join(parts + [part])
        try:
            st = os.lstat(candidate)
        except OSError:
            parts.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            seen += 1
            assert seen < 40, "symbolic link loop"
            target = os.readlink(candidate)
            if target.startswith("/"):
                parts = []
            todo = [p for p in target.split("/")] + todo
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def spec_home(env: dict[str, str]) -> str:
    """Section 1: SEISD_HOME (with "~"), else an absolute XDG_DATA_HOME, else ~/.local/share; then resolved."""
    user_home = env.get("HOME") or os.path.expanduser("~")
    text = env.get("SEISD_HOME", "")
    if text:
        if text == "~":
            text = user_home
        elif text.startswith("~/"):
            text = user_home.rstrip("/") + text[1:]
    else:
        data = env.get("XDG_DATA_HOME", "")
        text = (data if data.startswith("/") else user_home.rstrip("/") + "/.local/share") + "/seisd"
    return spec_resolve(text)


def spec_runtime(home: str, env: dict[str, str]) -> str:
    """Section 1: <base>/seisd-<uid>-<12 hex of sha1(home)>, base the first of XDG_RUNTIME_DIR, TMPDIR that is an
    absolute path of an existing folder (trailing slashes removed), else /tmp."""
    base = "/tmp"
    for var in ("XDG_RUNTIME_DIR", "TMPDIR"):
        value = env.get(var, "")
        if value.startswith("/") and os.path.isdir(value):
            base = value.rstrip("/")
            break
    return f"{base}/seisd-{os.getuid()}-{hashlib.sha1(home.encode('utf-8')).hexdigest()[:12]}"


# -- sections 2 and 3: frames ----------------------------------------------------------------------------------------

def dealer(endpoint: str, timeout_ms: int = 15_000) -> zmq.Socket:
    s = CTX.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, timeout_ms)
    s.connect(endpoint)
    return s


def header(op: str, args: Any = None, rid: str | None = None, **extra: Any) -> bytes:
    h: dict[str, Any] = {"v": 1, "id": rid or uuid.uuid4().hex[:12], "op": op}
    if args is not None:
        h["args"] = args
    h.update(extra)
    return json.dumps(h).encode()


def exchange(sock: zmq.Socket, frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """Send frames, receive one reply: its header as JSON, and its array frames."""
    sock.send_multipart(frames)
    reply = sock.recv_multipart()
    return json.loads(reply[0]), reply[1:]


class Conn:
    """One DEALER socket to the control endpoint; `call` sends a request and waits for the reply with its id."""

    def __init__(self, endpoint: str, timeout_ms: int = 15_000):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.sock = dealer(endpoint, timeout_ms)

    def raw(self, frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        return exchange(self.sock, frames)

    def request(self, op: str, args: Any = None, arrays: list[tuple[dict[str, Any], bytes]] = (),
                **extra: Any) -> tuple[dict[str, Any], list[bytes]]:
        rid = uuid.uuid4().hex[:12]
        h = json.loads(header(op, args, rid, **extra))
        if arrays:
            h["arrays"] = [d for d, _ in arrays]
        self.sock.send_multipart([json.dumps(h).encode()] + [b for _, b in arrays])
        deadline = time.monotonic() + self.timeout_ms / 1000
        while True:
            reply = self.sock.recv_multipart()  # silence raises zmq.Again after the socket's timeout
            head = json.loads(reply[0])
            if head.get("re") == rid:
                return head, reply[1:]
            if time.monotonic() > deadline:  # only replies to other requests: do not drop them forever
                raise TimeoutError(f"no reply to {op!r} (id {rid}) within {self.timeout_ms} ms; last other: {head}")

    def call(self, op: str, args: Any = None, **extra: Any) -> dict[str, Any]:
        """The result of an ok reply; an error reply fails the test with its code and message."""
        head, _ = self.request(op, args, **extra)
        assert head["ok"], f"{op} {args}: {head.get('error')}"
        return head["result"]

    def error(self, op: str, args: Any = None, **extra: Any) -> dict[str, Any]:
        head, _ = self.request(op, args, **extra)
        assert not head["ok"], f"{op} {args}: expected an error, got {head}"
        return head["error"]

    def close(self) -> None:
        self.sock.close(0)


def subscriber(endpoint: str, *topics: str) -> zmq.Socket:
    s = CTX.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    for t in topics or ("",):
        s.setsockopt(zmq.SUBSCRIBE, t.encode())
    s.connect(endpoint)
    return s


def next_event(sub: zmq.Socket, timeout_s: float, want: Any = lambda ev: True) -> dict[str, Any] | None:
    """The next event (body JSON, with its topic frame as `_topic`) for which `want` holds, or None."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not sub.poll(int(left * 1000)):
            return None
        topic, body = sub.recv_multipart()
        ev = json.loads(body)
        ev["_topic"] = topic.decode()
        if want(ev):
            return ev
    return None


# -- a daemon process, as a user runs one --------------------------------------------------------------------------

class Daemon(StartedInWith):
    """`python -m daemon.server.main` with a given environment (no --home unless given): started, asked to stop
    with the `shutdown` operation, or killed with SIGKILL; it leaves no process behind (psutil)."""

    def __init__(self, env: dict[str, str], home_arg: Path | None = None, log: Path | None = None):
        base = {k: v for k, v in os.environ.items() if not k.startswith("SEISD_") and k not in
                ("XDG_RUNTIME_DIR", "XDG_DATA_HOME", "TMPDIR", "TEMP", "TMP")}
        self.env = {**base, **TEST_ENV, "PYTHONPATH": str(ROOT), **env}
        self.home_arg = home_arg
        self.home = Path(spec_home(self.env)) if home_arg is None else Path(spec_resolve(str(home_arg)))
        self.runtime = spec_runtime(str(self.home), self.env)
        self.control = f"ipc://{self.runtime}/control.sock"
        self.events = f"ipc://{self.runtime}/events.sock"
        self.family = ProcessFamily()
        self.log = log or Path("/tmp") / f"seisd-conformance-{uuid.uuid4().hex[:8]}.out"

    def start(self, timeout_s: float = 60.0, executors: bool = True) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "daemon.server.main", "--exit-with", str(os.getpid())] + \
            (["--home", str(self.home_arg)] if self.home_arg else [])
        with open(self.log, "ab") as out:
            self.family.started(subprocess.Popen(cmd, cwd=str(ROOT), env=self.env, stdin=subprocess.DEVNULL,
                                                 stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"seisd exited at start:\n{self.output()}"
            if os.path.exists(self.control[len("ipc://"):]):
                conn = Conn(self.control, 500)
                try:
                    status = conn.call("status")
                    if status["pid"] == self.proc.pid and (not executors or all(
                            d["state"] in ("ready", "busy") for d in status["devices"])):
                        self.snapshot()
                        return status
                except zmq.Again:
                    pass
                finally:
                    conn.close()
            time.sleep(0.05)
        raise AssertionError(f"seisd did not answer within {timeout_s} s at {self.control}:\n{self.output()}")

    def conn(self, timeout_ms: int = 15_000) -> Conn:
        return Conn(self.control, timeout_ms)

    def stop(self) -> int:
        assert self.proc is not None
        self.snapshot()
        c = self.conn()
        try:
            c.call("shutdown")
        finally:
            c.close()
        return self.proc.wait(60)

    def kill9(self) -> None:
        assert self.proc is not None
        self.snapshot()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.family.proc

    def snapshot(self) -> None:
        self.family.snapshot()

    def cleanup(self) -> None:
        self.family.kill_all(self.home, Path(self.runtime))

    def output(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no output)"



def wait_until(predicate: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)
