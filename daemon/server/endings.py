"""The end of a job, beside the job lifecycle (daemon/server/lifecycle.py): the state change it records, the error of
a job whose executors kept dying, and the removal of the outputs a job that did not finish leaves half-made."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.common import execproto as E
from daemon.common.execproto import LOST_EXECUTOR_CAUSES
from daemon.common.execproto import FailureCause as C


@dataclass(frozen=True)
class Transition:
    """A state change of a job, as the store records it."""

    state: str
    reason: str | None
    cause: C | None = None
    error: str | None = None
    result: dict[str, Any] | None = None


def deaths_error(history: list[dict[str, Any]], text: str, cause: C | None, why_not: str) -> str:
    """The error of a job that fails because its executor died (`text`, with `cause`) and is not run again
    (`why_not`): every earlier death in its `history` (interruptions with a lost executor's cause), attempt by
    attempt, then this one."""
    lost = {c.value for c in LOST_EXECUTOR_CAUSES}
    deaths, attempt = [], 0
    for entry in history:
        if entry["state"] == "running":
            attempt += 1
        elif entry["state"] == "interrupted" and entry.get("cause") in lost:
            deaths.append(f"attempt {attempt}: {entry['reason']} [{entry['cause']}]")
    if not deaths:
        return f"{text.replace(' died: ', ' died while running the job: ', 1)}; not retried: {why_not}"
    deaths.append(f"attempt {attempt}: {text} [{cause.value if cause else None}]")
    return (f"the executor died while running the job, on each of its last {len(deaths)} attempts, and the job is "
            f"not retried again ({why_not}): " + "; ".join(deaths))


def remove_unfinished(home: Path, job_dir: Path) -> list[str]:
    """Remove what the job recorded as begun and unfinished (execproto.UNFINISHED_OUTPUTS: paths relative to the
    home, never outside it); returns what happened, in words, for the job's log."""
    record = job_dir / E.UNFINISHED_OUTPUTS
    try:
        paths = json.loads(record.read_text())["paths"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"its record of unfinished outputs ({record}) cannot be read ({exc}); nothing was removed"]
    lines = []
    for rel in paths:
        rel_path = Path(str(rel))
        if rel_path.is_absolute() or ".." in rel_path.parts or not rel_path.parts:
            lines.append(f"not removed: {rel!r} is not a path inside the home")
            continue
        target = home / rel_path
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        except OSError as exc:
            lines.append(f"its unfinished output {rel} could not be removed: {exc}")
            continue
        lines.append(f"removed its unfinished output {rel}: the job did not finish, and the name is free again")
    record.unlink(missing_ok=True)
    return lines
