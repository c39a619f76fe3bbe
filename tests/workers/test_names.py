"""Names in a home (workers/names.py) and the files a job names (workers/regular_files.py)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from workers.names import USER_NAME, is_internal, name_error, work_path
from workers.regular_files import UnreadableFile, open_regular, read_regular, regular_file_problem


@given(st.from_regex(USER_NAME, fullmatch=True), st.sampled_from(["partial", "tmp"]))
def test_no_user_name_is_ever_a_work_name(name: str, tag: str) -> None:
    """Whatever a user calls a thing, and whatever suffix seisd adds, seisd's temporary name for it is one no user
    may give, and listings skip it."""
    work = work_path(Path("/home/surveys") / name, tag).name
    assert name_error(work) is not None and is_internal(work)
    if name_error(name) is None:
        assert not is_internal(name)


def test_names_seisd_refuses() -> None:
    for bad in (".g.partial", "", "a/b", "..", "a..b", "-x", "_x", "x" * 101, "é"):
        assert name_error(bad) is not None, bad
    for good in ("g.partial", "f3", "F3_v2-final.1", "0"):
        assert name_error(good) is None, good


def _in_time(fn, seconds: float = 5.0):
    """fn() in a thread; fails the test instead of hanging when it blocks."""
    out: dict = {}

    def run() -> None:
        try:
            out["r"] = fn()
        except Exception as exc:  # noqa: BLE001 - raised again in the test's thread
            out["e"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "blocked"
    if "e" in out:
        raise out["e"]
    return out.get("r")


def test_fifos_devices_and_folders_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "p.pts"
    os.mkfifo(fifo)
    assert "is a FIFO (named pipe), not a regular file" in _in_time(lambda: regular_file_problem(fifo))
    assert "is a character device" in _in_time(lambda: regular_file_problem("/dev/zero"))
    assert "is a folder" in regular_file_problem(tmp_path)
    assert "does not exist" in regular_file_problem(tmp_path / "none")
    link = tmp_path / "link.pts"
    link.symlink_to(fifo)
    with pytest.raises(UnreadableFile, match="FIFO"):
        _in_time(lambda: open_regular(link))


def test_a_regular_file_reads_whole_and_blocks_nothing(tmp_path: Path) -> None:
    f = tmp_path / "a.pts"
    f.write_bytes(b"1 2 3\n" * 100_000)
    assert regular_file_problem(f) is None
    assert read_regular(f) == f.read_bytes()
    with open_regular(f) as fh:
        assert os.get_blocking(fh.fileno())  # O_NONBLOCK cleared once the file is known to be regular
        assert fh.read(6) == b"1 2 3\n"
