"""JobContext: what a running job sees of the world, inside an executor process.

A job's runner is `run(spec, ctx) -> dict`. It reports through the context (progress, metrics, log lines), checks
`ctx.cancelled` between units of work, and writes its files under `ctx.job_dir`. The context turns these calls into
messages (daemon/common/execproto.py) the executor's I/O thread sends to the daemon; the runner never touches a socket.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from daemon.common import execproto as E

PROGRESS_INTERVAL_S = 0.25   # progress events are coalesced to at most four a second
LOG_EVENTS_PER_S = 20        # log lines beyond this rate stay in the log file only


class JobCancelled(Exception):
    """Raised by `ctx.check_cancel()`; a runner may catch it to save a checkpoint, then re-raise."""


@dataclass
class JobContext:
    job_id: int
    kind: str
    job_dir: Path
    home: Path
    device: str                      # "cpu" or "cuda:N" as torch should see it inside this executor
    attempt: int                     # 1 for the first run, 2 after one interruption ...
    resume: bool                     # True when an earlier attempt was interrupted: continue from checkpoints
    daemon_pid: int
    settings: Any
    send: Callable[[E.Message], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    cancel_cause: E.FailureCause = E.FailureCause.CANCELLED   # daemon_stopping when the daemon's exit asked it
    log: logging.Logger = field(init=False)
    _controls: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)
    _last_progress: float = 0.0
    _pending_progress: E.JobProgress | None = None
    _log_window: tuple[float, int] = (0.0, 0)

    def __post_init__(self) -> None:
        self.log = logging.getLogger(f"seisd.job.{self.job_id}")
        self.log.setLevel(logging.DEBUG)
        self.log.propagate = False

    # -- reporting ---------------------------------------------------------------------------------------------

    def progress(self, fraction: float, message: str | None = None, *, eta_s: float | None = None,
                 **fields: Any) -> None:
        """Report progress in [0, 1]; events are coalesced to a few a second, the last one always goes out, and so
        does each stage's last one: a held event whose `stage` field differs from this one's is sent first (a stage
        shorter than the interval, such as the teacher's prediction between two trainings, would vanish)."""
        # a message is text on the wire (a user script's progress file may hold a number there)
        msg = E.JobProgress(self.job_id, max(0.0, min(1.0, float(fraction))),
                            None if message is None else str(message), eta_s, fields)
        if self._pending_progress is not None and self._pending_progress.fields.get("stage") != fields.get("stage"):
            self.flush_progress()
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_S or msg.fraction >= 1.0:
            self._last_progress = now
            self._pending_progress = None
            self.send(msg)
        else:
            self._pending_progress = msg

    def flush_progress(self) -> None:
        if self._pending_progress is not None:
            self.send(self._pending_progress)
            self._pending_progress = None

    def metrics(self, **figures: Any) -> None:
        """Publish figures (loss, accuracy, worker statistics ...) as a job.metrics event."""
        self.send(E.JobMetrics(self.job_id, figures))

    def _log_event(self, level: str, message: str) -> None:
        start, count = self._log_window
        now = time.monotonic()
        if now - start >= 1.0:
            start, count = now, 0
        if count < LOG_EVENTS_PER_S:
            self.send(E.JobLog(self.job_id, level, message))
        self._log_window = (start, count + 1)

    # -- outputs outside the job folder -------------------------------------------------------------------------

    def begin_output(self, path: Path) -> None:
        """Record, before creating it, that this job makes `path` (a folder or file in the home) and has not
        finished it: if the job finally fails or is cancelled, the daemon removes it, so a half-made output never
        blocks its name (execproto.UNFINISHED_OUTPUTS). A retry or a resume after a daemon restart keeps it."""
        self._unfinished(add=path)

    def finish_output(self, path: Path) -> None:
        """`path` is complete: it stays whatever becomes of the job."""
        self._unfinished(remove=path)

    def _unfinished(self, add: Path | None = None, remove: Path | None = None) -> None:
        record = self.job_dir / E.UNFINISHED_OUTPUTS
        paths = json.loads(record.read_text())["paths"] if record.is_file() else []
        for p, keep in ((add, True), (remove, False)):
            if p is not None:
                rel = str(Path(p).relative_to(self.home))   # relative: the daemon may see the home elsewhere (Ray)
                paths = [q for q in paths if q != rel] + ([rel] if keep else [])
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps({"paths": paths}))
        os.replace(tmp, record)

    # -- control -----------------------------------------------------------------------------------------------

    def cancel(self, cause: E.FailureCause, reason: str) -> None:
        """Ask the job to stop (called from the executor's I/O thread): the runner sees it at its next check."""
        self.cancel_cause, self.cancel_reason = cause, reason
        self.cancelled.set()

    def check_cancel(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled(self.cancel_reason or "cancelled")

    def on_control(self, name: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        """Handle a control message sent to this running job (e.g. "workers" with {"count": N})."""
        self._controls[name] = handler

    def handle_control(self, name: str, args: dict[str, Any]) -> Any:
        handler = self._controls.get(name)
        if handler is None:
            raise KeyError(f"this {self.kind} job does not accept {name!r}")
        return handler(args)


class EventLogHandler(logging.Handler):
    """Forwards a job's log records at INFO and above as job.log events (rate-limited)."""

    def __init__(self, ctx: JobContext):
        super().__init__(logging.INFO)
        self.ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.ctx._log_event(record.levelname.lower(), record.getMessage())
        except Exception:  # a log line must never break the job
            self.handleError(record)
