"""What a job starts ends with it: a custom script's grandchildren after the script ends, after a kill -9 of its
executor, after a kill -9 of the daemon (found by the marker in their environment at the next start), and, where
cgroups can be written, a grandchild that cleared its environment.

Every grandchild here runs in a session of its own (as a daemonising tool or a notebook's kernel does), so neither
the script's process group nor PR_SET_PDEATHSIG reaches it. A zombie counts as gone (pid 1 may not reap it).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.harness import RunningDaemon, pid_alive, wait_for, wait_state

# argv: keep-env | clear-env, then how long the script itself sleeps after starting its grandchild
GRANDCHILD_SCRIPT = '''
import os, subprocess, sys, time
env = dict(os.environ) if sys.argv[1] == "keep-env" else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
g = subprocess.Popen(["sleep", "1000"], start_new_session=True, env=env)
out = os.environ["SEISJOB_OUTPUTS"]
with open(os.path.join(out, "pids.tmp"), "w") as f:
    f.write(f"{os.getpid()} {g.pid}")
os.replace(os.path.join(out, "pids.tmp"), os.path.join(out, "pids"))
print("grandchild", g.pid, flush=True)
time.sleep(float(sys.argv[2]))
'''


def _start_script(d: RunningDaemon, tmp_path: Path, env_mode: str, sleep_s: float) -> tuple[int, int, int]:
    """Submit the script; returns (job id, the script's pid, its grandchild's pid) once the grandchild runs."""
    script = tmp_path / "grandchild.py"
    script.write_text(GRANDCHILD_SCRIPT)
    jid = d.client.submit({"kind": "custom", "script": str(script), "args": [env_mode, str(sleep_s)]})["id"]
    pids_file = d.home / "jobs" / str(jid) / "outputs" / "pids"
    wait_for(pids_file.is_file, timeout=60, what="the script to start its grandchild")
    script_pid, grandchild = (int(p) for p in pids_file.read_text().split())
    return jid, script_pid, grandchild


def _kill(*pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def marked_outside(home: Path, daemon_pid: int | None) -> list[int]:
    """Live processes carrying this home's marker that are not the daemon's descendants (read with psutil here,
    apart from the daemon's own reading of /proc)."""
    from daemon.common.orphans import OWNER_ENV, owner_tag

    tag = owner_tag(home)
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid == daemon_pid or p.status() == psutil.STATUS_ZOMBIE or p.environ().get(OWNER_ENV) != tag:
                continue
            # ancestry read per process, not from a snapshot of the daemon's children taken first: a child the
            # daemon starts meanwhile (its executor, a data worker) would show as outside (it did once, session 37)
            if daemon_pid is not None and any(q.pid == daemon_pid for q in p.parents()):
                continue
            found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def sweep_lines(d: RunningDaemon) -> list[str]:
    text = (d.home / "logs" / "seisd.log").read_text(errors="replace")
    return [line for line in text.splitlines() if "orphan" in line]


def test_a_custom_job_that_ends_takes_what_it_started_with_it(daemon: RunningDaemon, tmp_path: Path) -> None:
    jid, script_pid, grandchild = _start_script(daemon, tmp_path, "keep-env", 0.5)
    try:
        assert wait_state(daemon.client, jid)["state"] == "succeeded"
        wait_for(lambda: not pid_alive(grandchild), timeout=10,
                 what=f"the grandchild {grandchild} (own session) of a script that exited to be stopped")
        assert not pid_alive(script_pid)
        assert f"stopped 1 process(es) the job left running: {grandchild} (sleep 1000)" in \
            daemon.client.logs(jid)["text"]
    finally:
        _kill(grandchild)


def test_kill9_of_an_executor_leaves_no_grandchild_of_its_custom_script(daemon: RunningDaemon,
                                                                        tmp_path: Path) -> None:
    jid, script_pid, grandchild = _start_script(daemon, tmp_path, "keep-env", 600)
    try:
        [slot] = daemon.client.devices()
        assert slot["job"] == jid
        os.kill(slot["executor_pid"], signal.SIGKILL)
        wait_for(lambda: not pid_alive(grandchild), timeout=15,
                 what=f"the grandchild {grandchild} (own session) of the killed executor's script to be killed")
        assert not pid_alive(script_pid)
        lines = wait_for(lambda: [ln for ln in sweep_lines(daemon) if f"{grandchild} " in ln], timeout=10,
                         what="the sweep's log line naming the grandchild")
        assert "executor for cpu died" in lines[0] and "sleep 1000" in lines[0], lines
        print(f"orphans found by the sweep: {lines[0]}")
        assert marked_outside(daemon.home, daemon.pid) == []
    finally:
        _kill(grandchild)


def test_kill9_of_the_daemon_leaves_no_marked_process_after_the_next_start(daemon: RunningDaemon,
                                                                           tmp_path: Path) -> None:
    jid, script_pid, grandchild = _start_script(daemon, tmp_path, "keep-env", 600)
    pids_file = daemon.home / "jobs" / str(jid) / "outputs" / "pids"
    try:
        daemon.kill9()
        # the executor and the script die with the daemon (PR_SET_PDEATHSIG); the grandchild, alone, lives on
        wait_for(lambda: not pid_alive(script_pid), timeout=10, what="the script to die with its executor")
        left = marked_outside(daemon.home, None)
        assert left == [grandchild], left
        pids_file.unlink()
        daemon.restart()
        assert not pid_alive(grandchild), "the grandchild outlived the next start"
        assert marked_outside(daemon.home, daemon.pid) == []
        lines = [ln for ln in sweep_lines(daemon) if "at start" in ln and f"{grandchild} " in ln]
        assert lines and "killed 1 " in lines[0], sweep_lines(daemon)
        print(f"orphans left before the start: {len(left)}; {lines[0]}")
    finally:
        _kill(grandchild)
        if pids_file.is_file():  # the job's second run, after the restart
            _kill(*(int(p) for p in pids_file.read_text().split()))


def test_the_start_sweep_kills_this_homes_marked_processes_and_nothing_else(tmp_path: Path) -> None:
    from daemon.common.orphans import OWNER_ENV, owner_tag

    home = tmp_path / "home"
    sleep = [sys.executable, "-c", "import time; time.sleep(1000)"]
    deaf = [sys.executable, "-c", ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                   "open('ready', 'w'); time.sleep(1000)")]
    procs = {
        "mine": subprocess.Popen(sleep, env={**os.environ, OWNER_ENV: owner_tag(home)}, start_new_session=True),
        "deaf": subprocess.Popen(deaf, env={**os.environ, OWNER_ENV: owner_tag(home)}, cwd=tmp_path),
        "other home": subprocess.Popen(sleep, env={**os.environ, OWNER_ENV: owner_tag(tmp_path / "other")}),
        "unmarked": subprocess.Popen(sleep, env={k: v for k, v in os.environ.items() if k != OWNER_ENV}),
    }
    try:
        wait_for((tmp_path / "ready").is_file, timeout=20, what="the process that ignores SIGTERM to start")
        with RunningDaemon(home) as d:
            assert procs["mine"].wait(10) == -signal.SIGTERM
            assert procs["deaf"].wait(10) == -signal.SIGKILL  # after the grace
            assert procs["other home"].poll() is None and procs["unmarked"].poll() is None
            [line] = [ln for ln in sweep_lines(d) if "at start" in ln]
            assert "killed 2 " in line and f"{procs['mine'].pid} " in line and f"{procs['deaf'].pid} " in line, line
            assert marked_outside(home, d.pid) == []
    finally:
        for p in procs.values():
            p.kill()
            p.wait(timeout=10)


