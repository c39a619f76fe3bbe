"""A daemon's message about a job, worded for how the user made the job: with seisctl's flags, or as a job file.

The daemon and its job kinds name a job key where a message suggests a fix in one form, a backquoted key path
with the value to give: `` `overwrite: true` ``, `` `segy.offset: N` ``; or a backquoted key path alone,
`` `picks.z_unit` ``. A refused job's problems each start with the key path they are about (`output: ...`).
The daemon does not know where a job came from; the command that made it does, and rewrites them for display:

- a command with flags (`survey import`, `predict` ...) declares which flag sets which key (`Command.keys`), and
  each key it knows is shown as that flag: `` `segy.offset: N` `` -> `--offset N`, `` `picks.drop_outside:
  true` `` -> `--drop-outside`, `output: a prediction ...` -> `--name: a prediction ...`;
- `submit FILE` keeps the key (the user edits the file) and adds the `--set` that does the same;
- `retry ID` (no file) shows the `--set`.

`--json` output is never rewritten: a script gets the daemon's words.
"""
from __future__ import annotations

import re

KEY = r"[A-Za-z_]\w*(?:\.\w+)*"
TOKEN = re.compile(rf"`(?P<key>{KEY})(?:: (?P<value>[^`]+))?`")
LEADING = re.compile(rf"^(?P<key>{KEY}): ")


def bare(key: str) -> str:
    """A key path without its list indices (`sources.0.survey` -> `sources.survey`), as commands declare them."""
    return ".".join(p for p in key.split(".") if not p.isdigit())


def as_flags(text: str, flags: dict[str, str]) -> str:
    """`text` with each key that `flags` maps shown as its flag. A flag is written as the user types it, `{}`
    standing for the value: `--offset {}`; `--drop-outside` (a switch: the value is its meaning); `FILE` (a
    positional argument)."""
    def flag(key: str, value: str | None) -> str | None:
        form = flags.get(bare(key))
        if form is None:
            return None
        return form.replace("{}", value).strip() if value else form.replace("{}", "").strip()

    def token(m: re.Match[str]) -> str:
        return flag(m["key"], m["value"]) or m[0]

    def leading(m: re.Match[str]) -> str:
        return f"{flag(m['key'], None) or m['key']}: "

    return TOKEN.sub(token, LEADING.sub(leading, text, count=1))


def as_set_options(text: str, keep_keys: bool) -> str:
    """`text` with each `` `key: value` `` shown as the `--set key=value` that gives it (after the key itself
    when `keep_keys`, for a job file the user may edit instead)."""
    def token(m: re.Match[str]) -> str:
        if m["value"] is None:
            return m[0]
        option = f"--set {m['key']}={m['value'].replace(' ', '')}"
        return f"{m[0]} ({option})" if keep_keys else option

    return TOKEN.sub(token, text)
