"""seisd as OpendTect's apply server: a client written from the interop notes alone (tests/daemon/odt_wire.py)
gets status, sets parameters and applies blocks of a survey through a real daemon; its outputs equal stream.apply's
on the same blocks. Also: kill ends the session and not the daemon, bad requests get error replies, a lost session
is opened again, the tcp form listens on loopback only and knows its peer's user, and the relay that stands where
the plugin starts dgbpy's apply server (tools/opendtect_apply_server.py) passes the plugin's requests on."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.server.opendtect.endpoint import loopback_peer_uid
from tests.daemon import odt_wire as odt
from tests.daemon.predict_data import home_with_unet
from tests.harness import ROOT, DaemonDidNotStart, RunningDaemon

ON = {"SEISD_OPENDTECT__ENABLED": "true"}
ALL = ["labels", "probabilities", "confidence"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    home = (tmp_path_factory.mktemp("odt") / "home").resolve()
    home.mkdir(parents=True)
    made = home_with_unet(home)
    with RunningDaemon(home, env=ON) as d:
        yield d, made, d.client.status()["endpoints"]["opendtect"]


def blocks_of(made, n: int = 3, inlines: int = 2) -> list[np.ndarray]:
    """Blocks [nattribs=1, il, xl, z] of the survey, as OpendTect cuts them."""
    seismic = made["survey"].volume("seismic")
    return [np.ascontiguousarray(seismic[k * inlines:(k + 1) * inlines])[None] for k in range(n)]


def stream_outputs(d, block: np.ndarray) -> dict[str, np.ndarray]:
    sid = d.client.call("stream.open", model="unet1", outputs=ALL)["session"]
    try:
        result, arrays = d.client.call_arrays("stream.apply", [block], session=sid)
        return dict(zip(result["outputs"], arrays))
    finally:
        d.client.call("stream.close", session=sid)


def test_status_parameters_and_applies_equal_stream_apply(prepared) -> None:
    d, made, address = prepared
    assert address.startswith("unix://") and Path(address[len("unix://"):]).stat().st_mode & 0o777 == 0o600
    status, _ = odt.request_json(address, {"action": "status"}, request_id=11)
    assert status["result"] == "Server online" and status["pid"] == d.pid
    classes = d.client.call("models.info", name="unet1")["classes"]
    names = ["Facies", *classes, "Confidence"]   # the target, every class's probability, the confidence
    params, _ = odt.request_json(address, {"action": "parameters", "model": "unet1", "names": names,
                                           "prefercpu": True, "apply_dir": "In-line", "scales": [],
                                           "preddtype": "uint8", "probdtype": "float32", "confdtype": "float32"})
    assert params["result"] == "Output names received", params
    assert params["outputs"] == ["prediction", "probabilities", "confidence"] and params["ignored"] == ["scales"]
    sessions = d.client.call("stream.list")["sessions"]
    assert [s["model"] for s in sessions] == ["unet1"]   # the model is kept warm in an executor
    for k, block in enumerate(blocks_of(made)):
        pred, probs, conf = odt.apply(address, [block], request_id=100 + k)
        want = stream_outputs(d, block)
        assert pred.dtype == np.uint8 and pred.shape == (1, 2, 32, 32)
        assert probs.shape == (len(classes), 2, 32, 32) and conf.shape == (1, 2, 32, 32)
        np.testing.assert_array_equal(pred[0], want["labels"])
        np.testing.assert_array_equal(probs, want["probabilities"])
        np.testing.assert_array_equal(conf[0], want["confidence"])
    assert d.client.call("stream.list")["sessions"] == sessions   # one session served every block


def test_batches_lines_subsets_and_dtypes(prepared) -> None:
    d, made, address = prepared
    classes = d.client.call("models.info", name="unet1")["classes"]
    odt.request_json(address, {"action": "outputs", "value": {"model": "unet1", "names": [classes[2], classes[0]],
                                                               "probdtype": "float64", "survey": "None"}})
    a, b = blocks_of(made, 2)
    (batched,) = odt.apply(address, [np.stack([a, b])])            # [batch, nattribs, il, xl, z]
    assert batched.dtype == np.float64 and batched.shape == (2, 2, 2, 32, 32)
    want = stream_outputs(d, a)["probabilities"][[0, 2]]           # the classes asked for, in the model's order
    np.testing.assert_array_equal(batched[0], want)
    (line,) = odt.apply(address, [np.ascontiguousarray(a[:, 0])])  # a 2D line [nattribs, traces, z]
    np.testing.assert_array_equal(line, stream_outputs(d, a[:, :1])["probabilities"][[0, 2], 0])


def test_kill_ends_the_session_not_the_daemon(prepared) -> None:
    d, made, address = prepared
    odt.request_json(address, {"action": "parameters", "model": "unet1"})
    assert len(d.client.call("stream.list")["sessions"]) == 1
    reply, _ = odt.request_json(address, {"action": "kill"})
    assert reply["result"] == "Kill request received"
    assert d.client.call("stream.list")["sessions"] == []
    err = odt.apply(address, blocks_of(made, 1))
    assert "no model is loaded: send a parameters request first" in err["result"]
    status, _ = odt.request_json(address, {"action": "status"})
    assert status["result"] == "Server online" and status["model"] is None


def test_bad_requests_get_error_replies_and_the_session_stays(prepared) -> None:
    d, made, address = prepared
    reply, header = odt.request_json(address, {"action": "parameters", "model": "nope"})
    assert reply["error"]["code"] == "not_found" and "no model 'nope'" in reply["result"], reply
    assert "nope" in header["debug-message"]
    reply, _ = odt.request_json(address, {"action": "parameters", "model": "unet1", "apply_dir": "Minimum"})
    assert "apply_dir 'Minimum' is not supported" in reply["result"]
    reply, _ = odt.request_json(address, {"action": "dance"})
    assert reply["result"].startswith('Error: invalid action "dance"')
    odt.request_json(address, {"action": "parameters", "model": "unet1"})
    block = blocks_of(made, 1)[0]
    err = odt.apply(address, [np.concatenate([block, block])])     # two attributes for a one-volume model
    assert err["result"].startswith("Apply error exception") and "does not fit this model" in err["result"]
    (pred,) = odt.apply(address, [block])                          # the session is still there
    assert pred.shape == (1, 2, 32, 32)
    # a payload length that cannot be: an error reply carrying the request's id, and the endpoint goes on
    with odt.connect(address) as s:
        s.sendall(struct.pack("=iih", -5, 42, 3))
        length, rid, sub = struct.unpack("=iih", odt._recv(s, 10))
        assert (rid, sub) == (42, 3) and b"payload length -5" in odt._recv(s, length)
    with odt.connect(address) as s:   # a client that connects and goes away
        pass
    assert odt.request_json(address, {"action": "status"})[0]["result"] == "Server online"


def test_a_session_lost_with_its_executor_is_opened_again(prepared) -> None:
    d, made, address = prepared
    odt.request_json(address, {"action": "parameters", "model": "unet1"})
    block = blocks_of(made, 1)[0]
    (before,) = odt.apply(address, [block])
    (pid,) = d.executor_pids()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        devs = d.client.devices()
        if devs[0]["executor_pid"] not in (None, pid) and devs[0]["state"] in ("ready", "busy"):
            break
        time.sleep(0.2)
    (after,) = odt.apply(address, [block])
    np.testing.assert_array_equal(after, before)
    assert [s["model"] for s in d.client.call("stream.list")["sessions"]] == ["unet1"]


# a client as another user: it connects and sends a status request; what it gets back is printed
OTHER_USER = """
import socket, struct, sys, json
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
text = json.dumps({"action": "status"}).encode()
body = struct.pack("=i", len(text)) + text
head = json.dumps({"byteorder": sys.byteorder, "content-type": "text/json", "content-encoding": "utf-8",
                   "content-length": len(body)}).encode()
