"""CURVE for tcp endpoints: the daemon's key pair and the folder of authorised client public keys.

Only tcp sockets get here; ipc sockets are protected by the 0700 runtime folder instead. pyzmq's authenticator runs
the ZAP handshake in its own thread and asks `KeyRing.callback` whether a client key is allowed: a client whose key
is not in the ring never completes the handshake, so it gets no reply of any kind. Keys are ZeroMQ certificate
files as `seisctl keys create` writes them.

NOTE [rotation and revocation]
  The ring is rebuilt whenever the folder's *contents* change: the name, size, mtime and inode of every file are
  compared at each look (at most every RESCAN_S), so a key overwritten in place under the same name, a key file
  removed, or the whole folder removed takes effect within a second; the folder's own mtime is not trusted (an
  overwrite in place does not change it). A file that cannot be read or is not a public key is skipped with a
  warning; it never freezes the rest of the ring. A missing folder is an empty ring: nobody gets in. A key the
  ring does not know makes its handshake look at the folder again first (libzmq never retries a refused handshake,
  so a client connecting right after `seisctl keys authorize` must not meet a ring half a second old).
  The handshake happens once per connection, so revoking a key must also reach connections that are already
  open: every message on a CURVE socket carries the User-Id the handshake gave it (the client's key, z85), and
  the daemon drops a message whose key is no longer in the ring (`KeyRing.allows`), unanswered, like a stranger's.

NOTE [file modes]
  A server secret key readable by group or others, or an authorised folder (or key file) that group or others can
  write, lets someone else act as the daemon or let themselves in. Such a folder is refused as a whole (empty
  ring) and every finding is logged and listed in `warnings`, which `status` reports and `seisctl doctor` shows.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from daemon.server.records import DaemonError

log = logging.getLogger("seisd.security")

RESCAN_S = 0.5          # the daemon's loop looks at the folder this often
UNKNOWN_RESCAN_S = 0.05  # an unknown key's handshake looks again if the last look is older


def _fingerprint(folder: Path) -> tuple | None:
    """What identifies the folder's contents for a reload: None when it is missing."""
    try:
        st = folder.stat()
        entries = sorted((e.name, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode)
                         for e in os.scandir(folder) if e.name.endswith(".key") for s in [e.stat()])
    except OSError:
        return None
    return (st.st_mode, st.st_ino, tuple(entries))


def mode_problems(secret_key_file: Path, authorized_dir: Path) -> list[str]:
    """File-mode findings that let someone else act as the daemon or authorise themselves."""
    out = []
    try:
        if stat.S_IMODE(secret_key_file.stat().st_mode) & 0o077:
            out.append(f"the server secret key {secret_key_file} is readable by others (chmod 600 it)")
    except OSError:
        pass
    try:
        if stat.S_IMODE(authorized_dir.stat().st_mode) & 0o022:
            out.append(f"the authorised-keys folder {authorized_dir} is writable by others: its keys are refused "
                       f"(chmod go-w {authorized_dir})")
    except OSError:
        pass
    return out


class KeyRing:
    """The set of authorised client keys (z85 text), rebuilt from the folder when its contents change."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.keys: frozenset[bytes] = frozenset()
        self.warnings: list[str] = []
        self._seen: Any = ()
        self._last = -RESCAN_S
        self._lock = threading.Lock()

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP's question (in the authenticator's thread): may this key connect? An unknown key makes the ring look
        at the folder first (at most every UNKNOWN_RESCAN_S): libzmq does not retry a refused handshake, so a key
        authorised a moment before its client connects must be found now, not at the next periodic look."""
        if client_key in self.keys:
            return True
        self.refresh(min_interval=UNKNOWN_RESCAN_S)
        return client_key in self.keys

    def allows(self, user_id: str | None) -> bool:
        """May a message whose connection authenticated as `user_id` (the z85 key) be served now?"""
        return user_id is not None and user_id.encode("ascii", "replace") in self.keys

    def refresh(self, force: bool = False, min_interval: float = RESCAN_S) -> bool:
        """Re-read the folder if its contents changed and the last look is `min_interval` old; True when the ring
        was rebuilt. Called by the daemon's loop and by the ZAP thread, hence the lock."""
        with self._lock:
            now = time.monotonic()
            if not force and now < self._last + min_interval:
                return False
            self._last = now
            seen = _fingerprint(self.folder)
            if seen == self._seen and not force:
                return False
            self._seen = seen
            self.keys, self.warnings = self._load(seen is not None)
        log.info("authorised client keys: %d%s", len(self.keys),
                 "".join(f"; WARNING {w}" for w in self.warnings))
        return True

    def _load(self, present: bool) -> tuple[frozenset[bytes], list[str]]:
        if not present:
            return frozenset(), [f"the authorised-keys folder {self.folder} does not exist: no client is let in"]
        if stat.S_IMODE(self.folder.stat().st_mode) & 0o022:
            return frozenset(), [f"the authorised-keys folder {self.folder} is writable by others: its keys are "
                                 f"refused (chmod go-w {self.folder})"]
        keys, warnings = set(), []
        for file in sorted(self.folder.glob("*.key")):
            try:
                if stat.S_IMODE(file.stat().st_mode) & 0o022:
                    warnings.append(f"{file} is writable by others: skipped (chmod go-w it)")
                    continue
                public, _ = zmq.auth.load_certificate(str(file))
            except (OSError, ValueError) as exc:
                warnings.append(f"{file} is not a readable ZeroMQ public key: skipped ({exc})")
                continue
            if public:
                keys.add(public)
        return frozenset(keys), warnings


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
        authorized_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.secret_key_file = secret_key_file
        self.authorized_dir = authorized_dir
        self.ring = KeyRing(authorized_dir)
        self.ring.refresh(force=True)
        self.auth = ThreadAuthenticator(zctx, log=logging.getLogger("seisd.zap"))
        self.auth.start()
        self.auth.configure_curve_callback(domain="*", credentials_provider=self.ring)
        for w in mode_problems(secret_key_file, authorized_dir):
            log.warning("%s", w)

    @property
    def warnings(self) -> list[str]:
        """Findings about the key files, for `status` and `seisctl doctor`."""
        found = mode_problems(self.secret_key_file, self.authorized_dir)
        return found + [w for w in self.ring.warnings if w not in found]

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE server; call before bind."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def reload_if_changed(self) -> None:
        """Rebuild the ring when the folder's contents changed (cheap: at most one folder scan every RESCAN_S)."""
        self.ring.refresh()

    def allows(self, frame: zmq.Frame) -> bool:
        """Is the message (any of its frames) from a connection whose key is still authorised?"""
        try:
            user_id = frame.get("User-Id")
        except (zmq.ZMQError, AttributeError):
            return False
        return self.ring.allows(user_id)

    def stop(self) -> None:
        self.auth.stop()