def _cgroups_writable() -> bool:
    from daemon.common.jobcgroup import cgroup_base

    return cgroup_base() is not None


@pytest.mark.skipif(not _cgroups_writable(), reason="no writable cgroup v2 here: a process that clears its "
                    "environment escapes the marker (docs/security.md)")
def test_a_grandchild_that_clears_its_environment_ends_with_its_jobs_cgroup(daemon: RunningDaemon,
                                                                          tmp_path: Path) -> None:
    jid, script_pid, grandchild = _start_script(daemon, tmp_path, "clear-env", 600)
    try:
        assert "SEISD_OWNER" not in psutil.Process(grandchild).environ()
        [slot] = daemon.client.devices()
        os.kill(slot["executor_pid"], signal.SIGKILL)
        wait_for(lambda: not pid_alive(grandchild), timeout=15,
                 what=f"the grandchild {grandchild} without the marker to be killed with the job's cgroup")
        assert not pid_alive(script_pid)
        line = wait_for(lambda: [ln for ln in sweep_lines(daemon) if "cgroup" in ln], timeout=10,
                        what="the sweep's log line of the job's cgroup")[0]
        assert re.search(rf"job {jid}\b", line) and "killed" in line, line
    finally:
        _kill(grandchild)


def _daemonised(env: dict[str, str]) -> int:
    """A `sleep 1000` whose parent has exited (reparented to init, as a daemonised server is); returns its pid."""
    sh = subprocess.run(["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"], env=env, capture_output=True,
                        text=True, check=True, timeout=30)
    return int(sh.stdout)


def test_the_sweep_spares_what_a_live_executors_job_daemonised_until_that_executor_is_gone(tmp_path: Path) -> None:
    """This test's process plays the daemon and a child `sleep` one of its executors."""
    from daemon.common.orphans import OWNER_ENV, STARTER_ENV, owner_tag, sweep

    home = tmp_path / "home"
    executor = subprocess.Popen(["sleep", "1000"])
    base = {**os.environ, OWNER_ENV: owner_tag(home)}
    of_live_job = _daemonised({**base, STARTER_ENV: str(executor.pid)})
    stray = _daemonised(base)
    try:
        assert [o.pid for o in sweep(home, grace_s=1)] == [stray]
        assert pid_alive(of_live_job) and not pid_alive(stray)
        executor.kill()
        executor.wait(timeout=10)
        assert [o.pid for o in sweep(home, grace_s=1)] == [of_live_job]
        assert not pid_alive(of_live_job)
    finally:
        executor.kill()
        _kill(of_live_job, stray)
