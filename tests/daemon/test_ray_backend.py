"""The Ray backend through a real seisd that starts a real local Ray instance (loopback, 2 CPUs).

One Ray daemon and one local daemon serve the whole module (Ray takes seconds to start). Executors connect back
over tcp with CURVE on loopback, as they would from other nodes. Train and predict run on both backends and must
agree (states, logs, events, model weights, predictions); cancel, a killed Ray worker (retried from the checkpoint,
then failed), a script job on Ray, data-parallel ranks and predict shards as Ray tasks, every Ray socket on
loopback, and a stop that leaves no Ray process behind.
"""
from __future__ import annotations

import ipaddress
import os
import re
import socket
import signal
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import psutil
import pytest

pytest.importorskip("ray")

from tests.daemon.predict_data import SLOW_JOB, home_with_unet, predict_job, save_slow_model  # noqa: E402
from tests.daemon.test_distributed import job as ddp_job, losses  # noqa: E402
from tests.daemon.test_train_job import import_demo, train_job  # noqa: E402
from tests.harness import (RunningDaemon, command_line, inet_sockets, pid_alive, steps_job, wait_for,  # noqa: E402
                           wait_state)

RAY_ENV = {"SEISD_BACKEND": "ray", "SEISD_RAY__ADDRESS": "local", "SEISD_RAY__LOCAL_NUM_CPUS": "2",
           "SEISD_RAY__SLOTS": "2", "SEISD_RAY__NUM_CPUS_PER_JOB": "1", "SEISD_RAY__MAX_RETRIES": "1",
           "SEISD_RAY__EXECUTOR_ENDPOINT": "tcp://127.0.0.1:*"}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


@pytest.fixture(scope="module")
def ray_daemon(tmp_path_factory: pytest.TempPathFactory, synth_dir: Path) -> Iterator[RunningDaemon]:
    with RunningDaemon(tmp_path_factory.mktemp("ray") / "home", env=RAY_ENV, start_timeout=90) as d:
        import_demo(d.client, synth_dir)  # the imports run on Ray too (CPU-only kind)
        yield d


@pytest.fixture(scope="module")
def local_daemon(tmp_path_factory: pytest.TempPathFactory, ray_daemon: RunningDaemon,
                 synth_dir: Path) -> Iterator[RunningDaemon]:
    # Ray runs a 1-CPU task with OMP_NUM_THREADS=1: the local executor uses one thread too, so sums add alike
    with RunningDaemon(tmp_path_factory.mktemp("local") / "home", env={"OMP_NUM_THREADS": "1"}) as d:
        import_demo(d.client, tmp_path_factory.mktemp("synth-local"))
        yield d


