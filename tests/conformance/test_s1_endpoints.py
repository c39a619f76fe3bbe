"""Section 1, "Endpoints and transports": a daemon started without --home binds where the spec's rules put it.

Each case starts a real daemon in an environment a host may meet (a "~" in SEISD_HOME, a home that does not exist
yet below a symbolic link, an empty or a relative XDG_DATA_HOME, a TMPDIR that ends in a slash or does not exist,
XDG_RUNTIME_DIR with trailing slashes), computes the home and the runtime folder from the spec alone
(tests/conformance/wire.py), and reaches the daemon there over ipc; `status` reports the same home and endpoints,
the runtime folder is private (0700), and a daemon that stopped leaves no control.sock.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.conformance.wire import Daemon


def _tilde_below_a_link(tmp: Path) -> dict[str, str]:
    (tmp / "user-real").mkdir()
    (tmp / "user-link").symlink_to(tmp / "user-real")
    (tmp / "rt").mkdir()
    return {"HOME": str(tmp / "user-link"), "SEISD_HOME": "~/not/yet/../made/home", "TMPDIR": f"{tmp}/rt/"}


def _empty_xdg_data_home(tmp: Path) -> dict[str, str]:
    (tmp / "user").mkdir()
    return {"HOME": str(tmp / "user"), "XDG_DATA_HOME": "", "TMPDIR": str(tmp / "missing")}


def _relative_xdg_data_home(tmp: Path) -> dict[str, str]:
    (tmp / "user").mkdir()
    (tmp / "xrt").mkdir()
    return {"HOME": str(tmp / "user"), "XDG_DATA_HOME": "relative/data", "XDG_RUNTIME_DIR": f"{tmp}/xrt//",
            "TMPDIR": "/"}


def _absolute_xdg_data_home(tmp: Path) -> dict[str, str]:
    (tmp / "user").mkdir()
    return {"HOME": str(tmp / "user"), "XDG_DATA_HOME": f"{tmp}/data/", "XDG_RUNTIME_DIR": "relative/run"}


CASES: dict[str, Callable[[Path], dict[str, str]]] = {
    "tilde, a home not made yet, below a symbolic link, TMPDIR with a slash": _tilde_below_a_link,
    "empty XDG_DATA_HOME, TMPDIR missing": _empty_xdg_data_home,
    "relative XDG_DATA_HOME, XDG_RUNTIME_DIR with slashes": _relative_xdg_data_home,
    "absolute XDG_DATA_HOME, relative XDG_RUNTIME_DIR": _absolute_xdg_data_home,
}


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path: a socket path under pytest's tmp_path (longer with xdist's popen-gwN/) can pass
    the 107-byte limit of a Unix socket's name in the cases where the runtime folder is below it."""
    with tempfile.TemporaryDirectory(prefix="s1-") as tmp:
        yield Path(tmp)


@pytest.mark.parametrize("case", list(CASES))
def test_the_daemon_binds_where_the_spec_says(short_tmp: Path, case: str) -> None:
    d = Daemon(CASES[case](short_tmp), log=short_tmp / "seisd.out")
    try:
        status = d.start(executors=False)
        assert status["home"] == str(d.home)
        assert status["endpoints"]["control"] == d.control and status["endpoints"]["events"] == d.events
        mode = os.stat(d.runtime).st_mode
        assert stat.S_IMODE(mode) == 0o700 and os.stat(d.runtime).st_uid == os.getuid()
        assert len(d.control) - len("ipc://") < 108  # the Unix socket path limit
        assert d.stop() == 0
        assert not os.path.exists(d.control[len("ipc://"):])  # no control.sock: no daemon for that home
    finally:
        d.cleanup()


def test_the_worked_example_of_the_spec() -> None:
    """The example of section 1, recomputed: the hash is of the home's text, the folder under the base."""
    import hashlib

    home = "/home/ana/.local/share/seisd"
    assert hashlib.sha1(home.encode()).hexdigest() == "f424f144a52db28611518e83eb9618e5ce4da38f"


def test_tcp_with_curve_and_heartbeats(tmp_path: Path) -> None:
    """"tcp, only with CURVE": an authorised key gets answers over tcp, with the heartbeats `status` reports; a
    client without CURVE gets nothing at all."""
    import socket

    import zmq
    import zmq.auth

    from tests.conformance.wire import CTX, exchange, header

    home = tmp_path / "home"
    (home / "keys" / "authorized").mkdir(parents=True)
    zmq.auth.create_certificates(str(home / "keys"), "server")
    public, secret = zmq.auth.create_certificates(str(tmp_path), "alice")
    (home / "keys" / "authorized" / "alice.key").write_text(Path(public).read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = Daemon({"SEISD_HOME": str(home), "SEISD_TCP__ENDPOINT": f"tcp://127.0.0.1:{port}"}, log=tmp_path / "out")
    try:
        status = d.start(executors=False)
        assert status["heartbeat"] == {"interval_ms": 5000, "timeout_ms": 15000, "ttl_ms": 30000}
        assert status["endpoints"]["tcp_control"] == f"tcp://127.0.0.1:{port}"
        server_public, _ = zmq.auth.load_certificate(str(home / "keys" / "server.key"))
        client_public, client_secret = zmq.auth.load_certificate(secret)
        sock = CTX.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 15_000)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, client_public, client_secret
        for opt, value in ((zmq.HEARTBEAT_IVL, 5000), (zmq.HEARTBEAT_TIMEOUT, 15000), (zmq.HEARTBEAT_TTL, 30000)):
            sock.setsockopt(opt, value)  # as section 1 advises a tcp client
        sock.connect(status["endpoints"]["tcp_control"])
        head, _ = exchange(sock, [header("ping", rid="tcp")])
        sock.close(0)
        assert head["ok"] and head["re"] == "tcp" and head["session"] == status["session"]
        plain = CTX.socket(zmq.DEALER)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(status["endpoints"]["tcp_control"])
        plain.send(header("ping"))
        assert not plain.poll(1500)  # no CURVE: silence, not an error
        plain.close(0)
    finally:
        d.cleanup()
