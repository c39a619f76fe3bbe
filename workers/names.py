"""Names in a home: the names users give things, and the names seisd keeps for its own work.

A user's name (survey, volume, pick set, example set, model, prediction) starts with a letter or a digit
(`USER_NAME`). Every name seisd makes for itself beside them (a survey folder being imported, a file being
written before it is renamed into place) starts with `INTERNAL`, a character no user name may start with, and is
made by `work_path`. So no name a user can give is ever one seisd writes, removes or renames for its own work,
whatever suffix either adds: importing survey `g` builds `.g.partial`, which no survey can be called, and a survey
called `g.partial` is never touched by it.

Listings skip internal names (`is_internal`): what an interrupted write left behind is never shown as an object.
The daemon checks names with `name_error` where they come from outside (daemon.kinds.data.name_problem).
"""
from __future__ import annotations

import re
from pathlib import Path

INTERNAL = "."  # the first character of every name seisd makes for itself; never the first of a user's name
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def name_error(name: str) -> str | None:
    """Why `name` cannot name a user's object (None when it can): it becomes a file or folder name."""
    if not isinstance(name, str) or not USER_NAME.fullmatch(name) or ".." in name:
        return (f"{name!r} is not a valid name (letters, digits, '_', '-', '.'; starting with a letter or a digit; "
                "at most 100 characters; no path separators or '..')")
    return None


def is_internal(name: str) -> bool:
    """Whether a file or folder name is one seisd made for its own work (not a user's object)."""
    return name.startswith(INTERNAL)


def work_path(target: Path, tag: str = "partial") -> Path:
    """Where `target` is built before it is renamed into place: `.<target name>.<tag>` beside it."""
    return target.with_name(f"{INTERNAL}{target.name}.{tag}")
