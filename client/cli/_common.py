"""What every seisctl command shares: the command registry, exit codes, `Out`, the client, tables and durations.

A command is one class: its name, its help line, its arguments and its handler together, registered with
`@command` (the model is Circus's one class per command). Its docstring is the longer story for docs/cli.md
(markdown); it is not shown by --help.

    @command
    class Cancel(Command):
        '''Cancel a queued or running job ... exit 5 (`conflict`).'''
        name, help = "cancel", "cancel a queued or running job"

        def add_arguments(self, p: argparse.ArgumentParser) -> None:
            p.add_argument("job", type=int)

        def run(self, a: argparse.Namespace, out: Out) -> int:
            r = client_of(a).cancel(a.job)
            out.emit(r, lambda: print(f"job {a.job}: {r['state']}"))
            return EXIT_OK

A name with a space ("survey import") is a subcommand of a group; the group's own help line is registered with
`group(...)`. A command that runs a job sets `runs_job = True` (it gets --priority and --detach). Commands that
differ only in a parameter are instances of one class, e.g. `command(Info("survey info", HELP, "survey.info", DOC))`.
The order of `seisctl --help` is client.cli.ORDER, and a group's commands in the order they are registered.
"""
from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from client.api import Client

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_CANCELLED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 6
OUTCOME_EXIT = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED,
                "interrupted": EXIT_INTERRUPTED}


class Out:
    """Human output on stdout, or exactly one JSON document with --json."""

    def __init__(self, as_json: bool):
        self.json = as_json

    def emit(self, obj: Any, human: Callable[[], None]) -> None:
        if self.json:
            print(json.dumps(obj, indent=None, default=str))
        else:
            human()


class Command:
    """One seisctl command. Subclasses set `name` and `help`, and define `add_arguments` and `run`."""

    name: str = ""
    help: str = ""
    runs_job = False  # True: takes --priority and --detach (added after its own arguments)

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        """The command's arguments, in the order --help shows them."""

    def run(self, a: argparse.Namespace, out: Out) -> int:
        raise NotImplementedError

    @property
    def doc(self) -> str:
        """The command's section of docs/cli.md (markdown): an instance's `_doc`, else the class docstring."""
        doc = getattr(self, "_doc", None)
        return inspect.cleandoc((type(self).__doc__ or "") if doc is None else doc)


class Group:
    """A command group (`seisctl survey ...`): its help line and the docs/cli.md prose about the whole group."""

    def __init__(self, name: str, help: str, doc: str = ""):
        self.name, self.help, self.doc = name, help, doc


COMMANDS: dict[str, Command] = {}  # "survey import" -> its command, in registration order
GROUPS: dict[str, Group] = {}
C = TypeVar("C")


def command(cmd: C) -> C:
    """Register a command: a Command subclass (as a class decorator) or an instance."""
    obj = cmd() if isinstance(cmd, type) else cmd
    if not obj.name or obj.name in COMMANDS:
        raise ValueError(f"command {obj.name!r}: no name, or registered twice")
    COMMANDS[obj.name] = obj
    return cmd


def group(name: str, help: str, doc: str = "") -> Group:
    GROUPS[name] = Group(name, help, doc)
    return GROUPS[name]


class Info(Command):
    """One thing's record as YAML (`--json`: as JSON): `survey info NAME`, `models info NAME`."""

    def __init__(self, name: str, help: str, op: str, doc: str = ""):
        self.name, self.help, self.op, self._doc = name, help, op, doc

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).call(self.op, name=a.name)
        out.emit(r, lambda: print_yaml(r))
        return EXIT_OK


class Remove(Command):
    """Remove one thing by name: `survey rm NAME`, `models rm NAME`."""

    def __init__(self, name: str, help: str, op: str, noun: str, doc: str = ""):
        self.name, self.help, self.op, self.noun, self._doc = name, help, op, noun, doc

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        r = client_of(a).call(self.op, name=a.name)
        out.emit(r, lambda: print(f"removed {self.noun} {a.name}"))
        return EXIT_OK


def job_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs a job."""
    p.add_argument("--priority", type=int, help="higher runs first (default: the job file's, else 0)")
    p.add_argument("--detach", action="store_true", help="print the job id and return at once")


def given(**values: Any) -> dict[str, Any]:
    """The values the user gave (not None): what a job carries, so the daemon fills in its own defaults."""
    return {k: v for k, v in values.items() if v is not None}


def client_of(a: argparse.Namespace) -> Client:
    return Client(home=a.home, timeout=a.timeout)


def print_yaml(obj: Any) -> None:
    print(yaml.safe_dump(obj, sort_keys=False, default_flow_style=None).rstrip())


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
