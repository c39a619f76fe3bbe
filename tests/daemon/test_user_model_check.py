"""The submit-time check of a user model file leaves nothing behind: a file that starts processes at import and then
hangs past the check's time limit, or exits, has its whole family killed, including a grandchild in a session of
its own (which the check's process group does not reach)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from daemon.kinds.user_model_check import check_user_model
from tests.harness import pid_alive, wait_for

# at import: one grandchild in the check's process group, one in a session of its own; then hang or exit
FORKING_MODEL = '''
import subprocess, sys, time
same = subprocess.Popen(["sleep", "1000"])
own = subprocess.Popen(["sleep", "1000"], start_new_session=True)
open({pids!r}, "w").write(f"{{same.pid}} {{own.pid}}")
if {hang!r}:
    time.sleep(1000)
sys.exit(3)

def build_model(in_channels, n_classes):
    raise AssertionError("never reached")
'''


@pytest.mark.parametrize("hang", [True, False], ids=["times-out", "exits"])
def test_the_check_leaves_no_grandchild_behind(tmp_path: Path, hang: bool) -> None:
    pids = tmp_path / "pids"
    model = tmp_path / "forking.py"
    model.write_text(FORKING_MODEL.format(pids=str(pids), hang=hang))
    try:
        problems = check_user_model(model, timeout_s=20)
        expected = "took more than 20 s" if hang else "crashed (exit 3)"
        assert len(problems) == 1 and expected in problems[0], problems
        same, own = (int(p) for p in pids.read_text().split())
        wait_for(lambda: not pid_alive(same), timeout=5, what=f"the grandchild {same} in the check's group to end")
        wait_for(lambda: not pid_alive(own), timeout=5, what=f"the grandchild {own} in its own session to end")
    finally:
        for pid in (pids.read_text().split() if pids.is_file() else []):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
