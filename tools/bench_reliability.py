"""Benchmark: reliability figures of a real seisd in a temporary home, as ONE JSON line.

- fuzz: hypothesis cases (1-8 raw requests each) on the control socket (tests/reliability/fuzzing.py): messages
  sent, replies, `internal` replies, malformed replies, whether the daemon crashed;
- corpus: broken SEG-Y files made from the third-party F3 crop (tests/reliability/test_corpus.py SEGY_CASES) imported
  one by one: files, jobs that ended in a clear refusal or failure, daemon crashes (skipped without ../shared/data);
- load: 50 concurrent clients (threads, one Client each) for S seconds while a job runs: requests, errors, p50/p99
  latency over all and per operation; the baseline is `ping` p50 from one client alone in the same run;
- faults: seeded SIGKILLs of the daemon, an executor, a data worker and a viewer while tiny train and predict jobs
  run, each followed by what a user does (tests/reliability/faults.py), in a second daemon of its own: kills
  (by kind), kills survived, jobs accepted and lost, wrong outputs, shm segments leaked, orphan processes, and
  whether resumed training gave bit-identical weights; the baseline is the undisturbed run of the same jobs;
- deaths: executors that die under a running job, one of each kind the daemon handles, in a third daemon
  (executor.heartbeat_timeout_s 3): kill -9 during a train job and during a predict job, SIGSTOP past the heartbeat
  time-out (a hang; a test.steps job), work holding the GIL for twice that time (must not be killed), and the
  out-of-memory killer in a memory-limited cgroup (where /sys/fs/cgroup lets one be made; else `oom` says why
  not): executor deaths, deaths after which the job resumed and succeeded, jobs lost (must be 0), and whether
  the GIL-holding job survived (about 1.5 minutes on a 2-core machine).

    python tools/bench_reliability.py              # 3,300 fuzz cases (10,000+ messages), load 5 s, 8 kills
    python tools/bench_reliability.py --long       # 10,000 fuzz cases (30,000+ messages), load 60 s, 56 kills
    python tools/bench_reliability.py --parts faults --kills 56 --seed 7   # one part only; the others print null
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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


def faults(tmp: Path, kills: int, seed: int) -> dict[str, Any]:
    from tests.reliability.faults import DescendantWatch, FaultRun, plan_kills, stock_home

    home = tmp / "faults-home"
    home.mkdir()
    stock_home(home, tmp)
    t0 = time.perf_counter()
    with RunningDaemon(home) as d, DescendantWatch(d) as watch:
        run = FaultRun(d, watch, seed, log=lambda line: print(line, file=sys.stderr))
        run.reference()
        for i, (train_kill, predict_kill) in enumerate(plan_kills(seed, kills)):
            run.round(i, train_kill, predict_kill)
        out = run.finish().as_json()
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


DEATH_HEARTBEAT_TIMEOUT_S = 3.0


def deaths(tmp: Path) -> dict[str, Any]:
    from tests.daemon import cgroups
    from tests.reliability.faults import predict_job, stock_home, train_job

    home, work = tmp / "deaths-home", tmp / "deaths-work"
    home.mkdir()
    work.mkdir()
    stock_home(home, work)
    out: dict[str, Any] = {"executor_deaths": 0, "executor_deaths_resumed": 0, "jobs_lost": 0,
                           "gil_work_survived": None, "oom": None, "cases": {}}
    t0 = time.perf_counter()
    env = {"SEISD_EXECUTOR__HEARTBEAT_TIMEOUT_S": str(DEATH_HEARTBEAT_TIMEOUT_S)}
    with RunningDaemon(home, env=env) as d:
        c = d.client

        def executor_of(job_id: int, at: float) -> int | None:
            """The job's executor once the job's progress reached `at`; None when it ended first."""
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                rec = c.show(job_id)
                if rec["state"] in P.TERMINAL_STATES:
                    return None
                pid = next((s["executor_pid"] for s in c.devices() if s["job"] == job_id), None)
                if rec["state"] == "running" and (rec["progress"] or 0) >= at and pid:
                    return pid
                time.sleep(0.02)
            raise AssertionError(f"job {job_id} did not reach progress {at} within 120 s")

        def case(name: str, job: dict[str, Any], act: Any, at: float = 0.3) -> dict[str, Any]:
            t1 = time.perf_counter()
            jid = c.submit(job)["id"]
            pid = executor_of(jid, at)
            if pid is not None:
                act(pid)
            rec = wait_state(c, jid, timeout=300)
            causes = [h["cause"] for h in rec["history"] if h["state"] == "interrupted"]
            out["executor_deaths"] += len(causes)
            out["executor_deaths_resumed"] += len(causes) if rec["state"] == "succeeded" else 0
            out["jobs_lost"] += rec["state"] != "succeeded"
            out["cases"][name] = {"state": rec["state"], "attempts": rec["attempts"], "causes": causes,
                                  "missed": pid is None, "error": rec["error"],
                                  "seconds": round(time.perf_counter() - t1, 1)}
            return out["cases"][name]

        case("kill9_train", train_job("d-train", epochs=1), lambda pid: os.kill(pid, signal.SIGKILL))
        case("kill9_predict", predict_job("d-predict"), lambda pid: os.kill(pid, signal.SIGKILL))
        case("sigstop", steps_job(steps=100, step_s=0.03), lambda pid: os.kill(pid, signal.SIGSTOP), at=0.1)
        gil = case("gil_work", steps_job(steps=10, step_s=0.05, at_step=2,
                                         hold_gil_s=2 * DEATH_HEARTBEAT_TIMEOUT_S), lambda pid: None, at=0.0)
        out["gil_work_survived"] = gil["state"] == "succeeded" and gil["attempts"] == 1
        why = cgroups.unavailable()
        if why is None:
            try:
                group = cgroups.make(256 << 20, f"seisd-bench-{os.getpid()}")
            except OSError as exc:
                why = str(exc)
        if why is not None:
            out["oom"] = f"unavailable: {why}"
        else:
            try:
                oom = case("oom", steps_job(steps=40, step_s=0.05, at_step=20, alloc_mb=2048), group.add, at=0.0)
            finally:
                cgroups.remove(group)
            out["oom"] = "resumed" if oom["state"] == "succeeded" and "out_of_memory" in oom["causes"] else oom
        alive(d)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


PARTS = ("fuzz", "corpus", "load", "faults", "deaths")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="30,000+ fuzzed messages and a minute of load")
    ap.add_argument("--cases", type=int, help="fuzz cases (default 3,300; --long 10,000)")
    ap.add_argument("--seconds", type=float, help="load duration (default 5; --long 60)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--kills", type=int, help="seeded kills (default 8; --long 56)")
    ap.add_argument("--seed", type=int, default=20240611, help="seed of the kill plan")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    if parts - set(PARTS):
        ap.error(f"--parts: unknown {sorted(parts - set(PARTS))}; choose from {', '.join(PARTS)}")
    kills = a.kills or (56 if a.long else 8)
    cases = a.cases or (10_000 if a.long else 3_300)
    seconds = a.seconds or (60.0 if a.long else 5.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rel-"))
    inputs = tmp / "inputs"
    inputs.mkdir()
    try:
        f: dict[str, Any] = {}
        c: dict[str, Any] = {}
        lo: dict[str, Any] = {}
        if parts & {"fuzz", "corpus", "load"}:
            with RunningDaemon(tmp / "home", env={"SEISD_PATHS__INPUTS": f"[{inputs}]"}) as d:
                f = fuzz(d, cases) if "fuzz" in parts else {}
                c = corpus(d, inputs) if "corpus" in parts else {}
                lo = load(d, seconds, a.clients) if "load" in parts else {}
                alive(d)
        k = faults(tmp, kills, a.seed) if "faults" in parts else {}
        de = deaths(tmp) if "deaths" in parts else {}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"bench": "reliability", "fuzz_cases": cases if f else None, "fuzz_messages": f.get("messages"),
                      "fuzz_internal": f.get("internal"), "fuzz_malformed": f.get("malformed"),
                      "fuzz_crashes": int(f["crashed"]) if f else None, "fuzz_s": f.get("seconds"),
                      "corpus_files": c.get("files"), "corpus_clear": c.get("clear"),
                      "corpus_crashes": c.get("crashes"), "load_clients": a.clients if lo else None,
                      "load_s": seconds if lo else None, "load_requests": lo.get("requests"),
                      "load_errors": lo.get("errors"), "load_p50_ms": lo.get("p50_ms"), "load_p99_ms": lo.get("p99_ms"),
                      "baseline_ping_p50_ms": lo.get("baseline_ping_p50_ms"),
                      "p99_over_baseline": lo.get("p99_over_baseline"), "load_ops": lo.get("ops"),
                      "kills": k.get("kills"), "kills_by_kind": k.get("kills_by_kind"),
                      "kills_survived": k.get("kills_survived"), "jobs_accepted": k.get("jobs_accepted"),
                      "jobs_lost": k.get("jobs_lost"), "wrong_outputs": k.get("wrong_outputs"),
                      "shm_leaked": k.get("shm_leaked"), "orphan_processes": k.get("orphan_processes"),
                      "train_resumes_bit_exact": k.get("train_resumes_bit_exact"),
                      "train_resumes_inexact": k.get("train_resumes_inexact"),
                      "max_weight_diff": k.get("max_weight_diff"), "fault_seed": a.seed if k else None,
                      "faults_s": k.get("seconds"), "fault_findings": k.get("findings"),
                      "executor_deaths": de.get("executor_deaths"),
                      "executor_deaths_resumed": de.get("executor_deaths_resumed"),
                      "gil_work_survived": de.get("gil_work_survived"), "oom_death": de.get("oom"),
                      "deaths": de or None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
