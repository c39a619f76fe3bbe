"""Writing rows of a survey file that the importer created: pwrite into space reserved up front.

workers/segy_import.py writes the float32 cache and the trace headers (a region of geometry.h5) a block of rows at
a time. Before the first row, the whole region is reserved with fallocate(2): the blocks are allocated at once as
unwritten extents (they read as zeros, as a sparse file does), so a full disk is an error naming the file before any
trace is read, and each later write only fills pages of blocks that exist. On ext4 that halves the kernel's time
per write (a sparse file makes every page of every write reserve its block: tools/bench_import.py's cold import).
Filesystems without fallocate (or systems without the call) write as before, allocating as they go.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

import numpy as np

__all__ = ["RowWriter", "reserve"]


def _libc_fallocate():
    """glibc's fallocate(2) wrapper, or None. Not os.posix_fallocate: where the filesystem has no fallocate, that
    one writes a byte into every block instead, slower than not reserving at all."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        call = libc.fallocate
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    call.restype = ctypes.c_int
    return call


_FALLOCATE = _libc_fallocate()


def reserve(fd: int, offset: int, length: int) -> bool:
    """Allocate the file's blocks for bytes [offset, offset + length) (mode 0: the size grows if need be, contents
    stay zeros). True if reserved; False where the filesystem or system cannot (nothing changed). Raises OSError
    for a full disk (ENOSPC) or a quota (EDQUOT)."""
    if _FALLOCATE is None or length <= 0:
        return False
    if _FALLOCATE(fd, 0, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        raise OSError(err, os.strerror(err))
    return False  # EOPNOTSUPP, ENOSYS, EINVAL...: write without a reservation


class RowWriter:
    """Writes rows of a [rows, width] memmap's file with pwrite: one call per run of consecutive rows.

    pwrite goes through the page cache, which is cheaper than faulting in fresh memmap pages 4 KiB at a time, and
    a full disk is an OSError naming the file (a store through a memory map would be a SIGBUS). Nothing waits for
    the disk here: the kernel writes the pages back while the import goes on reading (workers/survey.py's
    .unsynced markers say how that stays safe across a crash). The memmap's whole region is reserved first
    (``reserve``).
    """

    def __init__(self, target: np.memmap, width: int) -> None:
        self.path = str(target.filename)
        self.base, self.row_bytes = int(target.offset), width * target.itemsize
        self.fd = os.open(self.path, os.O_WRONLY)
        try:
            reserve(self.fd, self.base, int(target.nbytes))
        except OSError as exc:
            os.close(self.fd)
            raise self._named(exc) from exc

    def write(self, rows: np.ndarray, data: np.ndarray) -> None:
        """Row ``rows[i]`` gets ``data[i]``; sorted files give one run of consecutive rows, so one call."""
        if not len(rows):
            return
        breaks = (np.flatnonzero(np.diff(rows) != 1) + 1).tolist()
        for a, b in zip([0, *breaks], [*breaks, len(rows)]):
            self._pwrite(int(rows[a]), data[a:b])

    def _pwrite(self, row: int, block: np.ndarray) -> None:
        offset = self.base + row * self.row_bytes
        view = memoryview(np.ascontiguousarray(block)).cast("B")
        done = 0
        try:
            while done < len(view):  # pwrite may write less than asked
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as exc:
            raise self._named(exc) from exc

    def close(self) -> None:
        os.close(self.fd)

    def _named(self, exc: OSError) -> OSError:
        """The error with this file named (a full disk must say which file it was writing)."""
        return OSError(exc.errno, f"{exc.strerror} (writing {self.path})")
