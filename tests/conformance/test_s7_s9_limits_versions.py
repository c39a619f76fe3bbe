"""Section 7, "Size limits" (a daemon with small limits: too_large with the limit named, `re` null for an
oversized header, the values in `status.limits`), and section 9, "Versioning" (bad_version and its details; a
request's unknown header fields ignored)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance.wire import Daemon, dealer, exchange, header

LIMITS = {"SEISD_LIMITS__MAX_HEADER_BYTES": "4096", "SEISD_LIMITS__MAX_MESSAGE_BYTES": "65536",
          "SEISD_LIMITS__MAX_FRAMES": "4"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("limits")
    with Daemon({"SEISD_HOME": str(tmp / "home"), **LIMITS}, log=tmp / "seisd.out") as d:
        yield d


def test_status_reports_the_limits(small: Daemon) -> None:
    c = small.conn()
    try:
        assert c.call("status")["limits"] == {"max_header_bytes": 4096, "max_message_bytes": 65536, "max_frames": 4}
    finally:
        c.close()


@pytest.mark.parametrize("frames,limit,re_", [
    ([header("ping", rid="f")] + [b"x"] * 4, "max_frames", "f"),
    ([json.dumps({"v": 1, "id": "h", "op": "ping", "pad": "x" * 5000}).encode()], "max_header_bytes", None),
    ([header("ping", rid="m"), b"\0" * 70_000], "max_message_bytes", "m"),
])
def test_too_large(small: Daemon, frames: list[bytes], limit: str, re_: str | None) -> None:
    s = dealer(small.control)
    try:
        head, _ = exchange(s, frames)
        assert head["error"]["code"] == "too_large" and head["error"]["details"]["limit"] == limit
        assert head["re"] == re_ and head["error"]["details"]["max"] == {"max_frames": 4, "max_header_bytes": 4096,
                                                                         "max_message_bytes": 65536}[limit]
    finally:
        s.close(0)


def test_versions(small: Daemon, tmp_path: Path) -> None:
    s = dealer(small.control)
    try:
        head, _ = exchange(s, [json.dumps({"v": 2, "id": "v2", "op": "ping"}).encode()])
        assert head["error"] == {"code": "bad_version", "message": head["error"]["message"],
                                 "details": {"supported": [1]}} and head["v"] == 1
        head, _ = exchange(s, [json.dumps({"v": 1, "id": "u", "op": "ping", "future": {"x": 1}}).encode()])
        assert head["ok"] is True
    finally:
        s.close(0)
