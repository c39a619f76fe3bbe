"""seisctl viewer start | restart | stop | status | logs."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from client.cli._common import EXIT_FAILED, EXIT_OK, Command, Out, client_of, command, group

group("viewer", "viewer servers: tensorboard, examples (example sets and surveys)",
      "An unknown name for `stop`, `status`, `logs`: exit 5 (`not_found`).")


def _viewer_line(v: dict[str, Any]) -> str:
    where = v.get("url") or "-"
    extra = f" ({v['reason']})" if v.get("reason") else ""
    return f"{v['name']}: {v['state']} {where} pid {v.get('pid') or '-'}{extra}"


class ViewerCommand(Command):
    """A `viewer.<op>` request; prints the viewer (or every viewer) as one line each."""

    def __init__(self, op: str, help: str, doc: str):
        self.op, self.name, self.help, self._doc = op, f"viewer {op}", help, doc

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        return self.show(a, out, client_of(a).call(f"viewer.{self.op}", name=getattr(a, "name", None)))

    def show(self, a: argparse.Namespace, out: Out, r: dict[str, Any]) -> int:
        if "viewers" in r:
            out.emit(r, lambda: [print(_viewer_line(v)) for v in r["viewers"]] or print("no viewers"))
        else:
            out.emit(r, lambda: print(_viewer_line(r)))
        return EXIT_OK


class ViewerStart(ViewerCommand):
    """`viewer start` and `viewer restart`: they take the viewer's arguments and wait until it answers."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", choices=["tensorboard", "examples"])
        p.add_argument("--job", type=int, action="append", help="tensorboard: only this job (repeatable; "
                       "default all jobs)")
        p.add_argument("--origin", action="append", metavar="HOST:PORT", help="examples: also accept pages "
                       "opened through this address (an SSH tunnel on another port; repeatable)")
        p.add_argument("--wait-s", type=float, default=60.0, help="wait until it answers (default 60 s; 0: "
                       "return at once)")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        c = client_of(a)
        args = {k: v for k, v in (("jobs", a.job), ("origins", a.origin)) if v}
        r = c.call(f"viewer.{self.op}", name=a.name, args=args or None)
        deadline = time.monotonic() + a.wait_s
        while r["state"] == "starting" and time.monotonic() < deadline:
            time.sleep(0.3)
            r = c.call("viewer.status", name=a.name)
        if r["state"] == "crashed":
            out.emit(r, lambda: print(_viewer_line(r) + f"\n  see `seisctl viewer logs {a.name}`"))
            return EXIT_FAILED
        return self.show(a, out, r)


class ViewerStatus(ViewerCommand):
    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", nargs="?")


command(ViewerStart(
    "start", "start a viewer (or get the running one) and print its URL",
    "Start a viewer (or get the running one) and wait until it answers (`--wait-s`, default 60 s; 0: return at "
    "once); prints `NAME: STATE URL pid PID (REASON)`. `--job N` (tensorboard, repeatable): only those jobs "
    "(default every job). `--origin HOST:PORT` (examples, repeatable): also accept pages opened through that "
    "address (an SSH tunnel on another port; docs/viewers.md). A viewer that crashed while starting: exit 1, "
    "with a pointer to `viewer logs`."))
command(ViewerStart("restart", "stop and start a viewer again",
                    "Stop and start again (new pid, same port when free); without `--job`/`--origin` it keeps the "
                    "last ones."))
command(ViewerCommand("stop", "stop a viewer (its log stays)", "Stop it (its log stays). `--json`: the viewer "
                      "object (docs/PROTOCOL.md, Viewers)."))
command(ViewerStatus("status", "one viewer, or all", "One viewer, or every viewer. `--json`: the viewer object, or "
                     "`{\"viewers\": [...]}` (docs/PROTOCOL.md, Viewers)."))


@command
class ViewerLogs(Command):
    """The viewer's whole log (every run appended), also after it stopped. `--json`: `{"name", "text",
    "offset"}`."""

    name, help = "viewer logs", "a viewer's log, also after it stopped"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name")

    def run(self, a: argparse.Namespace, out: Out) -> int:
        c, offset, chunks = client_of(a), 0, []
        while True:
            r = c.call("viewer.logs", name=a.name, offset=offset)
            chunks.append(r["text"])
            offset = r["offset"]
            if offset >= r["size"]:
                break
        text = "".join(chunks)
        out.emit({"name": a.name, "text": text, "offset": offset}, lambda: sys.stdout.write(text))
        return EXIT_OK
