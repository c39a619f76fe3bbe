"""seisctl: the command-line client. Every command is a request over the same socket API anyone else uses.

Exit codes (docs/cli.md):
  0  success; for commands that wait for a job: it succeeded
  1  the job failed
  2  bad usage or input refused by the daemon (an invalid job file, a bad argument)
  3  no daemon answered (not running, wrong home, or a tcp key it does not accept)
  4  the job was cancelled
  5  the daemon answered with another error (not found, conflict, internal)
  6  the job was interrupted (the daemon stopped while watching); it resumes at the next start
  130 interrupted by Ctrl-C (the job goes on)
  141 stdout was closed early (`seisctl ... | head`): seisctl stops quietly, as a program killed by SIGPIPE

Each command is one class in the module of its group (daemon, jobs, data, models, viewer, keys): its name, help,
arguments and handler together (client.cli._common says how). This module builds the parser from them and
dispatches; client.cli.reference writes docs/cli.md's command reference from the same parser.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from client.launch import DaemonStartError
from client.api import DaemonUnavailable, SeisdError
from client.cli import daemon, data, jobs, keys, loop, models, shell, viewer  # noqa: F401  (each registers its commands)
from client.cli._common import (COMMANDS, EXIT_CANCELLED, EXIT_ERROR, EXIT_FAILED,  # noqa: F401
                                EXIT_INTERRUPTED, EXIT_NO_DAEMON, EXIT_OK, EXIT_USAGE, GROUPS, OUTCOME_EXIT, Command,
                                Out, job_options)
from client.cli._parser import Parser

EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a program the closed pipe killed

# docs/cli.md, after the global options table (client.cli.reference)
GLOBAL_DOC = """\
`--json` prints exactly one JSON document on stdout (for scripts): progress bars and notes are off, and errors are
printed as `{"error": {"code", "message", "details"}}` on stdout. `--home` defaults to `$SEISD_HOME`, else
`$XDG_DATA_HOME/seisd`, else `~/.local/share/seisd`. `--timeout` applies to each reply: with no daemon, the first
request waits this long before exit code 3.

Human output goes to stdout; progress bars, "job N queued" notes and errors go to stderr. A daemon's message that
names a job key as the fix (`` `segy.offset: N` ``) is shown with the flag of the command that made the job
(`survey import ... --offset N`); for `submit`, with the key and the `--set` that gives it (`--set
segy.offset=N`); for `retry`, with the `--set`. `--json` keeps the daemon's words. A mistyped command,
subcommand or choice is refused naming the closest one ("did you mean 'submit'?")."""

# The order of `seisctl --help`: a top-level command, or a group (its subcommands in the order they are registered)
ORDER = ["daemon", "submit", "retry", "jobs", "show", "watch", "cancel", "logs", "workers", "predict", "suggest",
         "stop-after-epoch", "models", "predictions", "viewer", "devices", "doctor", "survey", "picks", "examples",
         "keys", "completion"]


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="seisctl", description="Control a seisd daemon: jobs, devices, keys.")
    ap.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    ap.add_argument("--home", help="the daemon's home (default: $SEISD_HOME, else $XDG_DATA_HOME/seisd, else "
                    "~/.local/share/seisd)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    placed = set()
    for top in ORDER:
        if top in GROUPS:
            g = sub.add_parser(top, help=GROUPS[top].help).add_subparsers(dest="sub", required=True,
                                                                          metavar="SUBCOMMAND")
            members = [c for name, c in COMMANDS.items() if name.startswith(top + " ")]
            for c in members:
                _add_command(g, c.name.split(" ", 1)[1], c)
            placed.update(c.name for c in members)
        else:
            _add_command(sub, top, COMMANDS[top])
            placed.add(top)
    missing = set(COMMANDS) - placed
    assert not missing, f"commands not in ORDER: {sorted(missing)}"
    return ap


def _add_command(sub: Any, name: str, c: Command) -> None:
    p = sub.add_parser(name, help=c.help)
    c.add_arguments(p)
    if c.runs_job:
        job_options(p)
    p.set_defaults(command_=c)


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(build_parser().parse_args(argv))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the interpreter's exit
        return code
    except BrokenPipeError:
        # NOTE: the reader of stdout is gone (`seisctl ... | head`). Whatever was left to print is of no use; stdout
        # points at /dev/null from here so the interpreter's own flush at exit cannot fail again with a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


def _run(a: argparse.Namespace) -> int:
    out = Out(a.json)
    explain = a.command_.explain if not a.json else (lambda text: text)
    try:
        return a.command_.run(a, out)
    except DaemonUnavailable as exc:
        _error(out, "unavailable", exc.message)
        return EXIT_NO_DAEMON
    except SeisdError as exc:
        problems = (exc.details or {}).get("problems")
        details = {**exc.details, "problems": [explain(p) for p in problems]} if problems else exc.details
        _error(out, exc.code, explain(exc.message), details)
        return EXIT_USAGE if exc.code in ("invalid_job", "bad_args") else EXIT_ERROR
    except DaemonStartError as exc:
        _error(out, "daemon_start", str(exc))
        return EXIT_ERROR
    except BrokenPipeError:
        raise
    except OSError as exc:  # a home or file seisctl itself cannot create or read: named, not a traceback
        _error(out, "os_error", f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nseisctl: interrupted (the job, if any, goes on)", file=sys.stderr)
        return 130


def _error(out: Out, code: str, message: str, details: dict[str, Any] | None = None) -> None:
    if out.json:
        print(json.dumps({"error": {"code": code, "message": message, "details": details or {}}}))
        return
    problems = (details or {}).get("problems")
    if problems:
        print(f"seisctl: {code}: refused, {len(problems)} problem{'s' if len(problems) > 1 else ''}:",
              file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
    else:
        print(f"seisctl: {code}: {message}", file=sys.stderr)
