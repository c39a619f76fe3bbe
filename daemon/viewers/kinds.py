"""The viewers seisd knows: their command lines, their arguments, and the URL they answer on.

  tensorboard  the TensorBoard program over the jobs' event files; args {jobs: [ids]} (default: all jobs)
  examples     the Bokeh example-set and survey viewer (pages /examples and /survey); args {} or
               {origins: ["host:port", ...]} extra browser origins allowed to open its websocket (see docs/viewers.md)
"""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from client.protocol import ErrorCode, ProtocolError


@dataclass(frozen=True)
class ViewerKind:
    name: str
    module: str                                         # run as python -m <module>
    check_args: Callable[[dict[str, Any]], dict[str, Any]]
    extra_argv: Callable[[dict[str, Any]], list[str]]

    def command(self, home: Path, address: str, port: int, parent_pid: int, args: dict[str, Any]) -> list[str]:
        """The viewer's command line."""
        return [sys.executable, "-m", self.module, "--home", str(home), "--host", address, "--port", str(port),
                "--parent-pid", str(parent_pid), *self.extra_argv(args)]


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_ARGS, message, {"problems": [message]})


def _only_keys(args: dict[str, Any], allowed: tuple[str, ...], viewer: str) -> None:
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise _bad(f"viewer {viewer!r} takes no argument(s) {unknown}; it takes {list(allowed) or 'none'}")


def _tensorboard_args(args: dict[str, Any]) -> dict[str, Any]:
    _only_keys(args, ("jobs",), "tensorboard")
    jobs = args.get("jobs")
    if jobs is None:
        return {}
    if not isinstance(jobs, list) or not all(isinstance(j, int) and not isinstance(j, bool) and j > 0
                                             for j in jobs):
        raise _bad(f"args.jobs must be a list of job ids (positive integers), got {jobs!r}")
    return {"jobs": sorted(set(jobs))} if jobs else {}


def _examples_args(args: dict[str, Any]) -> dict[str, Any]:
    _only_keys(args, ("origins",), "examples")
    origins = args.get("origins")
    if origins is None:
        return {}
    if not isinstance(origins, list) or not all(isinstance(o, str) and o and " " not in o for o in origins):
        raise _bad(f"args.origins must be a list of 'host:port' strings, got {origins!r}")
    return {"origins": origins}


KINDS: dict[str, ViewerKind] = {
    "tensorboard": ViewerKind("tensorboard", "daemon.viewers.run_tensorboard", _tensorboard_args,
                              lambda a: ["--jobs", *map(str, a["jobs"])] if a.get("jobs") else []),
    "examples": ViewerKind("examples", "daemon.viewers.run_bokeh", _examples_args,
                           lambda a: [f"--origin={o}" for o in a.get("origins", [])]),
}


def kind_of(name: str) -> ViewerKind:
    """The viewer kind called name; not_found names the ones there are."""
    if name not in KINDS:
        raise ProtocolError(ErrorCode.NOT_FOUND, f"no viewer {name!r}: the viewers are {', '.join(KINDS)}")
    return KINDS[name]


def url_host(address: str) -> str:
    """The host a browser uses for a server bound to address (a wildcard address means this machine's name)."""
    if address in ("0.0.0.0", "::", ""):
        return socket.getfqdn()
    return f"[{address}]" if ":" in address else address
