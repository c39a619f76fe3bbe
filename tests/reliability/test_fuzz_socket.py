"""The control socket under a property-based fuzzer (tests/reliability/fuzzing.py): thousands of random, truncated,
mistyped and lying requests; every one gets a well-formed reply (never `internal`), the daemon stays up, and a
normal client is served afterwards. SEISD_LONG_TESTS=1 sends 10,000+ messages (3,300 cases)."""
from __future__ import annotations

import json


from client import protocol as P
from client.api import Client
from tests.harness import RunningDaemon
from tests.reliability.conftest import LONG
from tests.reliability.fuzzing import FuzzStats, run_socket_fuzz
from tests.reliability.homecheck import HomeSnapshot, assert_alive

CASES = 3_300 if LONG else 400   # a case is 1-8 requests, about 3.2 on average


def test_fuzzed_requests_get_error_replies_and_the_daemon_lives(module_daemon: RunningDaemon) -> None:
    d = module_daemon
    session = assert_alive(d)
    before = HomeSnapshot(d.home)
    stats = FuzzStats()
    run_socket_fuzz(P.control_endpoint(d.home), CASES, stats, lambda: assert_alive(d, "fuzzed requests"))
    print("socket fuzz:", json.dumps(stats.as_json()))
    assert stats.replies == stats.messages and not stats.internal and not stats.malformed
    assert stats.codes["bad_message"] and stats.codes["bad_args"] and stats.codes["unknown_op"]
    if LONG:
        assert stats.messages >= 10_000
    with Client(home=d.home, timeout=5) as c:
        assert c.ping()["session"] == session, "the daemon restarted during the fuzz run"
    assert before.changes() == []

