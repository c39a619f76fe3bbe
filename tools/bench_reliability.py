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
  whether resumed training gave bit-identical weights; the baseline is the undisturbed run of the same jobs.
- orphans: a custom script starts three grandchildren (one in its process group, one in a session of its own, and,
  where cgroups can be written, one in a session of its own with a cleared environment, which only the job's cgroup
  follows); its executor is killed with SIGKILL, then, with a second such job, the daemon itself, which is started
  again: orphans_found_by_sweep (processes the daemon's sweeps killed, from its log), orphans_after_sweep
  (grandchildren alive, and processes with the home's marker outside the daemon's family, after the sweep: must
  be 0), and the seconds until the last was gone.
- inputs ("bad inputs refused at submit"): the job files of tests/reliability/badinputs.py (names shaped like
  seisd's temporary names, relative paths out of the home, FIFOs and devices, requests past the machine's CPUs and
  memory, code and outside files from a tcp client) sent to a daemon of its own (tcp on, paths.inputs empty):
  bad_inputs, bad_inputs_refused_at_submit (refused naming the key and the problem; must equal bad_inputs),
  name_collisions_lost_data (a survey named `g.partial` beside imports of `g`; must be 0), and the unclear ones.
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
import re
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


ORPHAN_SCRIPT = '''
import os, subprocess, sys, time
bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
kids = [subprocess.Popen(["sleep", "1000"]), subprocess.Popen(["sleep", "1000"], start_new_session=True)]
if sys.argv[1] == "cgroup":
    kids.append(subprocess.Popen(["sleep", "1000"], start_new_session=True, env=bare))
out = os.environ["SEISJOB_OUTPUTS"]
with open(os.path.join(out, "pids.tmp"), "w") as f:
    f.write(" ".join(str(k.pid) for k in kids))
os.replace(os.path.join(out, "pids.tmp"), os.path.join(out, "pids"))
time.sleep(1000)
'''


def orphan_sweep(tmp: Path) -> dict[str, Any]:
    """kill -9 of an executor running a script with grandchildren, then of the daemon: what the sweeps found and
    what was left after them."""
    from daemon.common.jobcgroup import cgroup_base
    from tests.daemon.test_orphans import marked_outside
    from tests.harness import pid_alive, wait_for

    script = tmp / "orphans.py"
    script.write_text(ORPHAN_SCRIPT)
    mode = "cgroup" if cgroup_base() is not None else "marker"
    log_file = tmp / "orphans-home" / "logs" / "seisd.log"

    def start_job(d: RunningDaemon) -> list[int]:
        jid = d.client.submit({"kind": "custom", "script": str(script), "args": [mode]})["id"]
        pids = d.home / "jobs" / str(jid) / "outputs" / "pids"
        wait_for(pids.is_file, timeout=60, what="the script's grandchildren")
        return [int(p) for p in pids.read_text().split()]

    def killed_since(offset: int) -> int:
        text = log_file.read_text(errors="replace")[offset:]
        return sum(int(n) for n in re.findall(r"orphan sweep \(.*?\): killed (\d+) process", text))

    def settle(d: RunningDaemon, kids: list[int], t0: float, offset: int) -> dict[str, Any]:
        try:
            wait_for(lambda: not any(pid_alive(p) for p in kids), timeout=20, what="the grandchildren to go")
        except AssertionError:
            pass
        seconds = round(time.perf_counter() - t0, 2)
        time.sleep(1.0)  # the sweep's log line comes after its grace
        return {"grandchildren": len(kids), "found_by_sweep": killed_since(offset),
                "after_sweep": sum(pid_alive(p) for p in kids) + len(marked_outside(d.home, d.pid)),
                "seconds": seconds}

    out: dict[str, Any] = {"mode": mode}
    with RunningDaemon(tmp / "orphans-home") as d:
        kids = start_job(d)
        offset = len(log_file.read_text(errors="replace"))
        t0 = time.perf_counter()
        os.kill(d.client.devices()[0]["executor_pid"], signal.SIGKILL)
        out["executor_kill"] = settle(d, kids, t0, offset)
        wait_for(lambda: d.client.devices()[0]["state"] == "ready", timeout=30, what="the executor's restart")
        kids = start_job(d)
        d.kill9()
        offset = len(log_file.read_text(errors="replace"))
        t0 = time.perf_counter()
        d.restart()
        out["daemon_kill"] = settle(d, kids, t0, offset)
        for job in d.client.jobs():
            if job["state"] in ("queued", "running"):
                d.client.cancel(job["id"])
    for p in list(kids):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out["orphans_found_by_sweep"] = out["executor_kill"]["found_by_sweep"] + out["daemon_kill"]["found_by_sweep"]
    out["orphans_after_sweep"] = out["executor_kill"]["after_sweep"] + out["daemon_kill"]["after_sweep"]
    return out


def bad_inputs(tmp: Path) -> dict[str, Any]:
    """Section "bad inputs refused at submit" (tests/reliability/badinputs.py)."""
    if not SHARED.is_dir():
        return {"skipped": f"no {SHARED}"}
    from tests.reliability import badinputs as B

    base = tmp / "inputs-bench"
    base.mkdir()
    d, secret = B.tcp_daemon(base)
    t0 = time.perf_counter()
    with d:
        B.stock(d, base / "files", SHARED)
        with B.tcp_client(d, secret) as tcp:
            outcomes = B.run_cases(d, tcp, B.cases(d.home, base / "scratch", base / "files"))
        lost, why = B.name_collision_losses(d, base / "files" / "f3.sgy")
        alive(d)
    return {"bad_inputs": len(outcomes), "refused": sum(o.clear for o in outcomes), "collisions_lost": lost,
            "unclear": [f"{o.case.name}: {o.message[:160]}" for o in outcomes if not o.clear] + why,
            "seconds": round(time.perf_counter() - t0, 1)}


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


PARTS = ("fuzz", "corpus", "load", "faults", "orphans", "inputs", "deaths")


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
        o = orphan_sweep(tmp) if "orphans" in parts else {}
        b = bad_inputs(tmp) if "inputs" in parts else {}
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
                      "orphans_found_by_sweep": o.get("orphans_found_by_sweep"),
                      "orphans_after_sweep": o.get("orphans_after_sweep"), "orphan_sweep": o or None,
                      "bad_inputs": b.get("bad_inputs"), "bad_inputs_refused_at_submit": b.get("refused"),
                      "name_collisions_lost_data": b.get("collisions_lost"), "bad_inputs_unclear": b.get("unclear"),
                      "bad_inputs_s": b.get("seconds"),
                      "executor_deaths": de.get("executor_deaths"),
                      "executor_deaths_resumed": de.get("executor_deaths_resumed"),
                      "executor_deaths_jobs_lost": de.get("jobs_lost"),
                      "gil_work_survived": de.get("gil_work_survived"), "oom_death": de.get("oom"),
                      "deaths": de or None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
