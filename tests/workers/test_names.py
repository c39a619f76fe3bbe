"""Names in a home (workers/names.py)."""
from __future__ import annotations

from pathlib import Path

from hypothesis import given, strategies as st

from workers.names import USER_NAME, is_internal, name_error, work_path


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
