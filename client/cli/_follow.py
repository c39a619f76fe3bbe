"""Submitting a job and waiting for it with a progress bar: every command that runs a job goes through here."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from client import protocol as P
from client.api import Client, DaemonUnavailable
from client.cli._common import EXIT_ERROR, EXIT_NO_DAEMON, EXIT_OK, OUTCOME_EXIT, Out, _duration, client_of
from client.cli._progress import ProgressBar


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
    return follow(c, r["id"], out, a.command_.explain)


def follow(c: Client, job_id: int, out: Out, explain: Callable[[str], str] = lambda text: text) -> int:
    """Wait for the job with a progress bar; print its outcome (its error as `explain` words it) and exit with
    it."""
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
                               "message": ev.data.get("message") or job.get("message")}
                        bar.update(job)
                    elif ev.type == P.EventType.JOB_LOG and not out.json and bar.verbose:
                        bar.line(f"  {ev.data.get('message')}")
            job = c.show(job_id)
    except DaemonUnavailable:
        bar.done(None)
        print(f"seisctl: lost the daemon while watching job {job_id}; it resumes when the daemon starts again",
              file=sys.stderr)
        return EXIT_NO_DAEMON
    finally:
        sub.close(0)
    bar.done(job)
    out.emit(job, lambda: print(_outcome_line(job, explain)))
    return OUTCOME_EXIT.get(job["state"], EXIT_ERROR)


def _outcome_line(job: dict[str, Any], explain: Callable[[str], str]) -> str:
    took = (job["finished"] or time.time()) - (job["started"] or job["created"])
    line = f"job {job['id']} {job['state']} after {_duration(took)}"
    if job.get("error"):
        line += f": {explain(job['error'])}"
    return line
