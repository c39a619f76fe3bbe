"""What of seisd's files others may see: the process umask, the home's modes, the private runtime folder.

`home_access` (settings): 'owner' gives umask 077 (folders 0700, files 0600), 'group' umask 027 (0750, 0640). The
owner's umask is set first thing in `seisd` (daemon/server/main.py), before the home, the log or the database is
made, and the setting's once it is read; every process the daemon starts inherits it, so a job's outputs are as
private. A home, database or log found looser than the setting allows (made by an older seisd, by seisctl under the
user's own umask, or by hand) is tightened at start, with a warning naming the path and both modes: tightened
rather than only warned about, because a home others can read exposes every survey, model and key in it, and
nothing of seisd needs more. Nothing is ever loosened: 'group' on a 0700 home leaves it 0700.

The runtime folder (the ipc sockets; its path is public, client.protocol.runtime_dir) is in a shared /tmp when
XDG_RUNTIME_DIR is unset, where another local user can plant something first. `make_private_dir` opens it with
O_NOFOLLOW | O_DIRECTORY and checks and fixes what it opened (fstat, fchmod): a symbolic link is refused, never
followed, and so is a file or another user's folder.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from daemon.common import home as layout
from daemon.server.records import DaemonError

UMASKS = {"owner": 0o077, "group": 0o027}


def apply_umask(access: str) -> None:
    """The umask of `home_access` for this process and all it starts."""
    os.umask(UMASKS[access])


def tighten_home(home: Path, access: str) -> list[str]:
    """Take from the home, its database and logs the permissions `access` does not give; one line per change."""
    mask = UMASKS[access]
    db = layout.database(home)
    logs = layout.logs_folder(home)
    paths = [home, db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), layout.lock_file(home), logs]
    try:
        paths += sorted(p for p in logs.iterdir())
    except OSError:
        pass
    lines = []
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & mask:  # a link's own mode means nothing
            continue
        old, new = stat.S_IMODE(st.st_mode), stat.S_IMODE(st.st_mode) & ~mask
        try:
            os.chmod(p, new)
        except OSError as exc:
            lines.append(f"{p} has mode {oct(old)}, readable by others, and cannot be tightened: {exc}")
            continue
        lines.append(f"tightened {p} from {oct(old)} to {oct(new)} (home_access: {access})")
    return lines


def make_private_dir(path: Path) -> None:
    """Create the runtime folder with mode 0700, or refuse one that is a symbolic link, not a folder, or another
    user's; a looser mode of our own folder is tightened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise DaemonError(_not_a_private_dir(path, exc)) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise DaemonError(f"{path} belongs to uid {st.st_uid}, not to you: refusing to put sockets there")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _not_a_private_dir(path: Path, exc: OSError) -> str:
    fix = "remove it if it is yours, or set XDG_RUNTIME_DIR to a folder only you can write"
    if path.is_symlink():
        return (f"the runtime folder {path} is a symbolic link (to {os.readlink(path)}): refusing to follow it and "
                f"put sockets where it points; {fix}")
    if path.exists():
        return f"the runtime folder {path} is not a folder: refusing to use it; {fix}"
    return f"cannot open the runtime folder {path}: {exc}"
