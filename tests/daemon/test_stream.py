"""Streaming apply through a real daemon: same numbers as the whole-volume job, bad blocks, several sessions, the
Python client's Stream both ways (the executor's direct endpoint and the relay through the daemon) and what it says
when the executor holding its session dies.

Also the block checks of StreamSession in-process, and tools/host_client.py run as a host application would.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zmq

from client import Stream
from client.api import SeisdError
from client.protocol import runtime_dir
from daemon.executor.predict.stream import StreamInputError, StreamSession
from tests.daemon.predict_data import home_with_unet, predict_job, run_job, save_model
from tests.harness import RunningDaemon

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    home = (tmp_path_factory.mktemp("stream") / "home").resolve()
    home.mkdir(parents=True)
    made = home_with_unet(home)
    with RunningDaemon(home) as d:
        yield d, made


def open_session(client, **args: Any) -> tuple[str, dict[str, Any]]:
    """stream.open; the session id from the result, or (until the daemon adds it there) the new one in stream.list."""
    before = {s["session"] for s in client.call("stream.list")["sessions"]}
    result = client.call("stream.open", **args)
    sid = result.get("session")
    if sid is None:
        new = [s["session"] for s in client.call("stream.list")["sessions"] if s["session"] not in before]
        assert len(new) == 1, new
        sid = new[0]
    return sid, result


def apply(client, sid: str, block: np.ndarray) -> dict[str, np.ndarray]:
    result, arrays = client.call_arrays("stream.apply", [block], session=sid)
    return dict(zip(result["outputs"], arrays))


def test_streaming_inline_by_inline_gives_the_whole_volume_numbers(prepared) -> None:
    d, made = prepared
    job = run_job(d, predict_job("unet1", "synth", "whole", outputs=["labels", "probabilities", "confidence"],
                                 format="hdf5", figures={"enabled": False}))["result"]
    with h5py.File(job["paths"]["hdf5"]) as h5:
        labels, probs, conf = h5["labels"][()], h5["probabilities"][()], h5["confidence"][()]
    sid, desc = open_session(d.client, model="unet1", outputs=["labels", "probabilities", "confidence"])
    assert desc["classes"] == job["classes"] and desc["input"]["channels"] == 1
    assert desc["input"]["volumes"] == ["seismic"] and desc["outputs"] == ["labels", "probabilities", "confidence"]
    assert desc["precision"] == job["recipe"]["precision"]  # both 'auto', resolved alike on one machine
    seismic = made["survey"].volume("seismic")
    for i in range(seismic.shape[0]):
        out = apply(d.client, sid, np.ascontiguousarray(seismic[i:i + 1]))
        assert out["labels"].dtype == np.uint8 and out["probabilities"].shape == (len(desc["classes"]), 1, 32, 32)
        np.testing.assert_allclose(out["probabilities"][:, 0], probs[:, i], atol=1e-5)
        np.testing.assert_allclose(out["confidence"][0], conf[i], atol=1e-5)
        clear = conf[i] > 1e-4  # where the top two classes are not tied, labels must agree exactly
        assert np.array_equal(out["labels"][0][clear], labels[i][clear])
    assert d.client.call("stream.close", session=sid)["closed"] == sid


def test_bad_blocks_get_errors_and_the_session_stays_usable(prepared) -> None:
    d, made = prepared
    sid, _ = open_session(d.client, model="unet1", outputs=["labels"])
    block = np.ascontiguousarray(made["survey"].volume("seismic")[:2])
    good = apply(d.client, sid, block)["labels"]
    bad = [(block[0], "does not fit this model"), (block[None].repeat(2, 0), "does not fit"),
           (np.where(np.arange(block.size).reshape(block.shape) == 5, np.nan, block).astype(np.float32), "NaN")]
    for wrong, words in bad:
        with pytest.raises(SeisdError) as err:
            apply(d.client, sid, wrong)
        assert err.value.code == "bad_args" and words in err.value.message, err.value.message
    # a dtype the protocol does not know (float16), sent as raw frames: refused, and the session goes on
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{runtime_dir(d.home)}/control.sock")
    half = block.astype(np.float16)
    header = {"v": 1, "id": uuid.uuid4().hex, "op": "stream.apply", "args": {"session": sid},
              "arrays": [{"dtype": "float16", "shape": list(half.shape)}]}
    sock.send_multipart([json.dumps(header).encode(), half.tobytes()])
    assert sock.poll(10_000)
    reply = json.loads(sock.recv_multipart()[0])
    sock.close()
    assert not reply["ok"] and reply["error"]["code"] in ("bad_message", "bad_args")
    # integers are numbers too (converted to float32); then the first block again gives the first answer
    assert apply(d.client, sid, (block * 1000).astype(np.int16))["labels"].shape == block.shape
    assert np.array_equal(apply(d.client, sid, block)["labels"], good)
    d.client.call("stream.close", session=sid)


def test_several_sessions_at_once_and_closing(prepared) -> None:
    d, made = prepared
    a, _ = open_session(d.client, model="unet1", outputs=["labels"])
    b, desc_b = open_session(d.client, model="unet1", outputs=["confidence", "labels"], batch_size=2)
    assert desc_b["outputs"] == ["labels", "confidence"] and desc_b["batch_size"] == 2
    listed = {s["session"] for s in d.client.call("stream.list")["sessions"]}
    assert {a, b} <= listed
    block = np.ascontiguousarray(made["survey"].volume("seismic")[5:8])
    out_a, out_b = apply(d.client, a, block), apply(d.client, b, block)
    assert list(out_a) == ["labels"] and list(out_b) == ["labels", "confidence"]
    assert np.array_equal(out_a["labels"], out_b["labels"])
    d.client.call("stream.close", session=a)
    with pytest.raises(SeisdError) as err:
        apply(d.client, a, block)
    assert err.value.code == "not_found"
    assert np.array_equal(apply(d.client, b, block)["labels"], out_a["labels"])
    d.client.call("stream.close", session=b)
    with pytest.raises(SeisdError) as err:
        d.client.call("stream.open", model="nomodel")
    assert err.value.code in ("not_found", "bad_args")


def test_host_client_streams_a_survey_cache(prepared) -> None:
    """The reference host, both ways: blocks to the executor's direct endpoint (a local daemon offers it) and,
    with --relay, through the daemon; the same class counts."""
    d, made = prepared
    cache = made["survey"].folder / "seismic.f32"
    reports = []
    for extra in ([], ["--relay"]):
        run = subprocess.run([sys.executable, str(ROOT / "tools" / "host_client.py"), "--home", str(d.home),
                              "--model", "unet1", "--cache", str(cache), "--shape", "32,32,32", "--json", *extra],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        reports.append(json.loads(run.stdout.strip().splitlines()[-1]))
    direct, relayed = reports
    assert direct["path"] == "direct" and relayed["path"] == "relay"
    for report in reports:
        assert report["blocks"] == 32 and report["blocks_per_s"] > 0 and report["classes"]
        assert report["open_sessions_after"] == 0
    assert direct["class_counts"] == relayed["class_counts"] and sum(direct["class_counts"]) == 32 ** 3


def test_block_checks_name_what_was_expected(tmp_path: Path) -> None:
    home = tmp_path / "home"
    save_model(home, "m")
    session = StreamSession.open(home, {"model": "m", "outputs": ["labels", "confidence"]})
    assert session.describe()["input"]["block"] == ["inline", "crossline", "sample"]
    ok = np.random.default_rng(0).normal(size=(2, 8, 16)).astype(np.float32)
    out = session.apply([ok])
    assert out["labels"].shape == (2, 8, 16) and out["confidence"].dtype == np.float32
    assert np.array_equal(session.apply([(ok * 100).astype(np.int16)])["labels"].shape, (2, 8, 16))
    for frames, words in [([ok[0]], "[n_inlines, n_crosslines, n_samples]"), ([ok, ok], "2 frames"),
                          ([ok.astype(np.complex64)], "not numeric"), ([ok[:, :0]], "empty")]:
        with pytest.raises(StreamInputError, match=None) as err:
            session.apply(frames)
        assert words in str(err.value)
    with pytest.raises(StreamInputError, match="outputs"):
        StreamSession.open(home, {"model": "m", "outputs": ["edges"]})
    with pytest.raises(StreamInputError, match="options"):
        StreamSession.open(home, {"model": "m", "options": {"tiles": 3}})


def test_python_stream_direct_and_relayed_agree_and_a_dead_executor_is_named(tmp_path: Path) -> None:
    home = (tmp_path / "home").resolve()
    home.mkdir()
    home_with_unet(home)
    block = np.random.default_rng(9).normal(size=(2, 16, 24)).astype(np.float32)
    with RunningDaemon(home) as d:
        direct = Stream.open(d.client, "unet1", outputs=["labels", "confidence"])
        relayed = Stream.open(d.client, "unet1", outputs=["labels", "confidence"], direct=False)
        assert direct.endpoint and direct.endpoint.startswith("ipc://") and relayed.endpoint is None
        assert Path(direct.endpoint[len("ipc://"):]).parent == runtime_dir(home)  # the daemon's private folder
        a, b = direct.apply(block), relayed.apply(block)
        assert list(a) == ["labels", "confidence"] and all(np.array_equal(a[k], b[k]) for k in a)
        with pytest.raises(SeisdError) as bad:
            direct.apply(block[0])  # 2D: not a block of this model
        assert bad.value.code == "bad_args" and "does not fit" in bad.value.message
        assert np.array_equal(direct.apply(block)["labels"], a["labels"])  # the session survived it
        pid = d.client.devices()[0]["executor_pid"]
        os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(SeisdError) as lost:
            direct.apply(block)
        assert lost.value.code == "not_found" and "went away" in lost.value.message
        assert time.monotonic() - start < 10  # told at once, not at the 310 s timeout
        with pytest.raises(SeisdError) as lost_relayed:
            relayed.apply(block)
        assert lost_relayed.value.code == "not_found"
        deadline = time.monotonic() + 60  # the restarted executor opens sessions and serves them directly again
        while d.client.devices()[0]["state"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.2)
        with Stream.open(d.client, "unet1", outputs=["labels", "confidence"]) as again:
            assert again.endpoint == direct.endpoint
            assert np.array_equal(again.apply(block)["labels"], a["labels"])
