"""50 concurrent clients (threads, one Client each) send a mix of requests while a job runs: no errors, the job
finishes normally, and the latency figures (p50/p99 per operation) are printed. 10 s by default, a minute with
SEISD_LONG_TESTS=1. Speed itself is reported, not asserted (tools/bench_reliability.py prints it)."""
from __future__ import annotations

import json

from tests.harness import RunningDaemon, steps_job, wait_state
from tests.reliability.conftest import LONG
from tests.reliability.homecheck import assert_alive
from tests.reliability.loadgen import run_load

CLIENTS = 50
SECONDS = 60.0 if LONG else 10.0


def test_fifty_clients_while_a_job_runs(module_daemon: RunningDaemon) -> None:
    d = module_daemon
    # half a minute longer than the load: the job must still run when the load ends (it is cancelled then)
    job = d.client.submit(steps_job(steps=int(SECONDS * 20) + 600, step_s=0.05))["id"]
    wait_state(d.client, job, "running")
    result = run_load(d.home, job, CLIENTS, SECONDS)
    print("load:", json.dumps(result.figures()))
    assert result.errors == []
    assert result.requests > CLIENTS and set(result.latencies) >= {"ping", "status", "show", "logs"}
    assert_alive(d, "the load")
    assert d.client.show(job)["state"] == "running"
    d.client.cancel(job)
    assert wait_state(d.client, job)["state"] == "cancelled"
