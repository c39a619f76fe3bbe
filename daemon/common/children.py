"""How the daemon's children end, in words: one wording of exit statuses for executors, viewers and the rest."""
from __future__ import annotations

import signal


def exit_reason(code: int) -> str:
    """A process exit status in words."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
