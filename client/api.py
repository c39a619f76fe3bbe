"""The Python client: `Client` offers every operation of the protocol, and an iterator over events.

    from client import Client
    with Client() as c:                      # the daemon of $SEISD_HOME, over ipc
        job = c.submit({"kind": "import", ...})
        for ev in c.events(job_topic(job["id"])):
            ...

Over tcp: `Client(endpoint="tcp://host:5760", server_key="server.key", client_key="me.key_secret")`; or set
SEISD_ENDPOINT, SEISD_SERVER_KEY and SEISD_CLIENT_KEY.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zmq
import zmq.auth

from client import protocol as P


class SeisdError(Exception):
    """An error reply from the daemon: `code` (protocol.ErrorCode), message, details."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


class DaemonUnavailable(SeisdError):
    """No daemon answered in time at the endpoint (not running, or a tcp key it does not accept)."""


STREAM_TIMEOUT_S = 310.0   # a stream request's wait: above the daemon's own 300 s (docs/PROTOCOL.md, section 3)


def exchange(sock: zmq.Socket, req: P.Request, timeout: float,
             watch: zmq.Socket | None = None) -> P.Reply | None:
    """Send `req` on a DEALER and return its reply; None when none came within `timeout` seconds. Replies to
    earlier requests that timed out are skipped. `watch`: a socket whose message means the peer is gone (a
    connection monitor); it raises PeerGone. The send too waits at most `timeout`: a DEALER with no connection
    (the daemon dropped it after a refused CURVE handshake, and libzmq has not reconnected yet) has no pipe to
    queue on, and a blocking send would wait for ever."""
    deadline = time.monotonic() + timeout
    if not sock.poll(max(0, int(timeout * 1000)), zmq.POLLOUT):
        return None
    try:
        sock.send_multipart(req.encode(), flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    if watch is not None:
        poller.register(watch, zmq.POLLIN)
    while True:
        left = deadline - time.monotonic()
        ready = dict(poller.poll(int(left * 1000))) if left > 0 else {}
        if not ready:
            return None
        if sock in ready:
            reply = P.decode_reply(sock.recv_multipart())
            if reply.re == req.id:
                return reply
        elif watch is not None and watch in ready:
            raise PeerGone()


class PeerGone(Exception):
    """The peer of an exchange went away (its connection dropped) before it answered."""


def outcome(reply: P.Reply) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A reply's result and arrays; SeisdError for an error reply."""
    if not reply.ok:
        e = reply.error or {}
        raise SeisdError(e.get("code", "internal"), e.get("message", "error"), e.get("details"))
    return reply.result or {}, reply.arrays


class Client:
    def __init__(self, home: str | Path | None = None, endpoint: str | None = None, timeout: float = 10.0,
                 server_key: str | Path | None = None, client_key: str | Path | None = None):
        self.home = Path(home).expanduser().resolve() if home else P.default_home()
        self.endpoint = endpoint or os.environ.get("SEISD_ENDPOINT") or P.control_endpoint(self.home)
        self.timeout = timeout
        self.server_key = server_key or os.environ.get("SEISD_SERVER_KEY")
        self.client_key = client_key or os.environ.get("SEISD_CLIENT_KEY")
        self.session: str | None = None   # the daemon's session id of the last reply
        self._zctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None

    # -- connection --------------------------------------------------------------------------------------------

    def _secure(self, s: zmq.Socket) -> None:
        if not self.endpoint.startswith("tcp://") and not (self.server_key or self.client_key):
            return
        if not (self.server_key and self.client_key):
            raise SeisdError("bad_args", f"{self.endpoint} is a tcp endpoint: the daemon only accepts CURVE there; "
                             "give the server's public key (SEISD_SERVER_KEY) and your secret key "
                             "(SEISD_CLIENT_KEY), made with `seisctl keys create`")
        server_public, _ = zmq.auth.load_certificate(str(self.server_key))
        public, secret = zmq.auth.load_certificate(str(self.client_key))
        if not secret:
            raise SeisdError("bad_args", f"{self.client_key} holds no secret key (use the .key_secret file)")
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_public, public, secret

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self._zctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            self._secure(s)
            s.connect(self.endpoint)
            self._sock = s
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the one request path ----------------------------------------------------------------------------------

    def call(self, op: str, arrays: list[np.ndarray] | None = None, timeout: float | None = None,
             **args: Any) -> dict[str, Any]:
        """Send one request and return its result; raises SeisdError for an error reply."""
        result, _ = self.call_arrays(op, arrays or [], timeout=timeout, **args)
        return result

    def call_arrays(self, op: str, arrays: list[np.ndarray], timeout: float | None = None,
                    **args: Any) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Like `call`, for operations that send or return binary arrays."""
        req = P.Request(op=op, args={k: v for k, v in args.items() if v is not None}, arrays=list(arrays))
        if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[len("ipc://"):]):
            raise DaemonUnavailable("unavailable", self._unreachable())  # no socket: do not wait for nobody
        reply = exchange(self._socket(), req, self.timeout if timeout is None else timeout)
        if reply is None:
            # the socket may hold a late reply to this request: drop it so the next call starts clean
            self.close()
            raise DaemonUnavailable("unavailable", self._unreachable())
        self.session = reply.session
        return outcome(reply)

    def _unreachable(self) -> str:
        if self.endpoint.startswith("ipc://"):
            sock = self.endpoint[len("ipc://"):]
            if not os.path.exists(sock):
                return (f"no seisd is running for home {self.home} (no socket at {sock}); start one with "
                        "`seisctl daemon start`")
            return f"seisd for home {self.home} did not answer within {self.timeout:g} s ({self.endpoint})"
        return (f"no answer from {self.endpoint} within {self.timeout:g} s: the daemon is not running there, "
                "or it does not accept your key (is your public key in its keys/authorized folder?)")

    # -- operations --------------------------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def submit(self, job: dict[str, Any], priority: int | None = None, key: str | None = None,
               retries: int = 1) -> dict[str, Any]:
        """Queue a job, exactly once: the submit carries an idempotency key (a new random one unless given), and a
        submit whose reply did not come in time is sent again with the same key, on a new socket, up to `retries`
        times; the daemon answers a repeat with the job the first one queued ({id, state, repeated: true})."""
        key = key or uuid.uuid4().hex
        for attempt in range(retries + 1):
            try:
                return self.call("submit", job=job, priority=priority, key=key)
            except DaemonUnavailable:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def jobs(self, state: list[str] | None = None, kind: str | None = None, limit: int | None = None,
             name: str | None = None) -> list[dict[str, Any]]:
        """Jobs, newest first; `name` is a shell pattern (`f3*`) the job's name must match."""
        return self.call("jobs", state=state, kind=kind, name=name, limit=limit)["jobs"]

    def show(self, job_id: int) -> dict[str, Any]:
        return self.call("show", id=job_id)

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self.call("cancel", id=job_id)

    def logs(self, job_id: int, offset: int = 0, max_bytes: int | None = None) -> dict[str, Any]:
        return self.call("logs", id=job_id, offset=offset, max_bytes=max_bytes)

    def job_events(self, job_id: int | None, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored events with seq > after: one job's, or (job_id None) every topic's, e.g. to catch up on what a
        subscriber missed while the daemon restarted."""
        return self.call("events", id=job_id, after=after, limit=limit)["events"]

    def devices(self) -> list[dict[str, Any]]:
        return self.call("devices")["devices"]

    def workers(self, job_id: int, count: int) -> dict[str, Any]:
        return self.call("workers", id=job_id, count=count)

    def predictions(self) -> list[dict[str, Any]]:
        """The predictions in the home (predictions/<name>/): name, model, survey, job, complete, size, modified."""
        return self.call("predictions.list")["predictions"]

    def prediction(self, name: str) -> dict[str, Any]:
        """One prediction: its summary and every file in its folder."""
        return self.call("predictions.info", name=name)

    def remove_prediction(self, name: str) -> dict[str, Any]:
        return self.call("predictions.rm", name=name)

    def shutdown(self) -> dict[str, Any]:
        return self.call("shutdown")

    # -- events ------------------------------------------------------------------------------------------------

    def events(self, *topics: str, timeout: float | None = None) -> Iterator[P.Event]:
        """Iterate over events of the given topics (all when none), until `timeout` seconds pass without one
        (forever when None). A topic ending in "." is a prefix ("job." = every job); others match exactly, so
        "job.1" does not deliver job.12's events. Subscribe before acting on a job, or read its stored events, to
        miss nothing."""
        sub = self.subscribe(*topics)
        try:
            while True:
                if not sub.poll(None if timeout is None else int(timeout * 1000)):
                    return
                frames = sub.recv_multipart()
                if topic_matches(frames[0].decode(errors="replace"), topics):
                    yield P.Event.decode(frames)
        finally:
            sub.close(0)

    def subscribe(self, *topics: str) -> zmq.Socket:
        """A SUB socket connected to the daemon's events (the caller closes it)."""
        s = self._zctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        endpoint = os.environ.get("SEISD_EVENTS_ENDPOINT")
        if endpoint is None:
            endpoint = (P.events_endpoint(self.home) if self.endpoint.startswith("ipc://")
                        else self.status()["endpoints"].get("tcp_events"))
        if not endpoint:
            raise SeisdError("unavailable", "the daemon publishes no events over tcp (set tcp.events_endpoint)")
        if endpoint.startswith("tcp://"):
            self._secure(s)
        for t in topics or ("",):
            s.setsockopt(zmq.SUBSCRIBE, t.encode())
        s.connect(endpoint)
        return s

    def wait(self, job_id: int, timeout: float | None = None, poll_s: float = 0.5) -> dict[str, Any]:
        """Block until the job reaches a final state; returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sub = self.subscribe(P.job_topic(job_id))
        try:
            while True:
                job = self.show(job_id)
                if job["state"] in P.TERMINAL_STATES:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s")
                if sub.poll(int(poll_s * 1000)):
                    while sub.poll(0):
                        sub.recv_multipart()
        finally:
            sub.close(0)


def topic_matches(topic: str, wanted: tuple[str, ...]) -> bool:
    """ZeroMQ subscriptions match prefixes; this makes "job.1" exact while "job." stays a prefix."""
    return not wanted or any(topic == w or (w.endswith(".") and topic.startswith(w)) or w == "" for w in wanted)
