"""SEG-Y header scan: open a file, read every trace's inline/crossline/offset/coordinates and bin the traces into a grid.

segyio opens the file (endianness detected: big, then little; regular geometry first, then ``ignore_geometry=True``
so an irregular file can be told from a broken one) and checks that the file size is a whole number of traces. The
header fields are then read with numpy from blocks of trace records (a structured dtype over the raw bytes), read
sequentially. workers/segy_import.py streams the samples once the grid is known.

A file segyio reads as a regular sorted post-stack cube (every inline x crossline once, one offset) is not read
twice: its grid comes from segyio's line numbers (``SegyScan.provisional``), and the importer checks every trace's
inline/crossline against that grid and takes the coordinates while it streams the samples. A file that breaks the
promise (a trace out of place) raises ``ProvisionalGridError`` there and is imported again after a full scan.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import segyio

from workers.survey import Geometry

BYTES_PER_SAMPLE = {1: 4, 2: 4, 3: 2, 5: 4, 6: 8, 8: 1, 9: 8, 10: 4, 11: 2, 12: 8, 15: 3, 16: 1}
OFFSET_BYTE, SCALAR_BYTE, CDP_X_BYTE, CDP_Y_BYTE, TRACE_ID_BYTE = 37, 71, 181, 185, 29
BLOCK_BYTES = 4 << 20       # bytes of trace records read per step: bounds memory, stays in cache


class SegyImportError(ValueError):
    """A SEG-Y file that cannot be imported as a post-stack 3D survey; the message names the file and why."""


class ProvisionalGridError(Exception):
    """A trace is not where segyio's regular geometry puts it: the importer falls back to a full header scan."""


@dataclass
class SegyScan:
    """An opened SEG-Y with its traces binned into a grid."""

    f: segyio.SegyFile
    path: Path
    endian: str               # "big" or "little": headers and samples
    sample_format: int        # binary header bytes 3225-3226
    sorting: str
    geometry: Geometry
    keep: np.ndarray          # [n_traces] bool: traces that go into the volume (one offset)
    ii: np.ndarray            # [n_traces] inline index of each trace
    xx: np.ndarray            # [n_traces] crossline index of each trace
    coords: np.ndarray        # [n_traces, 2] cdp x/y with the scalar applied
    data_offset: int          # byte offset of the first trace header
    trace_bytes: int          # 240 + samples per trace * bytes per sample
    provisional: bool = False  # grid from segyio's geometry: check il/xl and fill coords while streaming
    fields: tuple[int, ...] = ()  # header bytes read by check_headers: inline, crossline, cdp x, cdp y, scalar

    def check_headers(self, a: int, b: int, records: np.ndarray) -> None:
        """For a provisional scan: check traces [a, b) lie where the grid says, and take their coordinates.

        ``records`` are the raw trace records of those traces (any structured dtype of itemsize trace_bytes).
        Raises ProvisionalGridError on the first trace out of place.
        """
        block = records.view(fields_dtype(self.fields, self.endian == "big", self.trace_bytes))
        il_axis, xl_axis = self.geometry.inlines, self.geometry.crosslines
        if not (np.array_equal(block["f0"], np.asarray(il_axis)[self.ii[a:b]])
                and np.array_equal(block["f1"], np.asarray(xl_axis)[self.xx[a:b]])):
            raise ProvisionalGridError(f"{self.path}: traces {a}..{b} are not in segyio's regular order")
        self.coords[a:b] = _coordinates(block["f2"], block["f3"], block["f4"])

    @property
    def traces(self) -> int:
        """Number of traces in the file (all offsets)."""
        return int(self.f.tracecount)


def fail(path: Path, why: str) -> SegyImportError:
    """The error for ``path``, with the file named in the message."""
    return SegyImportError(f"cannot import {path}: {why}")


