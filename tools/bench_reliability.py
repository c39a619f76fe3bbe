"""Benchmark: reliability figures of a real seisd in a temporary home, as ONE JSON line.

- fuzz: hypothesis cases (1-8 raw requests each) on the control socket (tests/reliability/fuzzing.py): messages
  sent, replies, `internal` replies, malformed replies, whether the daemon crashed;
- corpus: broken SEG-Y files made from the third-party F3 crop (tests/reliability/test_corpus.py SEGY_CASES) imported
  one by one: files, jobs that ended in a clear refusal or failure, daemon crashes (skipped without ../shared/data);
- load: 50 concurrent clients (threads, one Client each) for S seconds while a job runs: requests, errors, p50/p99
  latency over all and per operation; the baseline is `ping` p50 from one client alone in the same run;
- kills survived, jobs lost, shm leaked, orphan processes: null until fault injection of jobs exists.

    python tools/bench_reliability.py              # 3,300 fuzz cases (10,000+ messages), load 5 s: under a minute
    python tools/bench_reliability.py --long       # 10,000 fuzz cases (30,000+ messages), load for 60 s
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import protocol as P  # noqa: E402
from client.api import Client, SeisdError  # noqa: E402
from tests.harness import RunningDaemon, steps_job, wait_state  # noqa: E402
from tests.reliability.fuzzing import FuzzStats, run_socket_fuzz  # noqa: E402
from tests.reliability.loadgen import run_load  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def alive(d: RunningDaemon) -> None:
    if d.proc is None or d.proc.poll() is not None:
        raise AssertionError("seisd exited")
    d.client.ping()


def fuzz(d: RunningDaemon, cases: int) -> dict[str, Any]:
    stats = FuzzStats()
    t0 = time.perf_counter()
    try:
        run_socket_fuzz(P.control_endpoint(d.home), cases, stats, lambda: alive(d))
    except AssertionError as exc:   # a finding: counted in the figures, the run goes on
        if not stats.malformed and not stats.internal and not stats.crashed:
            stats.malformed.append(str(exc)[:200])
    out = stats.as_json()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def corpus(d: RunningDaemon, inputs: Path) -> dict[str, Any]:
    if not SHARED.is_dir():
        return {"files": 0, "clear": 0, "crashes": 0, "skipped": f"no {SHARED}"}
    from tests.reliability.test_corpus import SEGY_CASES

    shutil.copy(SHARED / "segyio" / "f3.sgy", inputs / "f3.sgy")
    files = clear = crashes = 0
    for name, (make, _) in SEGY_CASES.items():
        path = inputs / f"f3-{name}.sgy"
        path.write_bytes(make(inputs, SHARED))
        files += 1
        try:
            job = d.client.submit({"kind": "import", "survey": f"c-{name}", "segy": {"file": str(path)}})
            done = wait_state(d.client, job["id"], timeout=120)
            clear += done["state"] == "succeeded" or bool(done["error"])
        except SeisdError as exc:
            clear += exc.code == "invalid_job"
        try:
            alive(d)
        except Exception:
            crashes += 1
            d.restart()
    return {"files": files, "clear": clear, "crashes": crashes}


def load(d: RunningDaemon, seconds: float, clients: int) -> dict[str, Any]:
    with Client(home=d.home, timeout=10) as c:
        base = []
        for _ in range(500):
            t0 = time.perf_counter()
            c.ping()
            base.append(time.perf_counter() - t0)
    job = d.client.submit(steps_job(steps=int(seconds * 20) + 100, step_s=0.05))["id"]
    wait_state(d.client, job, "running")
    figures = run_load(d.home, job, clients, seconds).figures()
    d.client.cancel(job)
    figures["baseline_ping_p50_ms"] = round(statistics.median(base) * 1e3, 3)
    figures["p99_over_baseline"] = round(figures["p99_ms"] / figures["baseline_ping_p50_ms"], 1)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="30,000+ fuzzed messages and a minute of load")
    ap.add_argument("--cases", type=int, help="fuzz cases (default 3,300; --long 10,000)")
    ap.add_argument("--seconds", type=float, help="load duration (default 5; --long 60)")
    ap.add_argument("--clients", type=int, default=50)
    a = ap.parse_args()
    cases = a.cases or (10_000 if a.long else 3_300)
    seconds = a.seconds or (60.0 if a.long else 5.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rel-"))
    inputs = tmp / "inputs"
    inputs.mkdir()
    try:
        with RunningDaemon(tmp / "home", env={"SEISD_PATHS__INPUTS": f"[{inputs}]"}) as d:
            f = fuzz(d, cases)
            c = corpus(d, inputs)
            lo = load(d, seconds, a.clients)
            alive(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"bench": "reliability", "fuzz_cases": cases, "fuzz_messages": f["messages"],
                      "fuzz_internal": f["internal"], "fuzz_malformed": f["malformed"],
                      "fuzz_crashes": int(f["crashed"]), "fuzz_s": f["seconds"],
                      "corpus_files": c["files"], "corpus_clear": c["clear"], "corpus_crashes": c["crashes"],
                      "load_clients": a.clients, "load_s": seconds, "load_requests": lo["requests"],
                      "load_errors": lo["errors"], "load_p50_ms": lo["p50_ms"], "load_p99_ms": lo["p99_ms"],
                      "baseline_ping_p50_ms": lo["baseline_ping_p50_ms"], "p99_over_baseline": lo["p99_over_baseline"],
                      "load_ops": lo["ops"], "kills_survived": None, "jobs_lost": None, "shm_leaked": None,
                      "orphan_processes": None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
