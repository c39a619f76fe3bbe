"""seisctl submit | jobs | show | watch | cancel | logs | workers | stop-after-epoch."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from client import protocol as P
from client.cli._common import EXIT_OK, EXIT_USAGE, Command, Out, _table, client_of, command
from client.cli._follow import follow, submit_and_follow


@command
class Submit(Command):
    """Submit a YAML job file. A file that cannot be read, is not YAML, is not a mapping, or holds a value JSON
    cannot carry (a YAML date, `.nan`, `.inf`: the key is named) is refused by seisctl itself, exit 2. A job the
    daemon refuses prints every problem, exit 2. The submit carries an idempotency key: when no reply comes within
    --timeout it is sent once more with the same key, so a lost reply never queues the job twice."""

    name, help = "submit", "submit a job file (YAML); waits with a progress bar unless --detach"
    runs_job = True

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("file")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        try:
            job = load_job_file(Path(a.file))
        except JobFileError as exc:
            print(f"seisctl: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if not isinstance(job, dict):
            print(f"seisctl: {a.file} must hold a mapping of keys (kind: ..., ...)", file=sys.stderr)
            return EXIT_USAGE
        bad = _unsendable(job)
        if bad:
            print(f"seisctl: {a.file}: {bad[0]}: {bad[1]} cannot go in a job file; quote dates and times, and use "
                  "finite numbers", file=sys.stderr)
            return EXIT_USAGE
        return submit_and_follow(a, out, job)


MAX_JOB_FILE_BYTES = 1 << 20     # a job file is a page of YAML; anything bigger is a mistake
MAX_JOB_VALUES = 100_000         # values in the job once YAML's aliases are expanded (a "billion laughs" guard)


class JobFileError(ValueError):
    """A job file seisctl will not send: its message names the file and the problem."""


def load_job_file(path: Path) -> Any:
    """Read a YAML job file: text only, at most MAX_JOB_FILE_BYTES, and at most MAX_JOB_VALUES values once its
    aliases are expanded (counted without expanding them, so a hostile file cannot spin the CPU)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_JOB_FILE_BYTES + 1)
    except OSError as exc:
        raise JobFileError(f"cannot read job file {path}: {exc.strerror}") from None
    if len(data) > MAX_JOB_FILE_BYTES:
        raise JobFileError(f"{path} is larger than {MAX_JOB_FILE_BYTES >> 20} MiB: not a job file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobFileError(f"{path} is not a text file (byte {exc.start} is not UTF-8): a job file is YAML text") \
            from None
    if "\x00" in text:
        raise JobFileError(f"{path} holds NUL bytes: a job file is YAML text")
    try:
        job = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobFileError(f"{path} is not valid YAML: {exc}") from None
    try:
        n = _expanded_size(job, {})
    except JobFileError as exc:
        raise JobFileError(f"{path}: {exc}") from None
    if n > MAX_JOB_VALUES:
        raise JobFileError(f"{path} expands to {n:,} values through YAML aliases (at most {MAX_JOB_VALUES:,}): "
                           "not a job file")
    return job


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """How many values `value` holds when every alias is written out; each shared object is counted once."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key not in memo:
        memo[key] = -1  # being counted: meeting it again means the value contains itself
        children = value.values() if isinstance(value, dict) else value
        memo[key] = 1 + sum(min(_expanded_size(c, memo), 10 ** 12) for c in children)
    elif memo[key] < 0:
        raise JobFileError("the job file holds a YAML alias that contains itself: not a job file")
    return memo[key]


def _unsendable(value: Any, path: str = "") -> tuple[str, str] | None:
    """The key path of the first value JSON cannot carry (YAML dates, .nan, .inf), or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = _unsendable(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
        return None
    if isinstance(value, list):
        return next((f for i, v in enumerate(value) if (f := _unsendable(v, f"{path}.{i}"))), None)
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)", repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return path or "(top level)", f"a {type(value).__name__} ({value})"


@command
class Jobs(Command):
    """Newest first; `--state` repeatable, `--kind` a job kind, `--limit` default 50. `--json`: `{"jobs":
    [summary]}`."""

    name, help = "jobs", "list jobs"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", action="append", choices=P.JOB_STATES, help="only jobs in this state (repeatable)")
        p.add_argument("--kind")
        p.add_argument("--limit", type=int, default=50)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        rows = client_of(a).jobs(state=a.state, kind=a.kind, limit=a.limit)
        out.emit({"jobs": rows}, lambda: _table(
            ["ID", "KIND", "STATE", "PRIO", "PROGRESS", "SLOT", "NAME", "SUBMITTED", "ERROR"],
            [[r["id"], r["kind"], r["state"], r["priority"], f"{r['progress'] * 100:.0f}%", r["slot"] or "-",
              r["name"] or "-", time.strftime("%m-%d %H:%M:%S", time.localtime(r["created"])),
              (r["error"] or "")[:60]] for r in rows]))
        return EXIT_OK


class _OneJob(Command):
    """A command on one job: its id is the only argument."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("job", type=int)


@command
class Show(_OneJob):
    """One job with its history, latest metrics and result; `--json`: the `show` record."""

    name, help = "show", "one job in detail"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        j = client_of(a).show(a.job)

        def human() -> None:
            for key in ("id", "kind", "name", "state", "priority", "device", "slot", "progress", "message", "error",
                        "attempts", "dir"):
                value = j.get(key)
                if key == "progress":
                    value = f"{value * 100:.1f}%"
                print(f"{key:10} {value if value is not None else '-'}")
            print("history:")
            for h in j["history"]:
                print(f"  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(h['time']))}  {h['state']:11} "
                      f"{h['reason'] or ''}")
            if j.get("metrics"):
                print("latest metrics:")
                print("  " + yaml.safe_dump(j["metrics"], sort_keys=False, default_flow_style=None
                                            ).replace("\n", "\n  ").rstrip())
            if j.get("result"):
                print("result:")
                print("  " + yaml.safe_dump(j["result"], sort_keys=False).replace("\n", "\n  ").rstrip())
        out.emit(j, human)
        return EXIT_OK


@command
class Watch(_OneJob):
    """Follow a job until it ends (subscribes to its events first, then reads its state); exits with its outcome
    like `submit`. `--json`: the final `show` record."""

    name, help = "watch", "follow a job until it ends; exits with its outcome"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        return follow(client_of(a), a.job, out)


@command
class Cancel(_OneJob):
    """Cancel a queued or running job (`cancelled` at once, or `cancelling` for a running one); `--json`: `{"id",
    "state"}`; a job already cancelled answers `cancelled` again; one that succeeded or failed: exit 5
    (`conflict`)."""

    name, help = "cancel", "cancel a queued or running job"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).cancel(a.job)
        out.emit(r, lambda: print(f"job {a.job}: {r['state']}"))
        return EXIT_OK


@command
class Logs(Command):
    """Print the job's log (the daemon's lines and the job's). `-f`/`--follow` keeps printing until the job ends.
    `--json`: `{"id", "text", "offset"}`."""

    name, help = "logs", "print a job's log"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("job", type=int)
        p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        c = client_of(a)
        offset, chunks = 0, []
        while True:
            r = c.logs(a.job, offset=offset)
            if r["text"]:
                if out.json:
                    chunks.append(r["text"])
                else:
                    sys.stdout.write(r["text"])
                    sys.stdout.flush()
            offset = r["offset"]
            if r["offset"] < r["size"]:
                continue  # more to read now
            if not a.follow or r["state"] in P.TERMINAL_STATES:
                break
            time.sleep(0.5)
        out.emit({"id": a.job, "text": "".join(chunks), "offset": offset}, lambda: None)
        return EXIT_OK


@command
class Workers(Command):
    """Change the number of data worker processes of a running training job (the daemon takes 0..256, a training
    job 1..256). Prints `job 7: {'count': 3}`; `--json`: what the job answers, `{"count": 3}`. A count refused:
    exit 2; a job not running: exit 5."""

    name, help = "workers", "change the number of data workers of a running job"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("job", type=int)
        p.add_argument("count", type=int)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).workers(a.job, a.count)
        out.emit(r, lambda: print(f"job {a.job}: {r}"))
        return EXIT_OK


@command
class StopAfterEpoch(_OneJob):
    """The training job stops at the end of its current epoch, saving its checkpoint and model, and succeeds.
    `--json`: `{"stopping": true}`. A job not running: exit 5."""

    name, help = "stop-after-epoch", "a training job stops at the end of its epoch, saving its model"

    def run(self, a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).call("stop_after_epoch", id=a.job)
        out.emit(r, lambda: print(f"job {a.job} stops after its current epoch"))
        return EXIT_OK
