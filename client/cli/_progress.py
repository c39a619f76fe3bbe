"""The progress of a job on stderr: a tqdm bar on a terminal, a few plain lines elsewhere, and an ETA that holds still.

On a terminal, tqdm draws one line that fits the terminal's width, read again at each redraw (a resized window
is followed). Anywhere else (a pipe, a file, a CI log) there are no carriage returns: a line when the progress
passes another tenth, or when the message changed and 10 s passed. When the job succeeds the bar shows 100%,
whatever the job last reported (a training job's last report comes before it saves its model).

NOTE on the ETA: a job's own `eta_s` comes from its momentary rate (a training job: the samples per second of
the last steps), which jumps when it validates, checkpoints or warms up (a user saw 2m12s, 57s, 1m48s, 29m30s
for one job). The ETA shown here is instead the remaining share at the rate of the progress seen over the last
30 s, counted from the job's first report of progress (the time it spends setting up before that says nothing of
its pace), and the time it points at moves only a share of the way towards each new estimate (an exponential
average with a 5 s time constant): it counts down steadily and follows a real change of pace within seconds.
Under a second left, or at 100%, no ETA is shown.
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

from client.cli._common import _duration

STEPS = 1000            # the bar's units: a tenth of a percent
WINDOW_S = 30.0         # the progress seen over this long gives the rate
MIN_SPAN_S = 1.0        # no ETA before progress was seen to advance over this long
TAU_S = 5.0             # time constant of the average of the finish time
LINE_EVERY_S = 10.0     # off a terminal: a line for a new message at most this often


class EtaEstimate:
    """The seconds left, from the progress seen over time (see the module's NOTE); None until it is known."""

    def __init__(self, clock: Any = time.monotonic):
        self.clock = clock
        self.seen: deque[tuple[float, float]] = deque()
        self.finish: float | None = None     # the averaged time the job should end, on `clock`
        self.last: float | None = None

    def update(self, fraction: float) -> None:
        now = self.clock()
        if self.seen and fraction < self.seen[-1][1]:  # progress went back (a new attempt): start again
            self.seen.clear()
            self.finish = None
        if fraction <= 0.0 or fraction >= 1.0:
            return  # before its first report the job is setting up; at 1 it is done
        if self.seen and fraction == self.seen[-1][1] and now - self.seen[-1][0] < WINDOW_S:
            return  # the same progress read again: the rate is measured between advances
        self.seen.append((now, fraction))
        while len(self.seen) > 2 and now - self.seen[1][0] > WINDOW_S:
            self.seen.popleft()
        (t0, f0), (t1, f1) = self.seen[0], self.seen[-1]
        if t1 - t0 < MIN_SPAN_S or f1 <= f0:
            return
        target = t1 + (1.0 - f1) * (t1 - t0) / (f1 - f0)
        if self.finish is None:
            self.finish = target
        else:
            self.finish += (target - self.finish) * (1.0 - math.exp(-(now - (self.last or now)) / TAU_S))
        self.last = now

    def seconds_left(self) -> float | None:
        """The seconds left; None when unknown, or under a second (a job's last steps, or one slower than its
        pace said: "ETA 0s" would be wrong either way)."""
        left = None if self.finish is None else self.finish - self.clock()
        return left if left is not None and left >= 1.0 else None


class ProgressBar:
    """A job's progress on `stream` (stderr): `update(job)` with each `show` record or progress event, `done(job)`
    with the final record; `enabled=False` (with --json) draws nothing."""

    def __init__(self, enabled: bool, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.eta = EtaEstimate()
        self.bar: tqdm | None = None
        self.verbose = False
        self.last_tenth, self.last_msg, self.last_line = -1, None, 0.0

    def _text(self, job: dict[str, Any]) -> tuple[float, str]:
        frac = min(1.0, max(0.0, float(job.get("progress") or 0.0)))
        final = job["state"] in ("succeeded", "failed", "cancelled", "interrupted")
        msg = str(job["state"] if final else job.get("message") or job["state"])
        left = self.eta.seconds_left() if job["state"] == "running" and frac < 1.0 else None
        return frac, msg + (f" ETA {_duration(left)}" if left is not None else "")

    def update(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if job["state"] == "running":
            self.eta.update(float(job.get("progress") or 0.0))
        frac, text = self._text(job)
        if self.tty:
            self._draw(frac, text)
            return
        tenth, now = int(frac * 10), time.monotonic()
        if tenth != self.last_tenth or (job.get("message") != self.last_msg and now - self.last_line >= LINE_EVERY_S):
            self.last_tenth, self.last_msg, self.last_line = tenth, job.get("message"), now
            print(f"{frac * 100:5.1f}% {text}", file=self.stream)

    def _draw(self, frac: float, text: str) -> None:
        if self.bar is None:
            from tqdm import tqdm  # here, not at the top: a tenth of every seisctl call's start, for a terminal's bar

            self.bar = tqdm(total=STEPS, file=self.stream, dynamic_ncols=True, leave=True, mininterval=0,
                            bar_format="{percentage:5.1f}%|{bar}| {desc}")
        self.bar.n = round(frac * STEPS)
        self.bar.set_description_str(text, refresh=False)
        self.bar.refresh()

    def line(self, text: str) -> None:
        """A line of text (a log line) above the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream)

    def done(self, job: dict[str, Any] | None = None) -> None:
        """The last state: 100% for a job that succeeded; then the bar's line is left as it is."""
        if not self.enabled:
            return
        if job is not None:
            final = {**job, "progress": 1.0} if job["state"] == "succeeded" else job
            frac, text = self._text(final)
            if self.tty:
                self._draw(frac, text)
            elif int(frac * 10) != self.last_tenth:
                print(f"{frac * 100:5.1f}% {text}", file=self.stream)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
