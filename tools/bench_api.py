"""Benchmark: request round trips of the control socket, over ipc and over tcp with CURVE.

Starts its own daemon in a temporary home (one CPU slot, tcp + CURVE on 127.0.0.1 with keys it makes), then measures:
- `status` latency (p50, p99, mean), N sequential requests from one client, over ipc and over tcp+CURVE;
- `ping` latency the same way: the baseline round trip (no store read), so status - ping is the handler's cost;
- `status` requests per second from K concurrent clients (separate processes, one Client each) for S seconds.
Prints ONE JSON line, with the target check {"target_status_p99_ipc_ms": 2.0, "met": ...}. The daemon is stopped
and the home removed at the end, also on failure.

    python tools/bench_api.py                 # 10,000 requests per series, 8 clients for 5 s (under a minute)
    python tools/bench_api.py --requests 1000 --clients 4 --seconds 2
    python tools/bench_api.py --long          # 100,000 requests per series, 8 clients for 30 s
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import zmq.auth

from client.api import Client
from client.launch import start_daemon

TARGET_STATUS_P99_IPC_MS = 2.0
WARMUP = 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_keys(home: Path, client_dir: Path) -> tuple[Path, Path]:
    """Server pair in HOME/keys, a client pair in client_dir, the client's public key authorised.
    Returns (server public key, client secret key)."""
    keys = home / "keys"
    (keys / "authorized").mkdir(parents=True, exist_ok=True)
    client_dir.mkdir(parents=True, exist_ok=True)
    server_public, _ = zmq.auth.create_certificates(str(keys), "server")
    client_public, client_secret = zmq.auth.create_certificates(str(client_dir), "bench")
    shutil.copyfile(client_public, keys / "authorized" / Path(client_public).name)
    return Path(server_public), Path(client_secret)


def daemon_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEISD_")}
    env.update({"SEISD_HOME": str(home), "SEISD_DEVICES": "cpu", "SEISD_LOG_LEVEL": "warning",
                "SEISD_TCP__ENDPOINT": f"tcp://127.0.0.1:{_free_port()}"})
    return env


def latency(client: Client, op: str, n: int) -> dict[str, float]:
    """Sequential round trips of `op`; figures in milliseconds."""
    for _ in range(min(WARMUP, n)):
        client.call(op)
    times = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        client.call(op)
        times.append((clock() - t0) / 1e6)
    times.sort()
    return {"p50_ms": round(times[len(times) // 2], 4), "p99_ms": round(times[min(len(times) - 1,
                                                                                  int(len(times) * 0.99))], 4),
            "mean_ms": round(statistics.fmean(times), 4), "n": n}


def _hammer(home: str, start_at: float, seconds: float, out: mp.Queue) -> None:
    """One concurrent client: `status` as fast as it can from `start_at` for `seconds`."""
    c = Client(home=home, timeout=10)
    c.ping()  # connect before the clock starts
    while time.time() < start_at:
        time.sleep(0.001)
    n, end = 0, start_at + seconds
    while time.time() < end:
        c.call("status")
        n += 1
    out.put((n, time.time()))
    c.close()


def throughput(home: Path, clients: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    start_at = time.time() + 3.0  # time for the spawned interpreters to import and connect
    procs = [ctx.Process(target=_hammer, args=(str(home), start_at, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    total = sum(n for n, _ in results)
    elapsed = max(t for _, t in results) - start_at
    return {"clients": clients, "seconds": round(elapsed, 3), "requests": total,
            "status_rps": round(total / elapsed, 1)}


def stop(home: Path, pid: int) -> None:
    """Shut the daemon down; kill it and its executors if it does not go."""
    try:
        proc = psutil.Process(pid)
        family = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    try:
        Client(home=home, timeout=5).shutdown()
    except Exception:  # noqa: BLE001 - whatever went wrong, the kill below cleans up
        pass
    _, alive = psutil.wait_procs(family, timeout=20)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)


def run(requests: int, clients: int, seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    home = tmp / "home"
    home.mkdir()
    server_key, client_key = make_keys(home, tmp / "client")
    info = start_daemon(home, env=daemon_env(home), wait_s=60, exit_with=os.getpid())
    try:
        with Client(home=home, timeout=10) as ipc:
            tcp_endpoint = ipc.status()["endpoints"]["tcp_control"]
            ipc_ping = latency(ipc, "ping", requests)
            ipc_status = latency(ipc, "status", requests)
        with Client(home=home, endpoint=tcp_endpoint, server_key=server_key, client_key=client_key,
                    timeout=10) as tcp:
            tcp_ping = latency(tcp, "ping", requests)
            tcp_status = latency(tcp, "status", requests)
        concurrent = throughput(home, clients, seconds)
    finally:
        stop(home, info["pid"])
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "bench": "api", "requests": requests, "cpu_count": os.cpu_count(),
        "ipc": {"ping": ipc_ping, "status": ipc_status},
        "tcp_curve": {"ping": tcp_ping, "status": tcp_status},
        "concurrent_ipc": concurrent,
        "ratios": {"ipc_status_over_ping_p50": round(ipc_status["p50_ms"] / ipc_ping["p50_ms"], 3),
                   "tcp_curve_over_ipc_status_p50": round(tcp_status["p50_ms"] / ipc_status["p50_ms"], 3),
                   "concurrent_over_sequential_rps": round(
                       concurrent["status_rps"] / (1000.0 / ipc_status["mean_ms"]), 3)},
        "target": {"target_status_p99_ipc_ms": TARGET_STATUS_P99_IPC_MS,
                   "status_p99_ipc_ms": ipc_status["p99_ms"],
                   "met": ipc_status["p99_ms"] <= TARGET_STATUS_P99_IPC_MS},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=None, help="sequential requests per series (default 10000)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client processes (default 8)")
    ap.add_argument("--seconds", type=float, default=None, help="length of the concurrent run (default 5)")
    ap.add_argument("--long", action="store_true", help="100,000 requests per series and a 30 s concurrent run")
    a = ap.parse_args(argv)
    requests = a.requests or (100_000 if a.long else 10_000)
    seconds = a.seconds or (30.0 if a.long else 5.0)
    if requests < 1 or a.clients < 1 or seconds <= 0:
        ap.error("--requests, --clients and --seconds must be positive")
    print(json.dumps(run(requests, a.clients, seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
