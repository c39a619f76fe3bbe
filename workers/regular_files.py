"""Files a job names for reading (a SEG-Y, pick files, a user model, a script, a checkpoint): regular files only,
opened so that a FIFO or a device put in their place never blocks the job.

NOTE [why not open()]
  open() of a FIFO waits for a writer, forever if none comes; reading /dev/zero or /dev/urandom never ends and a
  terminal blocks: any of them would hold a job's slot until someone kills it. So the path is first stat'ed (a FIFO
  or a device is refused without being opened: opening some devices acts on them), then opened with O_NONBLOCK (a
  FIFO swapped in after the stat opens at once instead of waiting for a writer) and checked again with fstat on what
  was actually opened; only a regular file gets its O_NONBLOCK cleared and is handed on. A reader that opens the
  file itself again later (segyio, h5py) has only the moment between the two opens to be fooled, not the time the
  job waited in the queue.
"""
from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "folder"), (stat.S_ISSOCK, "socket"))


class UnreadableFile(ValueError):
    """A file a job names that is missing, unreadable or not a regular file; the message names it and why."""


def _not_regular(path: str | os.PathLike, mode: int) -> UnreadableFile:
    kind = next((name for test, name in _KINDS if test(mode)), "special file")
    return UnreadableFile(f"{path} is a {kind}, not a regular file; name the file itself")


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """`path` opened for reading in binary, refused with UnreadableFile unless it is a regular file (symbolic links
    are followed). The caller closes it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnreadableFile(f"{path} does not exist") from None
    except OSError as exc:
        raise UnreadableFile(f"{path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableFile(f"{path} does not exist") from None
    except OSError as exc:
        raise UnreadableFile(f"{path} cannot be read: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped between the stat and the open
            raise _not_regular(path, mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a job's input file (None when it can): missing, unreadable, or not a regular
    file. It is opened (without blocking) and closed again."""
    try:
        open_regular(path).close()
    except UnreadableFile as exc:
        return str(exc)
    return None


def read_regular(path: str | os.PathLike) -> bytes:
    """The whole content of a regular file (UnreadableFile otherwise)."""
    with open_regular(path) as fh:
        return fh.read()


def check_regular(path: str | os.PathLike) -> Path:
    """`path` as a Path once it opens as a regular file (for readers that open it themselves right after)."""
    open_regular(path).close()
    return Path(path)
