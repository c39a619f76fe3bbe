"""Viewer servers supervised by a real seisd: TensorBoard and the example-set and survey viewer.

One daemon serves the module's lifecycle tests (TensorBoard starts slowly, so it is started once); the tests that
kill or restart the daemon have their own.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from client import protocol as P
from client.api import Client, SeisdError
from tests.daemon.viewer_data import make_event_files, make_example_sets, make_prediction, make_survey
from tests.harness import ROOT, RunningDaemon, pid_alive, wait_for

JOBS = (1, 2)
RUNS = {1: "job1-first_try", 2: "job2-unet-f3"}  # named by the jobs' names (make_event_files) and ids


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def wait_running(client: Client, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll viewer.status until the viewer runs (fails at once when it crashed)."""
    def running() -> dict[str, Any] | None:
        v = client.call("viewer.status", name=name)
        assert v["state"] != "crashed", f"viewer {name} crashed: {v['reason']}"
        return v if v["state"] == "running" else None
    return wait_for(running, timeout, 0.1, f"viewer {name} to run")


@pytest.fixture(scope="module")
def vd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon whose home holds a survey, example sets, a prediction and two jobs' event files."""
    home = tmp_path_factory.mktemp("viewers") / "home"
    survey = make_survey(home)
    make_example_sets(home, survey)
    make_prediction(home)
    make_event_files(home, JOBS)
    with RunningDaemon(home) as d:
        yield d


def test_tensorboard_serves_the_scalars_of_finished_jobs(vd: RunningDaemon) -> None:
    v = vd.client.call("viewer.start", name="tensorboard")
    assert v["state"] == "starting" and v["url"].startswith("http://127.0.0.1:") and v["port"] > 0
    v = wait_running(vd.client, "tensorboard", 90)
    tags = json.loads(get(v["url"] + "data/plugin/scalars/tags")[1])
    assert set(tags) == set(RUNS.values()) and all("train/loss" in t for t in tags.values())
    for j in JOBS:
        rows = json.loads(get(v["url"] + f"data/plugin/scalars/scalars?run={RUNS[j]}&tag=train/loss")[1])
        assert [r[1] for r in rows] == list(range(5))
        assert [r[2] for r in rows] == pytest.approx([1.0 / (s + 1) + j for s in range(5)])
    again = vd.client.call("viewer.start", name="tensorboard")
    assert (again["pid"], again["url"], again["state"]) == (v["pid"], v["url"], "running")


def test_tensorboard_runs_are_named_by_the_jobs_name_and_id(tmp_path: Path) -> None:
    from daemon.viewers.run_tensorboard import refresh_links, runs_folder
    make_event_files(tmp_path, JOBS)
    (tmp_path / "jobs" / "3" / "tensorboard").mkdir(parents=True)  # a job folder without its job.yaml
    (tmp_path / "jobs" / "4" / "tensorboard").mkdir(parents=True)
    (tmp_path / "jobs" / "4" / "job.yaml").write_text("kind: train\noutput: [unreadable\n")
    assert refresh_links(tmp_path, None) == sorted([*RUNS.values(), "job3", "job4"])
    assert (runs_folder(tmp_path) / RUNS[1]).resolve() == (tmp_path / "jobs" / "1" / "tensorboard").resolve()
    assert refresh_links(tmp_path, [2]) == [RUNS[2]] and sorted(os.listdir(runs_folder(tmp_path))) == [RUNS[2]]


def test_examples_viewer_start_restart_stop_and_logs(vd: RunningDaemon) -> None:
    c = vd.client
    v = c.call("viewer.start", name="examples")
    v = wait_running(c, "examples")
    status, page = get(v["url"] + "examples?set=cubes")
    assert status == 200 and b"bokeh" in page.lower()
    assert c.call("viewer.start", name="examples")["pid"] == v["pid"]  # the running one, not a second

    r = c.call("viewer.restart", name="examples")
    assert r["pid"] != v["pid"] and r["url"].startswith("http://127.0.0.1:")
    wait_for(lambda: not pid_alive(v["pid"]), 10, what="the old viewer to exit")
    r = wait_running(c, "examples")
    assert get(r["url"] + "survey?name=tiny")[0] == 200

    s = c.call("viewer.stop", name="examples")
    assert s["state"] == "stopped" and s["pid"] is None and s["reason"] == "stopped on request"
    wait_for(lambda: not pid_alive(r["pid"]), 10, what="the stopped viewer to exit")
    logs = c.call("viewer.logs", name="examples")
    assert logs["state"] == "stopped" and logs["size"] == logs["offset"] > 0
    assert logs["text"].count("starting:") >= 2 and "example-set and survey viewer at" in logs["text"]
    tail = c.call("viewer.logs", name="examples", offset=logs["size"] - 10)
    assert tail["text"] == logs["text"][-10:]
    names = {x["name"]: x for x in c.call("viewer.status")["viewers"]}
    assert names["examples"]["state"] == "stopped" and names["tensorboard"]["state"] in ("running", "stopped")


