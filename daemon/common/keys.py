"""CURVE keys for executors that connect over tcp (Ray nodes other than the daemon's machine).

The daemon makes two key pairs in `<home>/keys/` on first use: its own for the executor socket
(`executor-server.key_secret`) and one every executor uses (`executor.key_secret`), whose public half is the only
key in `<home>/keys/executors/`, the folder the socket's authenticator trusts. Executors read them from the shared
home, so only a process that can read the daemon's home can connect as an executor.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from daemon.common.home import keys_folder


@dataclass(frozen=True)
class ExecutorKeys:
    folder: Path

    @property
    def server_secret(self) -> Path:
        return self.folder / "executor-server.key_secret"

    @property
    def server_public(self) -> Path:
        return self.folder / "executor-server.key"

    @property
    def client_secret(self) -> Path:
        return self.folder / "executor.key_secret"

    @property
    def authorized(self) -> Path:
        return self.folder / "executors"

    def ensure(self) -> "ExecutorKeys":
        """Create the key pairs and the authorised folder when missing (owner-only files)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.server_secret.is_file():
            zmq.auth.create_certificates(str(self.folder), "executor-server")
        if not self.client_secret.is_file():
            zmq.auth.create_certificates(str(self.folder), "executor")
        self.authorized.mkdir(exist_ok=True)
        public = self.authorized / "executor.key"
        if not public.is_file():
            public.write_bytes((self.folder / "executor.key").read_bytes())
        for f in (self.server_secret, self.client_secret):
            os.chmod(f, 0o600)
        return self

    def apply_client(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client of the executor socket; call before connect."""
        server_public, _ = zmq.auth.load_certificate(str(self.server_public))
        public, secret = zmq.auth.load_certificate(str(self.client_secret))
        sock.curve_serverkey = server_public
        sock.curve_publickey = public
        sock.curve_secretkey = secret


def executor_keys(home: Path) -> ExecutorKeys:
    return ExecutorKeys(keys_folder(home))
