"""tcp with CURVE: keys made and authorised with the real `seisctl`, then who gets answers and who does not."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import zmq

from client import protocol as P
from client.api import Client, DaemonUnavailable, SeisdError
from tests.harness import ROOT, RunningDaemon, daemon_env, free_port, seisctl_json, steps_job, wait_state


class Keys:
    def __init__(self, root: Path, home: Path):
        self.home = home
        self.server = seisctl_json(home, "keys", "create", "server", "--dir", str(home / "keys"))
        self.me = seisctl_json(home, "keys", "create", "me", "--dir", str(root / "client-keys"))
        self.stranger = seisctl_json(home, "keys", "create", "stranger", "--dir", str(root / "other-keys"))
        seisctl_json(home, "keys", "authorize", self.me["public"])


@pytest.fixture(scope="module")
def curve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDaemon, Keys]]:
    root = tmp_path_factory.mktemp("curve")
    home = root / "home"
    keys = Keys(root, home)
    env = {"SEISD_TCP__ENDPOINT": f"tcp://127.0.0.1:{free_port()}",
           "SEISD_TCP__EVENTS_ENDPOINT": f"tcp://127.0.0.1:{free_port()}"}
    with RunningDaemon(home, env=env) as d:
        yield d, keys


def _tcp_client(d: RunningDaemon, client_key: str, timeout: float = 5.0) -> Client:
    return Client(home=d.home, endpoint=d.client.status()["endpoints"]["tcp_control"], timeout=timeout,
                  server_key=str(d.home / "keys" / "server.key"), client_key=client_key)


def test_key_files_are_made_and_authorised(curve: tuple[RunningDaemon, Keys]) -> None:
    d, keys = curve
    assert keys.server["secret"] == str(d.home / "keys" / "server.key_secret")
    assert stat.S_IMODE(Path(keys.me["secret"]).stat().st_mode) == 0o600
    assert (d.home / "keys" / "authorized" / "me.key").is_file()


def test_authorised_key_gets_answers_and_events(curve: tuple[RunningDaemon, Keys]) -> None:
    d, keys = curve
    with _tcp_client(d, keys.me["secret"]) as c:
        s = c.status()
        assert s["pid"] == d.pid and s["endpoints"]["tcp_control"].startswith("tcp://127.0.0.1:")
        sub = c.subscribe("job.")
        try:
            assert sub.getsockopt_string(zmq.LAST_ENDPOINT).startswith("tcp://")
            time.sleep(0.5)  # the CURVE handshake and subscription must complete before the event is published
            job_id = c.submit(steps_job(steps=2))["id"]
            assert wait_state(c, job_id)["state"] == "succeeded"
            assert sub.poll(5000), "no event over tcp"
            ev = P.Event.decode(sub.recv_multipart())
            assert ev.topic == P.job_topic(job_id) and ev.type == P.EventType.JOB_STATE
            assert ev.session == s["session"]
        finally:
            sub.close(0)


def test_unauthorised_key_gets_no_answer(curve: tuple[RunningDaemon, Keys]) -> None:
    d, keys = curve
    with _tcp_client(d, keys.stranger["secret"], timeout=1.0) as c:
        with pytest.raises(DaemonUnavailable) as err:
            c.ping()
    assert "does not accept your key" in err.value.message
    assert d.client.ping()  # the daemon is unharmed


def test_plain_tcp_gets_no_answer(curve: tuple[RunningDaemon, Keys]) -> None:
    d, _ = curve
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    # the server drops a peer that fails the CURVE handshake: a send between that and the next reconnect has no
    # pipe to queue on and would wait for ever (it did once, in session 36's suite), so it gives up after 1 s
    s.setsockopt(zmq.SNDTIMEO, 1000)
    try:
        s.connect(d.client.status()["endpoints"]["tcp_control"])
        try:
            s.send_multipart(P.Request(op="ping").encode())
        except zmq.Again:
            pass  # not even queued: no answer either
        else:
            assert not s.poll(1000)
    finally:
        s.close(0)
    assert d.client.ping()


_DROPPED_SENDER = """
import json, sys, time, zmq
from client import protocol as P
from client.api import exchange
s = zmq.Context.instance().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
replies = []
for _ in range(4):  # the first send may queue; the server drops the peer; later sends may have no pipe
    t0 = time.monotonic()
    replies.append([exchange(s, P.Request(op="ping"), 0.5), round(time.monotonic() - t0, 2)])
