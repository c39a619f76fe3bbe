"""`seisd --exit-with PID`: the daemon stops, as on SIGTERM, once the process it watches has ended, so a host
application or a test run that dies outright leaves no daemon behind, and no accepted job is lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.harness import (ROOT, RunningDaemon, daemon_env, job_states, pid_alive, running_with_checkpoint, seisctl,
                           seisctl_json, steps_job, wait_for, wait_state)


def test_the_daemon_stops_when_its_process_is_killed_and_resumes_its_jobs(tmp_path: Path) -> None:
    host = subprocess.Popen(["sleep", "600"])           # stands for the host application
    try:
        with RunningDaemon(tmp_path / "home", exit_with=host.pid) as d:
            c = d.client
            running = running_with_checkpoint(d)
            queued = c.submit(steps_job(steps=1, name="waiting"))["id"]
            executors = d.executor_pids()
            host.send_signal(signal.SIGKILL)            # not reaped yet: a zombie has ended too
            assert d.proc.wait(20) == 0, d.output_tail()
            log = d.out_path.read_text()
            assert f"stopping: process {host.pid} (--exit-with) has ended" in log, d.output_tail()
            wait_for(lambda: not any(pid_alive(p) for p in executors), timeout=10, what="the executors to exit")

            d.exit_with = os.getpid()                   # the restarted daemon watches this test
            d.start()
            job = wait_state(c, running)
            assert job["state"] == "succeeded" and job["result"]["resumed_from"] > 0, job
            assert "interrupted" in job_states(job)
            assert wait_state(c, queued)["state"] == "succeeded"
    finally:
        host.kill()
        host.wait(10)


def test_a_test_process_killed_outright_leaves_no_daemon(tmp_path: Path) -> None:
    # the harness's default: a daemon started by a RunningDaemon watches the process that made it
    script = textwrap.dedent(f"""
        import os, sys
        from tests.harness import RunningDaemon
        d = RunningDaemon({str(tmp_path / "home")!r})
        d.start()
        print(d.pid, flush=True)
        os._exit(0)                                   # no cleanup, as a SIGKILL of pytest would leave it
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=daemon_env(tmp_path / "home"),
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.split()[-1])
    wait_for(lambda: not pid_alive(pid), timeout=20, what=f"daemon {pid} to stop")


def test_a_process_that_does_not_exist_is_refused_by_name(tmp_path: Path) -> None:
    beyond = int(Path("/proc/sys/kernel/pid_max").read_text())    # no process can have this id
    home = tmp_path / "home"
    r = subprocess.run([sys.executable, "-m", "daemon.server.main", "--home", str(home), "--exit-with",
                        str(beyond)], cwd=ROOT, env=daemon_env(home), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"--exit-with {beyond}: no such process" in r.stderr


def test_seisctl_daemon_start_passes_it_on(tmp_path: Path) -> None:
    host = subprocess.Popen(["sleep", "600"])
    home = tmp_path / "home"
    started = {}
    try:
        started = seisctl_json(home, "daemon", "start", "--exit-with", str(host.pid))
        assert started["already_running"] is False
        assert seisctl_json(home, "daemon", "status")["pid"] == started["pid"]
    finally:
        host.kill()                                      # also ends the daemon if an assertion failed
        host.wait(10)
    wait_for(lambda: not pid_alive(started["pid"]), timeout=20, what="the daemon to stop")
    r = seisctl(home, "daemon", "status")
    assert r.returncode != 0 and "no seisd is running" in r.stderr, (r.stdout, r.stderr)