def open_segy(path: Path, iline: int, xline: int, endian: str) -> tuple[segyio.SegyFile, str, bool]:
    """Open with segyio; returns (file, endian, regular). Irregular files come back with regular=False."""
    if not path.is_file():
        raise fail(path, "no such file")
    if path.stat().st_size <= 3600:
        raise fail(path, f"the file holds only {path.stat().st_size} bytes of headers and no traces")
    endians = ("big", "little") if endian == "auto" else (endian,)
    errors = []
    for ignore in (False, True):
        for e in endians:
            try:
                return segyio.open(str(path), "r", iline=iline, xline=xline, endian=e,
                                   ignore_geometry=ignore), e, not ignore
            except (RuntimeError, IndexError, ValueError) as exc:  # segyio's ways of saying "not this way"
                errors.append(f"{e}-endian{' unstructured' if ignore else ''}: {exc}")
    raise fail(path, "truncated or not a SEG-Y file (no endianness gives a consistent trace count); "
                     + "; ".join(errors[-len(endians):]))


def _line_axis(path: Path, values: np.ndarray, label: str, byte: int) -> np.ndarray:
    """Regular axis of line numbers covering ``values`` (step = gcd of the gaps; missing lines become dead)."""
    uniq = np.unique(values)
    step = int(np.gcd.reduce(np.diff(uniq))) if len(uniq) > 1 else 1
    n = (int(uniq[-1]) - int(uniq[0])) // step + 1
    if n > 100 * len(uniq) and n > 100_000:
        raise fail(path, f"{label} numbers (byte {byte}) {uniq[:5].tolist()}... do not form a grid; "
                         f"check the {label} byte position")
    return np.arange(int(uniq[0]), int(uniq[-1]) + 1, step, dtype=np.int64)


def _select_offset(path: Path, offsets: np.ndarray, offset: int | None) -> np.ndarray:
    uniq = np.unique(offsets)
    if offset is None:
        if len(uniq) > 1:
            raise fail(path, f"pre-stack data: {len(uniq)} offsets {uniq[:10].tolist()} (byte {OFFSET_BYTE}); "
                             "seisd imports post-stack volumes; pass offset=<one of them> to import a single offset")
        return np.ones(len(offsets), dtype=bool)
    if offset not in uniq:
        raise fail(path, f"offset {offset} is not in the file; its offsets are {uniq[:10].tolist()}")
    return offsets == offset


def _check_unique_positions(path: Path, ii: np.ndarray, xx: np.ndarray, nx: int, iline: int, xline: int) -> None:
    flat = ii * nx + xx
    uniq, counts = np.unique(flat, return_counts=True)
    if len(uniq) < len(flat):
        k = int(np.argmax(counts))
        raise fail(path, f"not a post-stack 3D grid: {len(flat) - len(uniq)} traces repeat an inline/crossline "
                         f"position (e.g. {int(counts[k])} traces at grid index {divmod(int(uniq[k]), nx)}) "
                         f"with inline byte {iline} and crossline byte {xline}; a shot gather or a wrong byte "
                         "position (pass iline=/xline=)")


def field_size(byte: int) -> int:
    """Width of the trace header field starting at ``byte`` (SEG-Y rev 1 table, 1-based)."""
    four = set(range(1, 29, 4)) | set(range(37, 69, 4)) | set(range(73, 89, 4)) | {181, 185, 189, 193, 197}
    return 4 if byte in four else 2