def run_ok(d: RunningDaemon, job: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    jid = d.client.submit(job)["id"]
    rec = wait_state(d.client, jid, timeout=timeout)
    assert rec["state"] == "succeeded", (rec, d.client.logs(jid)["text"])
    return rec


def log_shape(text: str) -> list[str]:
    """The job's log lines without times, figures, pids and slot names: what both backends must say alike."""
    lines = [re.sub(r" \(Ray node [^)]*\)", "", re.sub(r"^[\d\-: ,]+", "", ln)) for ln in text.splitlines()]
    return [re.sub(r"(ray:\d+(#\d+)?|cpu)\b", "SLOT", re.sub(r"[\d.e+-]+", "N", ln)) for ln in lines]


def weights(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_train_and_predict_on_ray_match_the_local_backend(ray_daemon: RunningDaemon,
                                                          local_daemon: RunningDaemon) -> None:
    job = train_job("m", epochs=1, batches=6)
    recs = {name: run_ok(d, job) for name, d in (("ray", ray_daemon), ("local", local_daemon))}
    assert recs["ray"]["slot"].startswith("ray:") and recs["local"]["slot"] == "cpu"
    states = {n: [h["state"] for h in r["history"]] for n, r in recs.items()}
    assert states["ray"] == states["local"] == ["queued", "running", "succeeded"]
    assert recs["ray"]["result"]["step"] == recs["local"]["result"]["step"] == 6

    def slot(d: RunningDaemon, name: str) -> dict:
        return next(s for s in d.client.status()["devices"] if s["slot"] == name.split("#")[0])

    # a Ray slot's executor lives for one job: once it is gone its slot names no pid and no threads (the next job's
    # executor says its own); the local executor stays, with the threads it said at its hello
    def ray_slot_free() -> dict | None:
        s = slot(ray_daemon, recs["ray"]["slot"])
        return s if s["executor_pid"] is None else None

    ended = wait_for(ray_slot_free, timeout=30, interval=0.2, what="the Ray job's executor to end")
    assert ended["threads"] is None, ended
    assert isinstance(slot(local_daemon, "cpu")["threads"], int), slot(local_daemon, "cpu")
    events = {n: d.client.job_events(recs[n]["id"]) for n, d in (("ray", ray_daemon), ("local", local_daemon))}
    assert {e["type"] for e in events["ray"]} == {e["type"] for e in events["local"]}
    # per-step figures alike (worker statistics come at times of their own, so they are not counted)
    steps = {n: [e["data"]["step"] for e in ev if e["type"] == "job.metrics" and e["data"].get("step")]
             for n, ev in events.items()}
    assert steps["ray"] == steps["local"] and steps["ray"]
    logs = {n: log_shape(d.client.logs(recs[n]["id"])["text"]) for n, d in (("ray", ray_daemon),
                                                                              ("local", local_daemon))}
    assert logs["ray"][0] == logs["local"][0] and logs["ray"][-1] == logs["local"][-1]
    assert len(logs["ray"]) == len(logs["local"])
    wr, wl = weights(ray_daemon.home / "models" / "m.h5"), weights(local_daemon.home / "models" / "m.h5")
    assert wr.keys() == wl.keys() and wr
    for name in wr:  # thread counts differ (Ray gives the task 1 CPU): sums may round differently
        if wr[name].dtype.kind == "f":
            np.testing.assert_allclose(wr[name], wl[name], rtol=1e-3, atol=1e-4, err_msg=name)

    pjob = {"kind": "predict", "model": "m", "survey": "demo", "output": "p", "outputs": ["labels", "probabilities"],
            "format": "hdf5", "figures": {"enabled": False}}
    preds = {n: Path(run_ok(d, pjob)["result"]["output"]) for n, d in (("ray", ray_daemon), ("local", local_daemon))}
    with h5py.File(preds["ray"] / "prediction.h5") as a, h5py.File(preds["local"] / "prediction.h5") as b:
        np.testing.assert_allclose(a["probabilities"][()], b["probabilities"][()], atol=1e-3)
        assert np.mean(a["labels"][()] == b["labels"][()]) > 0.999


def test_devices_and_job_files_on_ray(ray_daemon: RunningDaemon) -> None:
    from client.api import SeisdError

    devices = ray_daemon.client.devices()
    assert [d["slot"] for d in devices] == ["ray:0", "ray:1"] and {d["kind"] for d in devices} == {"ray"}
    with pytest.raises(SeisdError, match="device: 'cuda:0' is not available"):
        ray_daemon.client.submit(steps_job(device="cuda:0"))  # no GPUs are given to jobs here
    assert run_ok(ray_daemon, steps_job(steps=2, device="cpu"))["slot"].startswith("ray:")


def _ray_worker_of(d: RunningDaemon, job_id: int) -> tuple[int, int]:
    """(executor pid, pid of the Ray worker that started it) of a running job."""
    slot = wait_for(lambda: next((s for s in d.client.devices() if s["job"] == job_id and s["executor_pid"]
                                  and s["state"] == "busy"), None), what=f"job {job_id}'s executor")
    return slot["executor_pid"], psutil.Process(slot["executor_pid"]).ppid()


def test_cancel_stops_the_job_on_ray(ray_daemon: RunningDaemon) -> None:
    c = ray_daemon.client
    jid = c.submit(steps_job(steps=3000, step_s=0.01))["id"]
    wait_for(lambda: c.show(jid)["progress"] > 0, timeout=180, what="the job to start")
    executor, _ = _ray_worker_of(ray_daemon, jid)
    assert c.cancel(jid)["state"] == "cancelling"
    rec = wait_state(c, jid, timeout=30)
    assert rec["state"] == "cancelled" and rec["progress"] < 1.0
    wait_for(lambda: not pid_alive(executor), timeout=10, what="the executor to exit")
    # a job that ignores its cancel: its Ray task is cancelled with force after the grace
    jid = c.submit(steps_job(steps=3000, step_s=0.01, ignore_cancel=True))["id"]
    wait_for(lambda: c.show(jid)["progress"] > 0, timeout=180, what="the job to start")
    executor, worker = _ray_worker_of(ray_daemon, jid)
    c.cancel(jid)
    rec = wait_state(c, jid, timeout=30)
    assert rec["state"] == "cancelled" and "did not stop within 1 s" in rec["history"][-1]["reason"]
    wait_for(lambda: not pid_alive(executor) and not pid_alive(worker), timeout=15, what="executor and worker to end")
    wait_for(lambda: all(d["state"] == "ready" for d in c.devices()), timeout=15, what="the slots to be free")


def test_killed_ray_worker_retries_from_checkpoint_then_fails(ray_daemon: RunningDaemon) -> None:
    c = ray_daemon.client
    jid = c.submit(steps_job(steps=2000, step_s=0.02))["id"]
    wait_for(lambda: c.show(jid)["progress"] >= 0.01, timeout=180, what="the job to checkpoint")
    executor, worker = _ray_worker_of(ray_daemon, jid)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not pid_alive(executor), timeout=10, what="the executor to die with its Ray worker")
    # retried (ray.max_retries: 1): requeued, running again, resuming from the checkpoint
    wait_for(lambda: c.show(jid)["attempts"] == 2 and c.show(jid)["state"] == "running", timeout=180,
             what="the job to be retried")
    history = c.show(jid)["history"]
    lost = next(h for h in history if h["state"] == "interrupted")
    assert lost["cause"] == "executor_died" and "Ray worker or node was lost" in lost["reason"], lost
    assert [h["state"] for h in history] == ["queued", "running", "interrupted", "queued", "running"]
    assert "executor was lost" in history[3]["reason"]
    executor2, worker2 = _ray_worker_of(ray_daemon, jid)
    assert "resuming" in history[-1]["reason"]
    os.kill(worker2, signal.SIGKILL)
    rec = wait_state(c, jid, timeout=180)
    assert rec["state"] == "failed" and "died while running the job" in rec["error"]
    assert "Ray worker or node was lost" in rec["error"]
    assert "not retried" in c.logs(jid)["text"]
    assert run_ok(ray_daemon, steps_job(steps=2))["state"] == "succeeded"  # the slots still work


def test_script_job_runs_on_ray(ray_daemon: RunningDaemon, tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import os\nprint('on ray', os.environ['SEISJOB_DEVICE'])\n"
                      "open(os.path.join(os.environ['SEISJOB_OUTPUTS'], 'done.txt'), 'w').write('yes')\n")
    rec = run_ok(ray_daemon, {"kind": "custom", "script": str(script), "outputs": ["done.txt"]})
    assert rec["slot"].startswith("ray:") and (Path(rec["result"]["outputs"]) / "done.txt").read_text() == "yes"
    assert "on ray cpu" in ray_daemon.client.logs(rec["id"])["text"]


def test_data_parallel_training_on_ray_runs_its_ranks_as_ray_tasks(ray_daemon: RunningDaemon) -> None:
    c = ray_daemon.client
    single = c.show(run_ok(ray_daemon, ddp_job("ray-single", 1), timeout=180)["id"])
    double = c.show(run_ok(ray_daemon, ddp_job("ray-double", 2), timeout=180)["id"])
    a, b = losses(single), losses(double)
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)  # the tolerance of test_distributed.py
    assert double["result"]["samples"] == single["result"]["samples"] == 12 * 16
    rank1 = (Path(double["dir"]) / "rank1.log").read_text()
    assert "rank 1 on Ray node 127.0.0.1" in rank1 and "rank 1 done" in rank1, rank1
    assert not list((Path(double["dir"]) / "rendezvous").iterdir())


