"""A job as seisctl sends it: a YAML job file read with limits, values JSON can carry, and `--set key.path=value`.

`submit FILE` and `retry ID` both build a job here; the daemon checks its meaning.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

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


def unsendable(value: Any, path: str = "") -> tuple[str, str] | None:
    """The key path of the first value JSON cannot carry (YAML dates, .nan, .inf), or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = unsendable(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
        return None
    if isinstance(value, list):
        return next((f for i, v in enumerate(value) if (f := unsendable(v, f"{path}.{i}"))), None)
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)", repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    return path or "(top level)", f"a {type(value).__name__} ({value})"


def set_value(job: dict[str, Any], assignment: str) -> None:
    """Apply one `--set key.path=value` to `job`: the value read as YAML (`true`, `3`, `0.5`, `null`, `[15, 15]`,
    text), the key path through mappings (made when missing) and list indices (`sources.0.survey`)."""
    key, sep, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or not all(parts):
        raise JobFileError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. --set train.epochs=5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobFileError(f"--set {key}: {text!r} is not a YAML value ({exc.problem})") from None
    node: Any = job
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth]) or "the job"
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise JobFileError(f"--set {key}: {here} is a list of {len(node)}; {part!r} is not an index of it")
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            raise JobFileError(f"--set {key}: {here} is {node!r}, not a mapping with keys")
        if last:
            node[index] = value
        else:
            node = node[index]
