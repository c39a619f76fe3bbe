"""Start a daemon in the background and return once it answers (`seisctl daemon start`, tests, tools)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from client import protocol as P
from client.api import Client, DaemonUnavailable


class DaemonStartError(RuntimeError):
    """The daemon exited or did not answer; the message carries the end of its output."""


def start_daemon(home: str | Path | None = None, config: str | Path | None = None, wait_s: float = 60.0,
                 env: dict[str, str] | None = None, exit_with: int | None = None) -> dict[str, Any]:
    """Start `seisd` detached from this terminal (its own session), logging to HOME/logs/seisd.out. exit_with: a
    process id whose end stops the daemon (`seisd --exit-with`), e.g. the host application's own. A daemon already
    running for the home is left as it is (`already_running` true): it was not started with exit_with."""
    home_path = Path(home).expanduser().resolve() if home else P.default_home()
    c = Client(home=home_path, timeout=1.0)
    try:
        s = c.status()
        return {"already_running": True, "pid": s["pid"], "home": s["home"], "session": s["session"]}
    except DaemonUnavailable:
        pass
    (home_path / "logs").mkdir(parents=True, exist_ok=True)
    out_path = home_path / "logs" / "seisd.out"
    cmd = [sys.executable, "-m", "daemon.server.main", "--home", str(home_path)]
    if config:
        cmd += ["--config", str(Path(config).resolve())]
    if exit_with is not None:
        cmd += ["--exit-with", str(exit_with)]
    with open(out_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env if env is not None else dict(os.environ))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise DaemonStartError(f"seisd exited with status {code} at start:\n{_tail(out_path)}")
        try:
            s = c.status()
            return {"already_running": False, "pid": s["pid"], "home": s["home"], "session": s["session"],
                    "log": str(out_path)}
        except DaemonUnavailable:
            time.sleep(0.1)
    proc.kill()
    raise DaemonStartError(f"seisd did not answer within {wait_s:g} s; its output:\n{_tail(out_path)}")


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no output)"
