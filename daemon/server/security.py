"""CURVE for tcp endpoints: the daemon's key pair and the folder of authorised client public keys.

Only tcp sockets get here; ipc sockets are protected by the 0700 runtime folder instead. pyzmq's authenticator runs
the ZAP handshake in its own thread: a client whose public key is not in the folder never completes the handshake,
so it gets no reply of any kind. Keys are ZeroMQ certificate files as `seisctl keys create` writes them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from daemon.server.records import DaemonError

log = logging.getLogger("seisd.security")


class CurveServer:
    def __init__(self, zctx: zmq.Context, secret_key_file: Path, authorized_dir: Path):

        if not secret_key_file.is_file():
            raise DaemonError(f"tcp.endpoint is set but the server key {secret_key_file} does not exist; create it "
                              f"with `seisctl keys create server --dir {secret_key_file.parent}`")
        try:
            self.public, self.secret = zmq.auth.load_certificate(str(secret_key_file))
        except (OSError, ValueError) as exc:
            raise DaemonError(f"cannot read the server key {secret_key_file}: {exc}") from None
        if not self.secret:
            raise DaemonError(f"{secret_key_file} holds no secret key (use the .key_secret file)")
        authorized_dir.mkdir(parents=True, exist_ok=True)
        self.authorized_dir = authorized_dir
        self.auth = ThreadAuthenticator(zctx, log=logging.getLogger("seisd.zap"))
        self.auth.start()
        self._mtime = -1.0
        self.reload_if_changed()

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE server; call before bind."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def reload_if_changed(self) -> None:
        """Re-read the authorised keys when the folder changed (keys added or removed take effect at once)."""
        try:
            mtime = self.authorized_dir.stat().st_mtime
        except OSError:
            return
        if mtime != self._mtime:
            self._mtime = mtime
            self.auth.configure_curve(domain="*", location=str(self.authorized_dir))
            log.info("authorised client keys: %d", len(self.auth.certs.get("*", {})))

    def stop(self) -> None:
        self.auth.stop()