def _ray_tasks_named(d: RunningDaemon, name: str) -> list[psutil.Process]:
    """Ray workers under the daemon running a task called `name` now (Ray titles the worker after the task)."""
    return [p for p in psutil.Process(d.pid).children(recursive=True) if name in command_line(p)]


def test_a_killed_ray_rank_fails_the_job_naming_it(ray_daemon: RunningDaemon) -> None:
    c = ray_daemon.client
    jid = c.submit(ddp_job("ray-lost", 2, epochs=50, batches=100))["id"]
    wait_for(lambda: any(e["data"].get("step", 0) >= 2 for e in c.job_events(jid) if e["type"] == "job.progress"),
             timeout=90, what="training steps")
    rank = wait_for(lambda: _ray_tasks_named(ray_daemon, "seisd-rank-1"), timeout=10, interval=0.5,
                    what="rank 1's worker")
    rank[0].kill()
    rec = wait_state(c, jid, timeout=120)
    assert rec["state"] == "failed" and "lost a rank" in rec["error"] and "rank 1" in rec["error"], rec["error"]
    assert not ray_daemon.home.joinpath("models", "ray-lost.h5").exists()
    wait_for(lambda: not _ray_tasks_named(ray_daemon, "seisd-rank-"), timeout=30, interval=0.5,
             what="no rank task left")


