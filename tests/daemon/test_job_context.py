"""The executor's job context coalesces progress to a few events a second, and never drops a stage: a held event of
one stage goes out before the first event of the next (the teacher's prediction of a distil job lasts less than the
interval on a small survey and vanished from its progress)."""
from __future__ import annotations

from pathlib import Path

from daemon.common import execproto as E
from daemon.executor.context import JobContext


def _context(tmp_path: Path, sent: list[E.Message]) -> JobContext:
    return JobContext(job_id=7, kind="train", job_dir=tmp_path, home=tmp_path, device="cpu", attempt=1,
                      resume=False, daemon_pid=0, settings=None, send=sent.append)


def test_a_stage_shorter_than_the_interval_still_shows(tmp_path: Path) -> None:
    sent: list[E.Message] = []
    ctx = _context(tmp_path, sent)
    ctx.progress(0.1, "teacher: epoch 1/2", stage="teacher")          # the first goes out at once
    for step in range(50):                                             # within the interval: held, replaced
        ctx.progress(0.2 + step / 1000, f"teacher: epoch 2/2 step {step}", stage="teacher")
    ctx.progress(0.5, "distilling: predicting the survey", stage="predict")
    ctx.progress(0.6, "distilling: epoch 1/2", stage="distilling")
    ctx.flush_progress()
    messages = [m.message for m in sent if isinstance(m, E.JobProgress)]
    assert messages == ["teacher: epoch 1/2", "teacher: epoch 2/2 step 49", "distilling: predicting the survey",
                        "distilling: epoch 1/2"], messages


def test_progress_within_one_stage_is_coalesced(tmp_path: Path) -> None:
    sent: list[E.Message] = []
    ctx = _context(tmp_path, sent)
    for step in range(200):
        ctx.progress(step / 400, f"step {step}")
    ctx.progress(1.0, "done")                                          # the end always goes out
    messages = [m.message for m in sent if isinstance(m, E.JobProgress)]
    assert messages[0] == "step 0" and messages[-1] == "done" and len(messages) < 20, messages
