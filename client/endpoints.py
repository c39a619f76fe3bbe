"""Where a daemon's sockets are: derived from its home folder, so a client of home H finds the daemon of home H.

docs/PROTOCOL.md section 1 states these rules for clients in other languages; tests/conformance/test_s1_endpoints.py
checks a daemon binds where they say, for the awkward environments too (a "~" in SEISD_HOME, a home that does not
exist yet, an empty XDG_DATA_HOME, a TMPDIR that is missing or ends in a slash).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def default_home() -> Path:
    """The home a client and a daemon use when none is given (PROTOCOL.md section 1, "The home"):

    $SEISD_HOME when set and non-empty, a leading "~" (alone or before "/") replaced by the user's home folder;
    else $XDG_DATA_HOME/seisd when XDG_DATA_HOME is an absolute path (the XDG rule: empty or relative is ignored);
    else <user's home folder>/.local/share/seisd. Then made absolute against the current folder, with symbolic
    links resolved (realpath; a part that does not exist yet is kept as written, "." and ".." applied).
    """
    env = os.environ.get("SEISD_HOME", "")
    if env:
        text = _expand_tilde(env)
    else:
        data = os.environ.get("XDG_DATA_HOME", "")
        text = os.path.join(data if data.startswith("/") else os.path.join(_user_home(), ".local", "share"), "seisd")
    return Path(text).resolve()


def _user_home() -> str:
    """$HOME when set and non-empty, else the password database's entry of this user."""
    home = os.environ.get("HOME", "")
    if home:
        return home
    import pwd

    return pwd.getpwuid(os.getuid()).pw_dir


def _expand_tilde(text: str) -> str:
    """"~" and "~/rest" name the user's home folder; "~user" is not expanded (it is a relative path)."""
    if text == "~" or text.startswith("~/"):
        return _user_home().rstrip("/") + text[1:] if text != "~" else _user_home()
    return text


def runtime_base() -> str:
    """Where runtime folders go: $XDG_RUNTIME_DIR, else $TMPDIR, the first that is an absolute path naming an
    existing folder; else /tmp. Trailing slashes are removed; the text is otherwise used as it is (no links
    resolved)."""
    for var in ("XDG_RUNTIME_DIR", "TMPDIR"):
        value = os.environ.get(var, "")
        if value.startswith("/") and os.path.isdir(value):
            return value.rstrip("/")
    return "/tmp"


def runtime_dir(home: Path) -> Path:
    """The private (0700) folder of a home's sockets: short enough for the ~100-byte Unix socket path limit.

    <runtime_base()>/seisd-<uid>-<first 12 hex of sha1(the resolved home, UTF-8)>.
    """
    digest = hashlib.sha1(str(Path(home).resolve()).encode("utf-8")).hexdigest()[:12]
    return Path(f"{runtime_base()}/seisd-{os.getuid()}-{digest}")


def control_endpoint(home: Path) -> str:
    """ROUTER endpoint for requests."""
    return f"ipc://{runtime_dir(home) / 'control.sock'}"


def events_endpoint(home: Path) -> str:
    """PUB endpoint for events."""
    return f"ipc://{runtime_dir(home) / 'events.sock'}"