sys.path.insert(0, "tools")
from host_client import Connection, DaemonError  # the reference host client: one socket for all its requests
host = Connection(sys.argv[1], timeout_s=0.5)
for _ in range(4):
    t0 = time.monotonic()
    try:
        host.call("ping", {})
        replies.append(["answered", 0])
    except DaemonError as e:
        replies.append([None if e.code == "timeout" else e.code, round(time.monotonic() - t0, 2)])
print(json.dumps(replies))
"""


def test_an_exchange_on_a_dropped_connection_times_out_instead_of_blocking(curve: tuple[RunningDaemon, Keys]) -> None:
    """`client.api.exchange`, and tools/host_client.py's Connection, must give up within their timeout even when a
    send has nowhere to go: a DEALER whose handshake the daemon refused has no pipe until libzmq reconnects, and a
    blocking send there never returns."""
    d, _ = curve
    r = subprocess.run([sys.executable, "-c", _DROPPED_SENDER, d.client.status()["endpoints"]["tcp_control"]],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    replies = json.loads(r.stdout)  # [[reply or null, seconds], ...]
    assert [reply for reply, _ in replies] == [None] * 8
    assert all(took < 2.0 for _, took in replies), replies
    assert d.client.ping()


def test_client_refuses_tcp_without_keys(curve: tuple[RunningDaemon, Keys]) -> None:
    d, _ = curve
    with pytest.raises(SeisdError) as err:
        Client(home=d.home, endpoint=d.client.status()["endpoints"]["tcp_control"]).ping()
    assert (err.value.code == P.ErrorCode.BAD_ARGS and "CURVE" in str(err.value)
            and "seisctl keys create" in str(err.value))


def test_runtime_dir_is_private(curve: tuple[RunningDaemon, Keys]) -> None:
    d, _ = curve
    rundir = P.runtime_dir(d.home)
    assert stat.S_IMODE(rundir.stat().st_mode) == 0o700
    assert (rundir / "control.sock").exists()


def test_tcp_without_server_key_refuses_to_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = daemon_env(home, {"SEISD_TCP__ENDPOINT": f"tcp://127.0.0.1:{free_port()}"})
    r = subprocess.run([sys.executable, "-m", "daemon.server.main", "--home", str(home)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "server key" in r.stderr and "does not exist" in r.stderr and "seisctl keys create" in r.stderr
    assert not (P.runtime_dir(home) / "control.sock").exists() or not _answers(home)


def _answers(home: Path) -> bool:
    try:
        Client(home=home, timeout=0.5).ping()
        return True
    except DaemonUnavailable:
        return False


# --- rotation and revocation (the ring is rebuilt from the folder's contents, open connections included) ---------

def _answered(d: RunningDaemon, secret: str, timeout: float = 1.5) -> bool:
    try:
        with _tcp_client(d, secret, timeout=timeout) as c:
            return bool(c.ping())
    except DaemonUnavailable:
        return False


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[tuple[RunningDaemon, Keys, Path]]:
    home = tmp_path / "home"
    keys = Keys(tmp_path, home)
    env = {"SEISD_TCP__ENDPOINT": f"tcp://127.0.0.1:{free_port()}"}
    with RunningDaemon(home, env=env) as d:
        yield d, keys, home / "keys" / "authorized"


def test_a_key_rotated_in_place_lets_the_new_key_in_and_the_old_one_out(rotating, tmp_path: Path) -> None:
    d, keys, folder = rotating
    assert _answered(d, keys.me["secret"])
    new = seisctl_json(d.home, "keys", "create", "me", "--dir", str(tmp_path / "new-keys"))
    mtime = folder.stat().st_mtime_ns
    seisctl_json(d.home, "keys", "authorize", new["public"])  # the same name: overwritten in place
    assert folder.stat().st_mtime_ns == mtime, "the folder's mtime moved: this test no longer tests rotation in place"
    assert _eventually(lambda: _answered(d, new["secret"])), "the new key is not let in"
    assert not _answered(d, keys.me["secret"]), "the rotated-out key still gets answers"


def test_a_revoked_key_loses_its_open_connection_and_a_removed_folder_lets_nobody_in(rotating) -> None:
    d, keys, folder = rotating
    with _tcp_client(d, keys.me["secret"], timeout=1.5) as open_client:
        assert open_client.ping()
        (folder / "me.key").unlink()
        time.sleep(1.2)  # the ring is rescanned at most every 0.5 s
        with pytest.raises(DaemonUnavailable):
            open_client.ping()  # the connection is still open: the daemon drops its messages
    seisctl_json(d.home, "keys", "authorize", keys.me["public"])
    assert _eventually(lambda: _answered(d, keys.me["secret"]))
    import shutil
    shutil.rmtree(folder)
    time.sleep(1.2)
    assert not _answered(d, keys.me["secret"]), "a removed folder still lets its old keys in"
    assert d.client.ping()  # ipc is unharmed


def test_an_unreadable_key_file_does_not_freeze_the_others(rotating, tmp_path: Path) -> None:
    d, keys, folder = rotating
    (folder / "junk.key").write_text("this is not a key\n")
    other = seisctl_json(d.home, "keys", "create", "other", "--dir", str(tmp_path / "other"))
    seisctl_json(d.home, "keys", "authorize", other["public"])
    assert _eventually(lambda: _answered(d, other["secret"])), "a broken file in the folder froze the key set"
    assert _answered(d, keys.me["secret"])
    warnings = d.client.status()["security"]["warnings"]
    assert any("junk.key" in w for w in warnings), warnings


def test_loose_key_modes_are_warned_about_and_a_writable_folder_is_refused(rotating) -> None:
    d, keys, folder = rotating
    secret = d.home / "keys" / "server.key_secret"
    secret.chmod(0o644)
    folder.chmod(0o777)
    time.sleep(1.2)
    warnings = d.client.status()["security"]["warnings"]
    assert any("server.key_secret" in w and "readable by others" in w for w in warnings), warnings
    assert any("writable by others" in w for w in warnings), warnings
    assert not _answered(d, keys.me["secret"]), "keys from a world-writable folder are still accepted"
    r = subprocess.run([sys.executable, "-m", "client.cli", "doctor"], cwd=ROOT, env=daemon_env(d.home),
                       capture_output=True, text=True, timeout=60)
    assert "readable by others" in r.stdout and "WARN" in r.stdout, r.stdout
    folder.chmod(0o700)
    secret.chmod(0o600)
    assert _eventually(lambda: _answered(d, keys.me["secret"]))


def test_a_tcp_client_is_offered_no_direct_stream_endpoint(curve: tuple[RunningDaemon, Keys]) -> None:
    """The executors' direct endpoints are ipc sockets in the daemon's private folder: only a client of this
    machine (ipc) is told of one; over tcp every block goes through the daemon and its CURVE socket."""
    from client import Stream
    from tests.daemon.predict_data import save_model

    d, keys = curve
    save_model(d.home, "tcpmodel")
    block = np.random.default_rng(2).normal(size=(1, 16, 16)).astype(np.float32)
    with _tcp_client(d, keys.me["secret"], timeout=60) as c, Stream.open(c, "tcpmodel") as remote:
        assert "direct" not in remote.opened and remote.endpoint is None
        with Stream.open(d.client, "tcpmodel") as local:
            assert local.opened["direct"].startswith("ipc://")
            assert np.array_equal(remote.apply(block)["labels"], local.apply(block)["labels"])
