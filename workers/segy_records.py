"""Reading the trace records of a SEG-Y file: block by block, as numpy structured arrays over the raw bytes.

workers/segy_scan.py reads header fields with it (``read_fields``), workers/segy_import.py streams the samples
(``trace_blocks``). Errors are SegyImportError naming the file (``fail``).
"""
from __future__ import annotations

import functools
import mmap
import os
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from workers.regular_files import UnreadableFile, open_regular

__all__ = ["BLOCK_BYTES", "SegyImportError", "fail", "field_size", "fields_dtype", "read_fields",
           "trace_blocks"]

BLOCK_BYTES = 4 << 20       # bytes of trace records read per step by read_fields: bounds memory, stays in cache


class SegyImportError(ValueError):
    """A SEG-Y file that cannot be imported as a post-stack 3D survey; the message names the file and why. A fix that
    is an argument names it as `` `name: value` `` (a job's runner turns that into the job's key, seisctl into its
    flag)."""


def fail(path: Path, why: str) -> SegyImportError:
    """The error for ``path``, with the file named in the message."""
    return SegyImportError(f"cannot import {path}: {why}")


def field_size(byte: int) -> int:
    """Width of the trace header field starting at ``byte`` (SEG-Y rev 1 table, 1-based)."""
    four = set(range(1, 29, 4)) | set(range(37, 69, 4)) | set(range(73, 89, 4)) | {181, 185, 189, 193, 197}
    return 4 if byte in four else 2


def trace_blocks(path: Path, data_offset: int, n: int, record: np.dtype, chunk: int,
                 buffers: int = 1) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first, end, records [end - first] of dtype ``record``) for every block of ``chunk`` traces, in order.

    NOTE [mapped reads]
      The file is memory-mapped and each block's pages are made present (MADV_POPULATE_READ) before it is
      yielded: the records are numpy views of the page cache, not copies in a buffer. read() of an F3-size file
      (1.3 GB) cost the importer about 0.5 s more kernel time than the mapping on this machine's VM (sys 0.9-1.4 s
      against 0.5-0.6 s), most of what separated the import from a plain read. The populate call waits for the
      disk in whoever advances this generator (the importer's reader thread). After it, the file's size is
      checked: a file cut short names the trace where it ends (a page past the end would read as zeros, and a
      view past it would be a SIGBUS). A file cut between a block's check and its decode can still kill the
      process; the daemon then fails or retries the job, and the retry's scan names the short file.
      Where the file cannot be mapped or the kernel has no MADV_POPULATE_READ (before Linux 5.14), the blocks
      are plain sequential reads into ``buffers`` buffers used in turn (a block stays valid while the next
      ``buffers - 1`` are read). The kernel's own readahead streams a cold file either way; asking for more
      (POSIX_FADV_SEQUENTIAL plus WILLNEED of the next block) measured half as fast (tools/bench_import.py).
    """
    mapped = _mapping(path, data_offset + n * record.itemsize)
    if mapped is None:
        yield from _read_blocks(path, data_offset, n, record, chunk, buffers)
        return
    fh, view = mapped
    size = record.itemsize
    with fh:
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            first, end = data_offset + a * size, data_offset + b * size
            start = first - first % mmap.PAGESIZE
            try:
                view.madvise(MADV_POPULATE_READ, start, end - start)
            except OSError as exc:
                problem = exc
            else:
                problem = None
            length = os.fstat(fh.fileno()).st_size  # after the populate: a page past the end reads as zeros
            if length < end:
                raise fail(path, f"the file ended inside trace {a + max(0, length - first) // size}")
            if problem is not None:
                raise fail(path, f"reading trace {a} failed ({problem.strerror})") from None
            yield a, b, np.frombuffer(view, dtype=record, count=b - a, offset=first)


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14; Python 3.11's mmap lacks the name


def _mapping(path: Path, end: int) -> tuple[BinaryIO, mmap.mmap] | None:
    """The open file and its whole mapping (read-only), or None where mapping or populating it is not possible
    here (an empty file, no mmap, no populate: the caller then reads). The mapping lives as long as the record
    views taken from it; the file is kept open to see its size after each populate."""
    if not hasattr(mmap.mmap, "madvise"):
        return None
    try:
        fh = open_regular(path)
    except UnreadableFile:
        return None  # the read path names the problem
    try:  # a file shorter than `end` is mapped too: the block loop names the trace where it ends
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view.madvise(MADV_POPULATE_READ, 0, min(end, mmap.PAGESIZE))
    except (OSError, ValueError):
        fh.close()
        return None  # empty, no mmap (some FUSE files), no populate (EINVAL before Linux 5.14): read instead
    return fh, view


def _read_blocks(path: Path, data_offset: int, n: int, record: np.dtype, chunk: int,
                 buffers: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """trace_blocks by plain sequential reads (see NOTE [mapped reads])."""
    raws = [np.empty((min(chunk, n), record.itemsize), dtype=np.uint8) for _ in range(buffers)]
    bufs = [raw.view(record)[:, 0] for raw in raws]  # fields may be out of order: readinto gets the uint8 buffer
    with open(path, "rb", buffering=0) as fh:
        fh.seek(data_offset)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            raw, buf = raws[(a // chunk) % buffers], bufs[(a // chunk) % buffers]
            view = memoryview(raw[:b - a]).cast("B")
            got = 0
            while got < len(view):
                k = fh.readinto(view[got:])
                if not k:
                    raise fail(path, f"the file ended inside trace {a + got // record.itemsize}")
                got += k
            yield a, b, buf[:b - a]


@functools.lru_cache(maxsize=32)
def fields_dtype(bytes_: tuple[int, ...], big: bool, trace_bytes: int) -> np.dtype:
    """A trace record with the header fields at 1-based byte positions ``bytes_`` named f0, f1, ..."""
    order = ">" if big else "<"
    return np.dtype({"names": [f"f{k}" for k in range(len(bytes_))],
                     "formats": [f"{order}i{field_size(b)}" for b in bytes_],
                     "offsets": [b - 1 for b in bytes_], "itemsize": trace_bytes})


def read_fields(path: Path, data_offset: int, n: int, trace_bytes: int, bytes_: list[int],
                big: bool) -> list[np.ndarray]:
    """Header fields (1-based byte positions) of every trace as int64, read block by block (bounded memory)."""
    record = fields_dtype(tuple(bytes_), big, trace_bytes)
    names = list(record.names)
    out = [np.empty(n, dtype=np.int64) for _ in bytes_]
    for a, b, block in trace_blocks(path, data_offset, n, record, max(1, BLOCK_BYTES // trace_bytes)):
        for arr, name in zip(out, names):
            arr[a:b] = block[name]
    return out