def test_a_killed_viewer_is_reported_crashed(vd: RunningDaemon) -> None:
    c = vd.client
    c.call("viewer.start", name="examples")
    v = wait_running(c, "examples")
    sub = c.subscribe(P.viewer_topic("examples"))
    try:
        time.sleep(0.3)  # the subscription reaches the daemon before the kill
        os.kill(v["pid"], signal.SIGKILL)
        deadline, crashed = time.monotonic() + 15, None
        while crashed is None and time.monotonic() < deadline:
            if sub.poll(500):
                ev = P.Event.decode(sub.recv_multipart())
                if ev.type == P.EventType.VIEWER_STATE and ev.data["state"] == "crashed":
                    crashed = ev.data
    finally:
        sub.close(0)
    assert crashed is not None, "no viewer.state event with state crashed"
    assert "SIGKILL" in crashed["reason"] and str(v["pid"]) in crashed["reason"]
    s = c.call("viewer.status", name="examples")
    assert s["state"] == "crashed" and "SIGKILL" in s["reason"]
    assert c.call("viewer.start", name="examples")["state"] == "starting"  # a crashed viewer starts again
    c.call("viewer.stop", name="examples")


def test_bad_viewer_names_and_arguments_are_refused(vd: RunningDaemon) -> None:
    with pytest.raises(SeisdError) as e:
        vd.client.call("viewer.start", name="jupyter")
    assert e.value.code == "not_found" and "tensorboard" in str(e.value)
    with pytest.raises(SeisdError) as e:
        vd.client.call("viewer.start", name="tensorboard", args={"jobs": "all"})
    assert e.value.code == "bad_args" and "jobs" in str(e.value)
    with pytest.raises(SeisdError) as e:
        vd.client.call("viewer.restart", name="examples", args={"colour": "red"})
    assert e.value.code == "bad_args" and "colour" in str(e.value)
    with pytest.raises(SeisdError) as e:
        vd.client.call("viewer.logs", name="nope")
    assert e.value.code == "not_found"


def test_viewers_die_with_a_killed_daemon_and_the_next_daemon_says_so(daemon: RunningDaemon) -> None:
    daemon.client.call("viewer.start", name="examples")
    v = wait_running(daemon.client, "examples")
    assert psutil.Process(v["pid"]).ppid() == daemon.pid
    daemon.kill9()
    wait_for(lambda: not pid_alive(v["pid"]), 10, what="the viewer to exit after its daemon was killed")
    daemon.restart()
    s = daemon.client.call("viewer.status", name="examples")
    assert s["state"] == "stopped" and "previous daemon" in s["reason"]


def _viewer_by_hand(home: Path) -> tuple[subprocess.Popen, str]:
    """A viewer process not started by a daemon (--parent-pid 0), and its URL once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(home / "viewers" / "by-hand.log", "ab")
    p = subprocess.Popen([sys.executable, "-m", "daemon.viewers.run_bokeh", "--home", str(home), "--host",
                          "127.0.0.1", "--port", str(port), "--parent-pid", "0"], stdout=log, stderr=log,
                         cwd=str(ROOT), start_new_session=True)
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        try:
            return get(url, 1)[0] == 200
        except OSError:
            return False
    wait_for(answers, 30, 0.1, "the viewer started by hand to answer")
    return p, url


def _record(home: Path, p: subprocess.Popen, url: str) -> None:
    rec = {"name": "examples", "state": "running", "url": url, "pid": p.pid, "port": int(url.rsplit(":", 1)[1][:-1]),
           "started": time.time(), "log": "", "reason": None, "args": {},
           "create_time": psutil.Process(p.pid).create_time()}
    (home / "viewers" / "examples.json").write_text(json.dumps(rec))


def test_a_new_daemon_adopts_a_healthy_viewer_and_kills_a_hung_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "viewers").mkdir(parents=True)
    healthy, url = _viewer_by_hand(home)
    hung, hung_url = _viewer_by_hand(home)
    try:
        _record(home, healthy, url)
        with RunningDaemon(home) as d:
            s = d.client.call("viewer.status", name="examples")
            assert (s["state"], s["pid"], s["url"]) == ("running", healthy.pid, url) and "adopted" in s["reason"]
            assert d.client.call("viewer.stop", name="examples")["state"] == "stopped"
            assert healthy.wait(10) is not None
            d.stop()
        os.kill(hung.pid, signal.SIGSTOP)  # alive, ours, but answers nothing
        _record(home, hung, hung_url)
        with RunningDaemon(home) as d:
            s = d.client.call("viewer.status", name="examples")
            assert s["state"] == "stopped" and "did not answer" in s["reason"] and "killed" in s["reason"]
            assert hung.wait(10) == -signal.SIGKILL
    finally:
        for p in (healthy, hung):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
