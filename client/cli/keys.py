"""seisctl keys create | authorize: CURVE key pairs for tcp access."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from client import protocol as P
from client.api import SeisdError
from client.cli._common import EXIT_OK, EXIT_USAGE, Command, Out, client_of, command, group

group("keys", "CURVE keys for tcp access")


@command
class KeysCreate(Command):
    """A CURVE key pair `DIR/NAME.key` (public) and `DIR/NAME.key_secret` (mode 0600); `--dir` default `.`.
    `--json`: `{"public", "secret"}`. Make the daemon's with `keys create server --dir $SEISD_HOME/keys`."""

    name, help = "keys create", "create a key pair NAME.key (public) and NAME.key_secret"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--dir", default=".", help="where to write the pair (default: here)")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        import zmq.auth
        d = Path(a.dir).expanduser()
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        public, secret = zmq.auth.create_certificates(str(d), a.name)
        os.chmod(secret, 0o600)
        r = {"public": str(public), "secret": str(secret)}
        out.emit(r, lambda: print(f"public key {public}\nsecret key {secret}  (keep it private)"))
        return EXIT_OK


@command
class KeysAuthorize(Command):
    """Copy a public key into the daemon's folder of authorised keys; the daemon accepts it at once. The folder is
    the one a running daemon reports (`authorized_keys` in its `status`, from its setting `tcp.authorized_keys`);
    when no daemon answers (none is needed for this command) or it reports none: `HOME/keys/authorized/`, the
    setting's default. Prints the folder used. `--json`: `{"authorized": path, "folder": folder, "source":
    "daemon" or "default"}`. A file that is not a key: exit 2."""

    name, help = "keys authorize", "let the holder of a public key connect over tcp"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("public_key")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        import shutil

        import zmq.auth
        src = Path(a.public_key)
        try:
            zmq.auth.load_certificate(str(src))
        except (OSError, ValueError) as exc:
            print(f"seisctl: {src} is not a ZeroMQ public key file: {exc}", file=sys.stderr)
            return EXIT_USAGE
        home = Path(a.home).expanduser().resolve() if a.home else P.default_home()
        dest_dir, source, why = _authorized_folder(a, home)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / src.name
        shutil.copyfile(src, dest)
        out.emit({"authorized": str(dest), "folder": str(dest_dir), "source": source},
                 lambda: print(f"authorised {src.name} in {dest_dir} ({why}): the daemon of {home} accepts it now"))
        return EXIT_OK


def _authorized_folder(a: argparse.Namespace, home: Path) -> tuple[Path, str, str]:
    """The folder of authorised keys, where it came from ("daemon" or "default") and why, in words: the
    `authorized_keys` of a daemon that answers `status` (relative: to its home), else HOME/keys/authorized."""
    try:
        s = client_of(a).status()
    except (SeisdError, OSError, ValueError):  # DaemonUnavailable included; OSError, ValueError: a bad key file
        return home / "keys" / "authorized", "default", "no daemon answered: the default folder"
    folder = s.get("authorized_keys")
    if not (isinstance(folder, str) and folder):
        return home / "keys" / "authorized", "default", "the daemon reports no folder: the default one"
    path = Path(folder).expanduser()
    return (path if path.is_absolute() else Path(s.get("home") or home) / path), "daemon", \
        "the folder the daemon reports"
