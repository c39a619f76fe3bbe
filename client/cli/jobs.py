"""seisctl submit | retry | jobs | show | watch | cancel | logs | workers | stop-after-epoch."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from client import protocol as P
from client.cli._common import EXIT_OK, EXIT_USAGE, Command, Out, _table, client_of, command, inline
from client.cli._follow import follow, submit_and_follow
from client.cli._jobfile import JobFileError, load_job_file, set_value, unsendable
from client.cli._keys import as_set_options
from client.retrain import RETRAIN_EPOCHS, RetrainError, from_model


def set_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", dest="assignments",
                   help="set a key of the job (repeatable), e.g. --set train.epochs=5; the value is read as YAML")


def _send(a: argparse.Namespace, out: Out, job: Any, where: str,
          announce: Callable[[dict[str, Any]], None] | None = None) -> int:
    """Apply --set to `job` (read from `where`), check that JSON can carry it, `announce` it, and submit it."""
    if not isinstance(job, dict):
        print(f"seisctl: {where} must hold a mapping of keys (kind: ..., ...)", file=sys.stderr)
        return EXIT_USAGE
    try:
        for assignment in a.assignments or []:
            set_value(job, assignment)
    except JobFileError as exc:
        print(f"seisctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bad = unsendable(job)
    if bad:
        print(f"seisctl: {where}: {bad[0]}: {bad[1]} cannot go in a job; quote dates and times, and use finite "
              "numbers", file=sys.stderr)
        return EXIT_USAGE
    if announce is not None:
        announce(job)
    return submit_and_follow(a, out, job)


@command
class Submit(Command):
    """Submit a YAML job file; `--set key.path=value` (repeatable) changes a key first (the value read as YAML:
    `--set train.epochs=5 --set output=m2 --set overwrite=true --set data.crop.size=[64,64]`; a list item by
    its index, `sources.0.survey`). A file that cannot be read, is not YAML, is not a mapping, or holds a value
    JSON cannot carry (a YAML date, `.nan`, `.inf`: the key is named) is refused by seisctl itself, exit 2. A job
    the daemon refuses prints every problem, exit 2; a fix that sets a key is shown as the key and as the `--set`
    that does it. The submit carries an idempotency key: when no reply comes within --timeout it is sent once more
    with the same key, so a lost reply never queues the job twice. A train job with `--from MODEL` starts from
    that model of the home: `train.init_from: models/MODEL.h5` and `train.mode: resume` (`--mode transfer` for a
    new class list), and the loop's retrain (client/retrain.py): 24 epochs added with a fresh optimiser, early
    stopping off, whatever the file says; `--set` changes them (docs/loop.md)."""

    name, help = "submit", "submit a job file (YAML); waits with a progress bar unless --detach"
    runs_job = True

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("file")
        set_options(p)
        p.add_argument("--from", dest="from_model", metavar="MODEL",
                       help="a train job: start from model MODEL of the home (train.init_from: models/MODEL.h5; "
                       "train.mode resume unless --mode says transfer)")
        p.add_argument("--mode", choices=["resume", "transfer"],
                       help="with --from: resume (the same classes; continue from its weights) or transfer")

    def explain(self, text: str) -> str:
        return as_set_options(text, keep_keys=True)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        try:
            job = load_job_file(Path(a.file))
        except JobFileError as exc:
            print(f"seisctl: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if a.from_model or a.mode:
            if not a.from_model or not isinstance(job, dict) or job.get("kind") != "train":
                print("seisctl: --from MODEL (with --mode) starts a train job from a model: give both a train job "
                      "file and --from", file=sys.stderr)
                return EXIT_USAGE
            try:
                from_model(job, a.from_model, a.mode or "resume")
            except RetrainError as exc:
                print(f"seisctl: {a.file}: {exc}", file=sys.stderr)
                return EXIT_USAGE
            return _send(a, out, job, a.file, lambda sent: _say_retrain(a.from_model, sent))
        return _send(a, out, job, a.file)


def _say_retrain(model: str, job: dict[str, Any]) -> None:
    """What `--from` made of the job, once --set has changed it (stderr: --json output stays one document)."""
    train = job.get("train") if isinstance(job.get("train"), dict) else {}
    stop = train.get("early_stop") if isinstance(train.get("early_stop"), dict) else {}
    print(f"seisctl: a retrain from {model}: train.mode {train.get('mode')}, train.epochs {train.get('epochs')}, "
          f"early stopping {'on' if stop.get('enabled') else 'off'} (--from's default: {RETRAIN_EPOCHS} epochs, "
          "off; docs/loop.md)", file=sys.stderr)


@command
class Retry(Command):
    """Submit job `job` again: the job as the daemon keeps it (`show`'s `spec`, every default filled in), with
    `--set key.path=value` changes (as `submit`). The new job gets a new id; the old one stays as it ended. Nothing
    is overwritten unless the job says so: retrying a train job whose model now exists is refused, naming the
    `--set overwrite=true` and `--set output=NEW` that would let it run."""

    name, help = "retry", "submit a job again by id (its spec from the daemon), with --set changes"
    runs_job = True

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("job", type=int)
        set_options(p)

    def explain(self, text: str) -> str:
        return as_set_options(text, keep_keys=False)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        spec = client_of(a).show(a.job)["spec"]
        return _send(a, out, spec, f"job {a.job}")


@command
class Jobs(Command):
    """Newest first. Filters: `--state` (repeatable), `--kind`, `--name` (the job's name; `*`, `?` and `[...]` match
    as in a shell: `--name 'f3*'`); `--limit` (default 50) counts the jobs that pass them. Every job has a name:
    its job file's `name`, else the daemon's (an import: its survey; an extract: its example set; a train job: its
    model; a predict job: its prediction; a custom job: its script's or notebook's file name). An unknown state
    or kind is refused naming the closest one and listing all, exit 2. `--json`: `{"jobs": [summary]}`."""

    name, help = "jobs", "list jobs (filters: --state, --kind, --name)"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", action="append", choices=P.JOB_STATES, help="only jobs in this state (repeatable)")
        p.add_argument("--kind", help="only jobs of this kind (import, extract, train, predict, custom ...)")
        p.add_argument("--name", metavar="PATTERN", help="only jobs whose name matches (shell wildcards)")
        p.add_argument("--limit", type=int, default=50)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        rows = client_of(a).jobs(state=a.state, kind=a.kind, name=a.name, limit=a.limit)
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
    """Change the number of data worker processes of a running training job (1..256). Prints what the job
    answers, `job 7: count: 3`; `--json`: as JSON, `{"count": 3}`. A count refused: exit 2; a job not running:
    exit 5."""

    name, help = "workers", "change the number of data workers of a running job"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("job", type=int)
        p.add_argument("count", type=int)

    def run(self, a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).workers(a.job, a.count)
        out.emit(r, lambda: print(f"job {a.job}: {inline(r)}"))
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