payload = struct.pack("=i", len(head)) + head + body
s.sendall(struct.pack("=iih", len(payload), 1, 0) + payload)
try:
    got = s.recv(100)
except ConnectionResetError:   # closed with the request unread
    got = b""
print(repr(got))
"""


def test_tcp_listens_on_loopback_and_knows_its_peers_user(tmp_path: Path) -> None:
    with RunningDaemon(tmp_path / "home", env={**ON, "SEISD_OPENDTECT__TCP_PORT": "0"}) as d:
        address = d.client.status()["endpoints"]["opendtect"]
        assert address.startswith("tcp://127.0.0.1:")
        status, _ = odt.request_json(address, {"action": "status"})
        assert status["result"] == "Server online"
        reply, _ = odt.request_json(address, {"action": "parameters"})
        assert "no model named" in reply["result"]
        python = Path("/usr/bin/python3")   # one that another user may run (a virtual environment may be private)
        if os.getuid() == 0 and python.is_file():   # root can be another user: whose request is closed unanswered
            other = subprocess.run([str(python), "-c", OTHER_USER, address[len("tcp://"):]], user=65534,
                                   group=65534, capture_output=True, text=True, timeout=30)
            assert other.stdout.strip() == "b''", (other.stdout, other.stderr)
            assert "peer runs as uid 65534, not as the daemon's user 0" in d.out_path.read_text()
        # the port is taken now: a second daemon asked for it refuses to start, naming the setting
        port = address.rsplit(":", 1)[1]
        with pytest.raises(DaemonDidNotStart, match=r"cannot listen for OpendTect on \('127.0.0.1', " + port):
            with RunningDaemon(tmp_path / "home2", env={**ON, "SEISD_OPENDTECT__TCP_PORT": port}):
                pass
    # the owner lookup in /proc/net/tcp, on a real loopback connection of this process
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()):
            conn, peer = server.accept()
            with conn:
                assert loopback_peer_uid(peer, conn.getsockname()) == os.getuid()
                assert loopback_peer_uid(("127.0.0.1", 1), conn.getsockname()) is None


def _wait_listening(path_or_port: str | int, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until the relay accepts connections, as the plugin waits for its apply server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            family = socket.AF_UNIX if isinstance(path_or_port, str) else socket.AF_INET
            with socket.socket(family) as s:
                s.connect(path_or_port if isinstance(path_or_port, str) else ("127.0.0.1", path_or_port))
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the relay did not listen")


@pytest.mark.parametrize("local", [False, True], ids=["tcp", "local"])
def test_the_relay_stands_where_the_plugin_starts_its_apply_server(prepared, tmp_path: Path, local: bool) -> None:
    """tools/opendtect_apply_server.py started as the plugin starts dgbpy's script (model file, address, port,
    parent pid): the plugin's requests name no model; the outputs are seisd's, and kill ends the relay."""
    d, made, address = prepared
    if local:
        where: str | int = str(tmp_path / "odt.sock")
        args = ["--address", "LOCAL", "--port", where, "--local"]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            where = s.getsockname()[1]
        args = ["--address", "localhost", "--port", str(where)]
    env = {**os.environ, "SEISD_OPENDTECT_ENDPOINT": address}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "opendtect_apply_server.py"),
                             str(d.home / "models" / "unet1.h5"), *args, "--ppid", str(os.getpid())], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_listening(where, proc)
        relay = f"unix://{where}" if local else f"tcp://127.0.0.1:{where}"
        assert odt.request_json(relay, {"action": "status"})[0]["result"] == "Server online"
        reply, _ = odt.request_json(relay, {"action": "outputs", "value": {"names": ["Facies"], "survey": "F3"}})
        assert reply["model"] == "unet1", reply
        block = blocks_of(made, 1)[0]
        (pred,) = odt.apply(relay, [block])
        np.testing.assert_array_equal(pred[0], stream_outputs(d, block)["labels"])
        assert odt.request_json(relay, {"action": "kill"})[0]["result"] == "Kill request received"
        assert proc.wait(timeout=10) == 0
        assert d.client.call("stream.list")["sessions"] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
