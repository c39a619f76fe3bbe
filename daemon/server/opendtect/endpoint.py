"""The OpendTect endpoint: a listening socket and the threads that serve it, off the daemon's loop.

Where it listens (settings `opendtect`, off by default): an AF_UNIX socket `opendtect.sock` in the daemon's private
runtime folder (mode 0700, as the control socket), or, with `tcp_port`, 127.0.0.1:PORT and no other address.
Who may connect: the daemon's own user, as for the rest of seisd's local sockets. AF_UNIX peers are checked with
SO_PEERCRED; a loopback tcp peer has no credentials on the socket, so its connecting socket is looked up in
/proc/net/tcp, whose entries carry their owner's uid. Any other peer is closed unanswered (as a CURVE handshake
without an authorised key gets nothing) and logged.

NOTE on threads and stopping: one thread accepts (a 0.2 s timeout on accept, so `stop` is seen); each connection is
served by a pool thread (at most MAX_CONNECTIONS at once; more wait in the listen backlog). A connection carries
one request: it is read (reads time out after READ_TIMEOUT_S of silence, so a silent peer cannot hold a thread),
answered through the Applier (which speaks to the daemon over the control socket, like any client) and closed.
`stop` closes the listener, tells the Applier's waits to give up (they poll in 0.2 s steps) and joins the threads;
a request cut short by the stop gets `unavailable` ("the daemon is stopping").
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from daemon.common.settings import LimitSettings, OpendtectSettings
from daemon.server.opendtect import framing as F
from daemon.server.opendtect.applier import Applier, DaemonLink
from daemon.server.records import DaemonError

log = logging.getLogger("seisd")

SOCKET_NAME = "opendtect.sock"
LOOPBACK = "127.0.0.1"
MAX_CONNECTIONS = 8
READ_TIMEOUT_S = 30.0
UCRED = struct.Struct("3i")   # struct ucred: pid, uid, gid


class OpendtectEndpoint:
    def __init__(self, settings: OpendtectSettings, limits: LimitSettings, rundir: Path, control_endpoint: str,
                 version: str):
        self.settings, self.limits = settings, limits
        self.path = None if settings.tcp_port is not None else rundir / SOCKET_NAME
        self._stopping = threading.Event()
        self.link = DaemonLink(control_endpoint, self._stopping.is_set)
        self.applier = Applier(self.link, settings.model, settings.device, version)
        self.listener = self._bind()
        self.address = (f"unix://{self.path}" if self.path is not None
                        else "tcp://{}:{}".format(*self.listener.getsockname()))
        self.pool = ThreadPoolExecutor(MAX_CONNECTIONS, thread_name_prefix="seisd-odt")
        self.thread = threading.Thread(target=self._accept_loop, name="seisd-odt-accept", daemon=True)

    def _bind(self) -> socket.socket:
        if self.path is not None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.path.unlink(missing_ok=True)  # a socket left by a daemon that was killed (the home lock is ours)
            where = str(self.path)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            where = (LOOPBACK, int(self.settings.tcp_port or 0))
        try:
            s.bind(where)
            if self.path is not None:
                os.chmod(self.path, 0o600)
            s.listen(32)
        except OSError as exc:
            s.close()
            raise DaemonError(f"cannot listen for OpendTect on {where}: {exc.strerror or exc} (setting "
                              "opendtect.tcp_port; or turn opendtect.enabled off)") from None
        s.settimeout(0.2)
        return s

    def start(self) -> None:
        self.thread.start()
        log.info("OpendTect endpoint listening on %s", self.address)

    def stop(self) -> None:
        self._stopping.set()
        self.thread.join(timeout=2.0)
        self.listener.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.link.shutdown()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    # -- the threads ---------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self.listener.accept()
            except socket.timeout:
                continue
            except OSError as exc:  # the listener was closed by stop(), or the process is out of descriptors
                if not self._stopping.is_set():
                    log.error("OpendTect endpoint: accept failed: %s", exc)
                    self._stopping.wait(1.0)
                continue
            try:
                self.pool.submit(self._serve, conn, peer)
            except RuntimeError:  # the pool was shut down under us: stopping
                conn.close()

    def _serve(self, conn: socket.socket, peer: object) -> None:
        try:
            self._serve_one(conn, peer)
        except Exception:  # noqa: BLE001 - whatever it was, it ends this connection only, and is logged
            log.exception("OpendTect endpoint: connection from %s failed", peer)

    def _serve_one(self, conn: socket.socket, peer: object) -> None:
        with conn:
            refused = self._refusal(conn, peer)
            if refused:
                log.warning("OpendTect endpoint: connection refused: %s", refused)
                return
            conn.settimeout(READ_TIMEOUT_S)
            try:
                req = F.read_request(conn, self.limits.max_message_bytes, self.limits.max_header_bytes)
            except F.FramingError as exc:
                log.info("OpendTect endpoint: bad request: %s", exc)
                if exc.request_id is not None:
                    self._send(conn, F.json_reply(exc.request_id, exc.sub_id, {
                        "result": f"Error: {exc}", "error": {"code": "bad_message", "message": str(exc)}}, str(exc)))
                return
            except (ConnectionError, socket.timeout, OSError) as exc:
                log.info("OpendTect endpoint: request not received: %s", exc)
                return
            try:
                reply = self.applier.handle(req)
            except Exception as exc:  # noqa: BLE001 - a bug must cost one request, never the endpoint
                log.exception("OpendTect endpoint: request failed")
                reply = F.json_reply(req.request_id, req.sub_id, {"result": f"Error: {type(exc).__name__}: {exc}",
                                     "error": {"code": "internal", "message": str(exc)}}, repr(exc))
            self._send(conn, reply)

    @staticmethod
    def _send(conn: socket.socket, reply: F.Buffers) -> None:
        try:
            for piece in reply:
                conn.sendall(piece)
        except OSError as exc:
            log.info("OpendTect endpoint: reply not sent: %s", exc)

    # -- who may connect -----------------------------------------------------------------------------------------

    def _refusal(self, conn: socket.socket, peer: object) -> str | None:
        """Why this peer may not be served, or None (it runs as the daemon's user)."""
        if self.path is not None:
            _, uid, _ = UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
        else:
            local = conn.getsockname()
            uid = loopback_peer_uid(peer, local)  # type: ignore[arg-type]
            if uid is None:
                return f"the owner of {peer} could not be found in /proc/net/tcp"
        return None if uid == os.getuid() else f"peer runs as uid {uid}, not as the daemon's user {os.getuid()}"


def _proc_net_address(addr: tuple[str, int]) -> str:
    """An IPv4 address as /proc/net/tcp writes it: the 32-bit address in host order, then the port, in hex."""
    (packed,) = struct.unpack("=I", socket.inet_aton(addr[0]))
    return f"{packed:08X}:{addr[1]:04X}"


def loopback_peer_uid(peer: tuple[str, int], local: tuple[str, int], table: str = "/proc/net/tcp") -> int | None:
    """The uid owning the connecting end of a loopback tcp connection: the entry whose local address is the peer's
    and whose remote address is ours. None when there is none (or no /proc)."""
    want_local, want_remote = _proc_net_address(peer), _proc_net_address(local)
    try:
        with open(table) as f:
            next(f, None)  # the column titles
            for line in f:
                cols = line.split()
                if len(cols) > 7 and cols[1] == want_local and cols[2] == want_remote:
                    return int(cols[7])
    except OSError:
        return None
    return None