def trace_blocks(path: Path, data_offset: int, n: int, record: np.dtype, chunk: int,
                 buffers: int = 1) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first, end, records [end - first] of dtype ``record``) for every block of ``chunk`` traces, read in order.

    Plain sequential reads into ``buffers`` buffers used in turn (a block stays valid while the next
    ``buffers - 1`` are read): memory stays at that many blocks whatever the file size. Each block's successor is
    requested from the disk (WILLNEED) before the block is handed out, so a cold file streams while the caller
    converts.
    """
    raws = [np.empty((min(chunk, n), record.itemsize), dtype=np.uint8) for _ in range(buffers)]
    bufs = [raw.view(record)[:, 0] for raw in raws]  # fields may be out of order: readinto gets the uint8 buffer
    with open(path, "rb", buffering=0) as fh:
        os.posix_fadvise(fh.fileno(), data_offset, 0, os.POSIX_FADV_SEQUENTIAL)  # larger readahead window
        fh.seek(data_offset)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            # Ask for the next block now: the disk reads it while the caller converts and writes this one.
            ahead = data_offset + b * record.itemsize
            os.posix_fadvise(fh.fileno(), ahead, chunk * record.itemsize, os.POSIX_FADV_WILLNEED)
            raw, buf = raws[(a // chunk) % buffers], bufs[(a // chunk) % buffers]
            view = memoryview(raw[:b - a]).cast("B")
            got = 0
            while got < len(view):
                k = fh.readinto(view[got:])
                if not k:
                    raise fail(path, f"the file ended inside trace {a + got // record.itemsize}")
                got += k
            yield a, b, buf[:b - a]


def fields_dtype(bytes_: tuple[int, ...] | list[int], big: bool, trace_bytes: int) -> np.dtype:
    """A trace record with the header fields at 1-based byte positions ``bytes_`` named f0, f1, ..."""
    order = ">" if big else "<"
    return np.dtype({"names": [f"f{k}" for k in range(len(bytes_))],
                     "formats": [f"{order}i{field_size(b)}" for b in bytes_],
                     "offsets": [b - 1 for b in bytes_], "itemsize": trace_bytes})


def read_fields(path: Path, data_offset: int, n: int, trace_bytes: int, bytes_: list[int],
                big: bool) -> list[np.ndarray]:
    """Header fields (1-based byte positions) of every trace as int64, read block by block (bounded memory)."""
    record = fields_dtype(bytes_, big, trace_bytes)
    names = list(record.names)
    out = [np.empty(n, dtype=np.int64) for _ in bytes_]
    for a, b, block in trace_blocks(path, data_offset, n, record, max(1, BLOCK_BYTES // trace_bytes)):
        for arr, name in zip(out, names):
            arr[a:b] = block[name]
    return out


def _coordinates(x: np.ndarray, y: np.ndarray, scalar: np.ndarray) -> np.ndarray:
    """[n, 2] cdp x/y with the SEG-Y coordinate scalar applied (negative: divide, positive: multiply, 0: 1)."""
    s = np.where(scalar == 0, 1, scalar).astype(np.float64)
    factor = np.where(s < 0, 1.0 / np.abs(s), s)
    return np.stack([x * factor, y * factor], axis=1)


def _trace_layout(f: segyio.SegyFile, path: Path, ns: int) -> tuple[int, int]:
    """(offset of the first trace, bytes per trace), checked against the file size."""
    trace_bytes = 240 + ns * BYTES_PER_SAMPLE.get(int(f.bin[segyio.BinField.Format]), 4)
    data_offset = 3600 + 3200 * max(int(f.ext_headers), 0)
    if data_offset + f.tracecount * trace_bytes != path.stat().st_size:
        raise fail(path, f"file size {path.stat().st_size} does not match {f.tracecount} traces of "
                         f"{trace_bytes} bytes")
    return data_offset, trace_bytes


def _sorting(f: segyio.SegyFile, regular: bool) -> str:
    if not regular:
        return "unstructured"
    return {segyio.TraceSortingFormat.INLINE_SORTING: "inline",
            segyio.TraceSortingFormat.CROSSLINE_SORTING: "crossline"}.get(f.sorting, "unstructured")


def _sample_axis(f: segyio.SegyFile, samples: np.ndarray) -> tuple[float, float]:
    """(first sample, step) of the sample axis."""
    step = float(samples[1] - samples[0]) if len(samples) > 1 else max(f.bin[segyio.BinField.Interval], 1) / 1e3
    return float(samples[0]), step


def _provisional(f: segyio.SegyFile, path: Path, e: str, regular: bool, offset: int | None, unit: str,
                 iline: int, xline: int, data_offset: int, trace_bytes: int) -> SegyScan | None:
    """The grid of a regular sorted single-offset file from segyio's line numbers, or None when it has none.

    The traces' own headers are checked against it while the importer streams them (SegyScan.check_headers).
    """
    sorting = _sorting(f, regular)
    if sorting == "unstructured" or offset is not None or len(f.offsets) != 1:
        return None
    ilines, xlines = np.asarray(f.ilines, dtype=np.int64), np.asarray(f.xlines, dtype=np.int64)
    ni, nx = len(ilines), len(xlines)
    il_axis = _line_axis(path, ilines, "inline", iline)
    xl_axis = _line_axis(path, xlines, "crossline", xline)
    if len(il_axis) != ni or len(xl_axis) != nx or ni * nx != f.tracecount:
        return None
    rows, cols = np.divmod(np.arange(ni * nx, dtype=np.int64), nx if sorting == "inline" else ni)
    il_pos, xl_pos = np.searchsorted(il_axis, ilines), np.searchsorted(xl_axis, xlines)
    ii, xx = (il_pos[rows], xl_pos[cols]) if sorting == "inline" else (il_pos[cols], xl_pos[rows])
    samples = np.asarray(f.samples, dtype=np.float64)
    geometry = Geometry(tuple(il_axis), tuple(xl_axis), *_sample_axis(f, samples), len(samples), unit)
    return SegyScan(f, path, e, int(f.bin[segyio.BinField.Format]), sorting, geometry,
                    np.ones(ni * nx, dtype=bool), ii, xx, np.zeros((ni * nx, 2)), data_offset, trace_bytes,
                    provisional=True, fields=(iline, xline, CDP_X_BYTE, CDP_Y_BYTE, SCALAR_BYTE))


def scan_segy(path: Path, iline: int, xline: int, endian: str, offset: int | None, unit: str,
              full: bool = False) -> SegyScan:
    """Open ``path`` and bin its traces into a regular grid; the caller closes ``scan.f``.

    Unless ``full``, a regular sorted post-stack file gets a provisional grid (see the module doc) instead of a
    read of every header. Raises SegyImportError for truncated files, pre-stack data without ``offset``, repeated
    positions (shot gathers, wrong byte positions) and line numbers that form no grid.
    """
    f, e, regular = open_segy(path, iline, xline, endian)
    try:
        n = f.tracecount
        if n == 0:
            raise fail(path, "the file has no traces")
        samples = np.asarray(f.samples, dtype=np.float64)
        data_offset, trace_bytes = _trace_layout(f, path, len(samples))
        quick = None if full else _provisional(f, path, e, regular, offset, unit, iline, xline, data_offset,
                                               trace_bytes)
        if quick is not None:
            return quick
        il, xl, off, cx, cy, sc = read_fields(path, data_offset, n, trace_bytes, [
            iline, xline, OFFSET_BYTE, CDP_X_BYTE, CDP_Y_BYTE, SCALAR_BYTE], e == "big")
        keep = _select_offset(path, off, offset)
        il_axis = _line_axis(path, il[keep], "inline", iline)
        xl_axis = _line_axis(path, xl[keep], "crossline", xline)
        ii = np.searchsorted(il_axis, il)
        xx = np.searchsorted(xl_axis, xl)
        _check_unique_positions(path, ii[keep], xx[keep], len(xl_axis), iline, xline)
        geometry = Geometry(tuple(il_axis), tuple(xl_axis), *_sample_axis(f, samples), len(samples), unit)
        return SegyScan(f, path, e, int(f.bin[segyio.BinField.Format]), _sorting(f, regular), geometry, keep, ii,
                        xx, _coordinates(cx, cy, sc), data_offset, trace_bytes)
    except BaseException:
        f.close()
        raise
