"""Failures of real processes: kill -9 of the daemon and of an executor, a job that ignores cancel, a stop with work
in flight. Each test has a daemon of its own, since each kills something."""
from __future__ import annotations

import os
import signal

import pytest

from tests.harness import (DaemonDidNotStart, RunningDaemon, job_states, pid_alive, running_with_checkpoint, steps_job,
                           wait_for, wait_state)


def test_kill9_daemon_loses_nothing(daemon: RunningDaemon) -> None:
    c = daemon.client
    finished = wait_state(c, c.submit(steps_job(steps=2))["id"])
    assert finished["state"] == "succeeded"
    running = running_with_checkpoint(daemon)
    queued = [c.submit(steps_job(steps=2, name=f"q{i}"))["id"] for i in range(2)]
    old_session = c.status()["session"]
    executors = daemon.executor_pids()
    assert executors

    descendants = daemon.kill9()
    assert set(executors) <= set(descendants)
    # the executors die with the daemon (PR_SET_PDEATHSIG): none is left holding a device
    wait_for(lambda: not any(pid_alive(p) for p in descendants), timeout=10, what="the old executors to exit")

    status = daemon.restart()
    assert status["session"] != old_session and status["pid"] == daemon.pid
    for job_id in queued:
        assert "interrupted" not in job_states(c.show(job_id))

    resumed = wait_state(c, running)
    assert resumed["state"] == "succeeded", resumed
    assert resumed["result"]["resumed_from"] > 0
    assert resumed["attempts"] == 2
    assert job_states(resumed) == ["queued", "running", "interrupted", "queued", "running", "succeeded"]
    assert "resumed_from" in resumed["result"] and c.session != old_session
    for job_id in queued:
        job = wait_state(c, job_id)
        assert job["state"] == "succeeded" and job_states(job) == ["queued", "running", "succeeded"]
    after = c.show(finished["id"])
    assert (after["state"], after["history"], after["finished"], after["result"]) == \
        (finished["state"], finished["history"], finished["finished"], finished["result"])
    # the queue resumed in order: the interrupted job (oldest) first
    assert resumed["started"] <= min(c.show(j)["started"] for j in queued)


def test_stop_interrupts_and_next_start_resumes(daemon: RunningDaemon) -> None:
    c = daemon.client
    running = running_with_checkpoint(daemon)
    queued = c.submit(steps_job(steps=1))["id"]
    executors = daemon.executor_pids()
    assert daemon.stop() == 0
    assert not any(pid_alive(p) for p in executors)
    daemon.start()
    job = wait_state(c, running)
    assert job["state"] == "succeeded" and job["result"]["resumed_from"] > 0
    assert "interrupted" in job_states(job)
    assert wait_state(c, queued)["state"] == "succeeded"


def test_kill9_executor_resumes_its_job_on_the_restarted_executor(daemon: RunningDaemon) -> None:
    c = daemon.client
    job_id = running_with_checkpoint(daemon, steps=150, step_s=0.02)
    [slot] = c.devices()
    assert slot["state"] == "busy" and slot["job"] == job_id
    os.kill(slot["executor_pid"], signal.SIGKILL)

    job = wait_state(c, job_id)
    assert job["state"] == "succeeded", job
    assert job["result"]["resumed_from"] > 0 and job["attempts"] == 2
    assert job_states(job) == ["queued", "running", "interrupted", "queued", "running", "succeeded"]
    lost = job["history"][2]
    assert lost["cause"] == "executor_died" and "killed by SIGKILL" in lost["reason"], lost
    assert str(slot["executor_pid"]) in c.logs(job_id)["text"]
    assert "died while running the job" in c.logs(job_id)["text"]

    fresh = c.devices()[0]
    assert fresh["restarts"] == 1 and fresh["executor_pid"] != slot["executor_pid"]
    assert not pid_alive(slot["executor_pid"])
    nxt = wait_state(c, c.submit(steps_job(steps=3))["id"])
    assert nxt["state"] == "succeeded" and nxt["slot"] == "cpu"


def test_cancel_of_job_that_ignores_it_kills_after_grace(daemon: RunningDaemon) -> None:
    c = daemon.client
    job_id = c.submit(steps_job(steps=3000, step_s=0.01, ignore_cancel=True))["id"]
    wait_for(lambda: c.show(job_id)["progress"] > 0, what="the job to start")
    pid = c.devices()[0]["executor_pid"]
    assert c.cancel(job_id)["state"] == "cancelling"
    assert c.show(job_id)["state"] == "running"  # it ignores the request; the grace period runs
    job = wait_state(c, job_id, timeout=15)
    assert job["state"] == "cancelled"
    assert job["progress"] < 1.0
    assert "did not stop within 1 s" in job["history"][-1]["reason"]
    wait_for(lambda: c.devices()[0]["state"] == "ready", what="the executor to come back")
    assert c.devices()[0]["restarts"] == 1 and not pid_alive(pid)
    assert wait_state(c, c.submit(steps_job(steps=1))["id"])["state"] == "succeeded"


def test_second_daemon_on_same_home_is_refused(daemon: RunningDaemon) -> None:
    second = RunningDaemon(daemon.home, start_timeout=15)
    try:
        with pytest.raises(DaemonDidNotStart) as err:
            second.start()
    finally:
        second.cleanup()
    assert "another seisd already runs" in str(err.value) and str(daemon.pid) in str(err.value)
    # the second one's cleanup left the first's sockets (its runtime folder) alone
    assert daemon.client.ping()
