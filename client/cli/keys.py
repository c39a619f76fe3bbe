"""seisctl keys create | authorize: CURVE key pairs for tcp access."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from client import protocol as P
from client.cli._common import EXIT_OK, EXIT_USAGE, Command, Out, command, group

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
    """Copy a public key into `HOME/keys/authorized/`; the daemon accepts it at once (no daemon needed for this
    command). `--json`: `{"authorized": path}`. A file that is not a key: exit 2."""

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
        dest_dir = home / "keys" / "authorized"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / src.name
        shutil.copyfile(src, dest)
        out.emit({"authorized": str(dest)}, lambda: print(f"authorised {src.name}: the daemon of {home} accepts it "
                                                          "now"))
        return EXIT_OK