SHARD_PASS_S = 2.0   # the slow model's sleep in each forward pass (one pass an inline here)
SHARD_OUTPUTS = dict(outputs=["labels", "probabilities", "confidence"], format="hdf5", chunk_inlines=4,
                     figures={"enabled": False})


def _shard_workers(d: RunningDaemon) -> list[psutil.Process]:
    return _ray_tasks_named(d, "seisd-shard")


@pytest.fixture(scope="module")
def shard_models(ray_daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> RunningDaemon:
    """Survey synth (32 inlines, chunks of 4), model unet1 and the slow user model `slow` in the Ray daemon's home."""
    home_with_unet(ray_daemon.home)
    # 16 passes a shard at SHARD_PASS_S: both shards run at once even when Ray has to start a fresh worker for the
    # second on a loaded machine (at the default 0.05 s a pass the first shard could end first)
    save_slow_model(ray_daemon.home, tmp_path_factory.mktemp("slow"), delay_s=SHARD_PASS_S)
    return ray_daemon


def test_sharded_predict_on_ray_matches_the_unsharded_job(shard_models: RunningDaemon) -> None:
    ray_daemon = shard_models
    c = ray_daemon.client
    one = run_ok(ray_daemon, predict_job("unet1", "synth", "whole", **SHARD_OUTPUTS))
    two = run_ok(ray_daemon, predict_job("unet1", "synth", "halves", shards=2, **SHARD_OUTPUTS))
    assert one["result"]["shards"] is None and [s["inlines"] for s in two["result"]["shards"]] == [[0, 15], [16, 31]]
    assert "sharded over 2 Ray tasks" in c.logs(two["id"])["text"]
    messages = [e["data"].get("message") or "" for e in c.job_events(two["id"]) if e["type"] == "job.progress"]
    assert any("shards on Ray" in m for m in messages), messages
    with h5py.File(one["result"]["paths"]["hdf5"]) as a, h5py.File(two["result"]["paths"]["hdf5"]) as b:
        for name in ("labels", "probabilities", "confidence"):
            assert np.array_equal(a[name][()], b[name][()]), name  # exactly: same kernels, one thread each
        assert np.ptp(a["confidence"][()]) > 0.01  # a prediction worth comparing


def _slow_shards_running(ray_daemon: RunningDaemon, name: str) -> tuple[int, list[psutil.Process]]:
    """Submit the slow model's predict job in 2 shards; (job id, the two shard workers) once both run."""
    jid = ray_daemon.client.submit(predict_job("slow", "synth", name, shards=2, **SLOW_JOB))["id"]
    def both_running() -> list[psutil.Process] | None:
        found = _shard_workers(ray_daemon)
        if len(found) == 2:
            return found
        rec = ray_daemon.client.show(jid)
        assert rec["state"] in ("queued", "running"), \
            (f"job {jid} {rec['state']} before its two shards were seen running together", rec.get("error"),
             ray_daemon.client.logs(jid)["text"][-2000:])
        return None

    # Ray starts tasks slowly on a loaded machine; each look walks the process table, so not too often
    workers = wait_for(both_running, timeout=180, interval=0.5, what="two shard tasks running")
    return jid, workers


def test_cancel_stops_the_shards_on_ray(shard_models: RunningDaemon) -> None:
    ray_daemon = shard_models
    c = ray_daemon.client
    jid, workers = _slow_shards_running(ray_daemon, "cancelled")
    wait_for(lambda: c.show(jid)["progress"] > 0, timeout=180, what="progress from the shards")
    c.cancel(jid)
    rec = wait_state(c, jid, timeout=180)
    assert rec["state"] == "cancelled", rec
    # the shard tasks end (their workers go back to Ray's pool or exit): none runs a shard any more
    wait_for(lambda: not _shard_workers(ray_daemon), timeout=30, interval=0.5, what="the shard tasks to end")
    assert all("seisd-shard" not in command_line(p) for p in workers)


def test_a_killed_shard_worker_fails_the_job_naming_the_shard(shard_models: RunningDaemon) -> None:
    ray_daemon = shard_models
    c = ray_daemon.client
    jid, workers = _slow_shards_running(ray_daemon, "lost-shard")
    workers[-1].kill()
    rec = wait_state(c, jid, timeout=180)
    assert rec["state"] == "failed", rec
    assert re.search(r"shard \d \(inlines \d+-\d+\) failed: its Ray task failed", rec["error"]), rec["error"]
    wait_for(lambda: not _shard_workers(ray_daemon), timeout=30, interval=0.5, what="the other shard task to end")


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1, an IPv6 socket bound to IPv4 loopback
    return addr.is_loopback or bool(mapped and mapped.is_loopback)


def _open_to_the_network(proc: psutil.Process) -> list[str]:
    """The inet sockets of `proc` that wait for peers (tcp LISTEN, unconnected udp) on a non-loopback address."""
    found = []
    for conn in inet_sockets(proc):  # unix sockets are not inet: reachable from this machine only
        waiting = conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr)
        if waiting and conn.laddr and not _loopback(conn.laddr.ip):
            found.append(f"{proc.pid} {command_line(proc)[:80]} {conn.laddr.ip}:{conn.laddr.port}")
    return found


