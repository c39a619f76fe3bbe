"""What the daemon reads of an executor in /proc (daemon/server/vitals.py), on real processes: the state of a
sleeping, a working and a stopped child, their CPU time, and the window of the kernel's out-of-memory counter."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from daemon.server import vitals
from tests.harness import wait_for


@pytest.fixture
def child():
    procs: list[subprocess.Popen] = []

    def start(code: str) -> subprocess.Popen:
        procs.append(subprocess.Popen([sys.executable, "-c", code]))
        return procs[-1]
    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=10)


def test_a_working_child_uses_cpu_and_a_sleeping_one_does_not(child) -> None:
    busy, idle = child("while True: pass"), child("import time; time.sleep(60)")
    time.sleep(1.0)
    a, b = vitals.look(busy.pid), vitals.look(idle.pid)
    time.sleep(1.0)
    a2, b2 = vitals.look(busy.pid), vitals.look(idle.pid)
    assert a2.cpu_s - a.cpu_s >= 0.2, (a, a2)              # well above BUSY_CPU_SHARE even on a loaded machine
    assert b2.cpu_s - b.cpu_s < vitals.BUSY_CPU_SHARE, (b, b2)
    assert b2.state == "S" and not b2.stopped and "sleeping" in b2.describe()


def test_a_stopped_child_is_seen_stopped_and_a_gone_one_not_at_all(child) -> None:
    p = child("import time; time.sleep(60)")
    p.send_signal(signal.SIGSTOP)
    seen = wait_for(lambda: (lambda s: s if s and s.stopped else None)(vitals.look(p.pid)), 5, what="state T")
    assert seen.state == "T" and "SIGSTOP" in seen.describe()
    p.kill()
    p.wait(timeout=10)
    assert vitals.look(p.pid) is None and vitals.look(None) is None


def test_the_oom_counter_names_only_kills_within_its_window() -> None:
    counter = [3]
    oom = vitals.OomCounter(read=lambda: counter[0])
    oom.sample(0.0)
    assert oom.rose() is None
    counter[0] = 4                                  # an out-of-memory kill just now
    assert oom.rose() == (3, 4)
    for t in range(1, 12):                          # sampled each second: the kill drops out of the window
        oom.sample(float(t))
    assert oom.rose() is None
    assert vitals.OomCounter(read=lambda: None).rose() is None   # a kernel that does not count
    real = vitals.oom_kills()
    assert real is None or real >= 0
