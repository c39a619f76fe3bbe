"""Submitting a job and waiting for it with a progress bar: every command that runs a job goes through here."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from client import protocol as P
from client.api import Client, DaemonUnavailable
from client.cli._common import EXIT_ERROR, EXIT_NO_DAEMON, EXIT_OK, OUTCOME_EXIT, Out, _duration, client_of


def submit_and_follow(a: argparse.Namespace, out: Out, job: dict[str, Any]) -> int:
    """Submit; with --detach print the id, else wait with a progress bar and exit with the job's outcome. Every
    command that runs a job goes through here."""
    c = client_of(a)
    r = c.submit(job, priority=getattr(a, "priority", None))
    a.job_id = r["id"]
    if a.detach:
        out.emit(r, lambda: print(r["id"]))
        return EXIT_OK
    if not out.json:
        print(f"job {r['id']} queued ({job.get('kind')})", file=sys.stderr)
    return follow(c, r["id"], out)


def follow(c: Client, job_id: int, out: Out) -> int:
    bar = ProgressBar(enabled=not out.json)
    sub = c.subscribe(P.job_topic(job_id))
    try:
        job = c.show(job_id)
        while job["state"] not in P.TERMINAL_STATES and job["state"] != "interrupted":
            bar.update(job)
            if sub.poll(1000):
                while sub.poll(0):
                    frames = sub.recv_multipart()
                    if frames[0].decode() != P.job_topic(job_id):
                        continue
                    ev = P.Event.decode(frames)
                    if ev.type == P.EventType.JOB_PROGRESS:
                        job = {**job, "progress": ev.data.get("fraction", job["progress"]),
                               "message": ev.data.get("message") or job.get("message"),
                               "eta_s": ev.data.get("eta_s")}
                        bar.update(job)
                    elif ev.type == P.EventType.JOB_LOG and not out.json and bar.verbose:
                        bar.line(f"  {ev.data.get('message')}")
            fresh = c.show(job_id)
            job = {**fresh, "eta_s": job.get("eta_s")} if fresh["state"] == job["state"] else fresh
    except DaemonUnavailable:
        bar.done()
        print(f"seisctl: lost the daemon while watching job {job_id}; it resumes when the daemon starts again",
              file=sys.stderr)
        return EXIT_NO_DAEMON
    finally:
        sub.close(0)
    bar.done()
    out.emit(job, lambda: print(_outcome_line(job)))
    return OUTCOME_EXIT.get(job["state"], EXIT_ERROR)


def _outcome_line(job: dict[str, Any]) -> str:
    took = (job["finished"] or time.time()) - (job["started"] or job["created"])
    line = f"job {job['id']} {job['state']} after {_duration(took)}"
    if job.get("error"):
        line += f": {job['error']}"
    return line


class ProgressBar:
    """One updating line on a terminal; on a pipe, a line every 10% or when the message changes."""

    def __init__(self, enabled: bool, width: int = 30):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.width = width
        self.verbose = False
        self.last_decile = -1
        self.last_msg: str | None = None

    def update(self, job: dict[str, Any]) -> None:
        if not self.enabled:
            return
        frac = float(job.get("progress") or 0.0)
        msg = job.get("message") or job["state"]
        eta = job.get("eta_s")
        eta_s = f" ETA {_duration(eta)}" if eta else ""
        filled = int(frac * self.width)
        text = f"[{'#' * filled}{'.' * (self.width - filled)}] {frac * 100:5.1f}% {msg}{eta_s}"
        if self.tty:
            sys.stderr.write("\r" + text[:120].ljust(120))
            sys.stderr.flush()
        elif int(frac * 10) != self.last_decile or msg != self.last_msg:
            self.last_decile, self.last_msg = int(frac * 10), msg
            print(text, file=sys.stderr)

    def line(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 120 + "\r")
        print(text, file=sys.stderr)

    def done(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