def test_local_ray_listens_on_loopback_only(ray_daemon: RunningDaemon) -> None:
    run_ok(ray_daemon, steps_job(steps=2))  # Ray workers exist (they listen too)
    daemon = psutil.Process(ray_daemon.pid)
    procs = [daemon, *daemon.children(recursive=True)]
    names = " ".join(command_line(p) for p in procs)
    for part in ("gcs_server", "raylet", "ray::"):  # the head, the node manager, workers and agents are covered
        assert part in names, f"no Ray process with {part!r} under the daemon"
    listening = [p for p in procs if any(c.status == psutil.CONN_LISTEN for c in inet_sockets(p))]
    assert len(listening) >= 3, "Ray's servers were not found listening"
    exposed = [line for p in procs for line in _open_to_the_network(p)]
    assert exposed == [], f"sockets open beyond loopback: {exposed}"


def test_stop_leaves_no_ray_process_behind(ray_daemon: RunningDaemon) -> None:
    ray_pids = [p for p in ray_daemon.snapshot()]
    assert any("raylet" in command_line(psutil.Process(p)) for p in ray_pids if pid_alive(p))
    assert ray_daemon.stop() == 0
    wait_for(lambda: not any(pid_alive(p) for p in ray_pids), timeout=30, what="every Ray process to exit")
