"""`seisd`: run the daemon in the foreground (seisctl daemon start runs this in the background)."""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

from client.protocol import default_home
from daemon import __version__
from daemon.common.home import daemon_log
from daemon.server.private import apply_umask, tighten_home

EXIT_WITH_POLL_S = 0.5   # how often --exit-with looks at its process


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="seisd", description="seisd: the seismic machine-learning training daemon. "
                                 "It runs in the foreground; `seisctl daemon start` starts it in the background.")
    ap.add_argument("--home", type=Path, help="home folder (default: $SEISD_HOME, else $XDG_DATA_HOME/seisd, "
                    "else ~/.local/share/seisd)")
    ap.add_argument("--config", type=Path, help="settings file overriding $SEISD_HOME/daemon.yaml")
    ap.add_argument("--print-defaults", action="store_true", help="print every setting with its default and exit")
    ap.add_argument("--check", action="store_true", help="validate the settings and exit")
    ap.add_argument("--exit-with", type=int, metavar="PID",
                    help="stop (as on SIGTERM) when process PID has ended: for a host application or a test run "
                         "that starts its own daemon and must not leave it behind if it dies")
    ap.add_argument("--version", action="version", version=f"seisd {__version__}")
    a = ap.parse_args(argv)

    from daemon.common.settings import SettingsError, defaults_yaml, load_settings

    if a.print_defaults:
        sys.stdout.write(defaults_yaml())
        return 0
    home = (a.home.expanduser().resolve() if a.home else default_home())
    apply_umask("owner")  # before anything is made; a `home_access: group` setting widens it once read
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        settings = load_settings(home, a.config)
    except SettingsError as exc:
        print(f"seisd: {exc}", file=sys.stderr)
        return 2
    if a.check:
        print(f"settings OK for home {home}")
        return 0
    watched = None
    if a.exit_with is not None:
        try:
            watched = psutil.Process(a.exit_with)
        except (psutil.NoSuchProcess, ValueError):
            print(f"seisd: --exit-with {a.exit_with}: no such process", file=sys.stderr)
            return 2
    apply_umask(settings.home_access)
    _setup_logging(home, settings.log_level)
    for line in tighten_home(home, settings.home_access):
        logging.getLogger("seisd").warning(line)

    from daemon.server.daemon import Daemon, DaemonError, install_signal_handlers

    try:
        d = Daemon(home, settings, a.config.resolve() if a.config else None)
    except (DaemonError, OSError, ValueError) as exc:
        logging.getLogger("seisd").error("cannot start: %s", exc)
        print(f"seisd: cannot start: {exc}", file=sys.stderr)
        return 1
    install_signal_handlers(d)
    if watched is not None:
        threading.Thread(target=_stop_when_ended, args=(watched, d.request_stop), name="seisd-exit-with",
                         daemon=True).start()
    d.run()
    return 0


def _stop_when_ended(proc: psutil.Process, request_stop: Callable[[str], None], every_s: float = EXIT_WITH_POLL_S
                     ) -> None:
    """Ask the daemon to stop once `proc` has ended: gone, a zombie, or its pid taken by a newer process (psutil
    compares start times). The stop is SIGTERM's: running jobs become interrupted and resume at the next start."""
    while True:
        try:
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        except psutil.AccessDenied:      # it exists; its state is not ours to read
            alive = True
        except Exception:                # keep watching: a daemon that never stops is the worse failure
            logging.getLogger("seisd").exception("--exit-with: cannot look at process %d", proc.pid)
            alive = True
        if not alive:
            request_stop(f"process {proc.pid} (--exit-with) has ended")   # the daemon logs it as it stops
            return
        time.sleep(every_s)


def _setup_logging(home: Path, level: str) -> None:
    log_file = daemon_log(home)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=20 << 20, backupCount=3)
    file_handler.setFormatter(fmt)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [file_handler, stream]
    root.setLevel(level.upper())


if __name__ == "__main__":
    sys.exit(main())
