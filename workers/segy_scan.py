"""SEG-Y header scan: open a file, read every trace's inline/crossline/offset/coordinates and bin the traces into a
grid.

segyio opens the file (endianness detected: big, then little; regular geometry first, then ``ignore_geometry=True``
so an irregular file can be told from a broken one) and checks that the file size is a whole number of traces. The
header fields are then read with numpy from blocks of trace records (a structured dtype over the raw bytes, read by
workers/segy_records.py). workers/segy_import.py streams the samples once the grid is known.

A file that looks like a complete sorted post-stack cube (every inline x crossline once, one offset) is not read
twice: its grid is guessed from a few dozen headers (``SegyScan.provisional``), and the importer checks every
trace's inline/crossline against that grid and takes the coordinates while it streams the samples. A file that
breaks the promise (a trace out of place, a second offset) raises ``ProvisionalGridError`` there and is imported
again after a full scan, which also gives the errors for files that cannot be imported.

Two binary header fields are checked before any of that, because a wrong value there shows up later as something
else: the sample format code (an unknown code made segyio read 4-byte IBM floats, and the misread headers looked
like pre-stack offsets) and the sample interval (segyio puts 4 ms where the file has none).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import segyio

from workers.regular_files import UnreadableFile, open_regular
from workers.segy_records import SegyImportError, fail, fields_dtype, read_fields
from workers.survey import Geometry

# The sample formats seisd reads (binary header bytes 3225-3226): code -> (name, bytes per sample). segyio's reader
# knows no more (it reads 3-byte integers, 7 and 15, as IBM floats), so every other code is refused.
SAMPLE_FORMATS = {1: ("IBM float", 4), 2: ("int32", 4), 3: ("int16", 2), 5: ("IEEE float32", 4), 6: ("float64", 8),
                  8: ("int8", 1), 9: ("int64", 8), 10: ("uint32", 4), 11: ("uint16", 2), 12: ("uint64", 8),
                  16: ("uint8", 1)}
FORMAT_BYTE, INTERVAL_BYTE, TRACE_INTERVAL_BYTE = 3225, 3217, 117  # 1-based, 2 bytes each
OFFSET_BYTE, SCALAR_BYTE, CDP_X_BYTE, CDP_Y_BYTE, TRACE_ID_BYTE = 37, 71, 181, 185, 29


class ProvisionalGridError(Exception):
    """A trace is not where the guessed grid puts it: the importer falls back to a full header scan."""


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
    provisional: bool = False  # grid guessed from a few headers: check il/xl and fill coords while streaming
    fields: tuple[int, ...] = ()  # header bytes read by check_headers: inline, crossline, cdp x, cdp y, scalar

    def check_headers(self, a: int, b: int, records: np.ndarray) -> None:
        """For a provisional scan: check traces [a, b) lie where the grid says, and take their coordinates.

        ``records`` are the raw trace records of those traces (any structured dtype of itemsize trace_bytes).
        Raises ProvisionalGridError on the first trace out of place.
        """
        block = records.view(fields_dtype(self.fields, self.endian == "big", self.trace_bytes))
        il_axis, xl_axis = self._line_numbers
        if not ((block["f0"] == il_axis[self.ii[a:b]]).all() and (block["f1"] == xl_axis[self.xx[a:b]]).all()):
            raise ProvisionalGridError(f"{self.path}: traces {a}..{b} are not where the guessed grid puts them")
        scalar, out = block["f4"], self.coords[a:b]
        if (scalar == scalar[0]).all():  # one scalar for the block (the rule): two multiplications, no temporaries
            factor = _scale_factor(int(scalar[0]))
            np.multiply(block["f2"], factor, out=out[:, 0])
            np.multiply(block["f3"], factor, out=out[:, 1])
        else:
            out[:] = _coordinates(block["f2"], block["f3"], scalar)

    @functools.cached_property
    def _line_numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """The grid's inline and crossline numbers as arrays (made once, not per block)."""
        return np.asarray(self.geometry.inlines), np.asarray(self.geometry.crosslines)

    def live_mask(self) -> np.ndarray:
        """[ni, nx] bool: grid positions that a kept trace fills (the others are dead traces)."""
        ni, nx, _ = self.geometry.shape
        live = np.zeros((ni, nx), dtype=bool)
        live[self.ii[self.keep], self.xx[self.keep]] = True
        return live

    @property
    def traces(self) -> int:
        """Number of traces in the file (all offsets)."""
        return int(self.f.tracecount)


def _check_size(path: Path) -> None:
    """The first open of the file: a regular file (workers/regular_files.py: a FIFO or a device swapped in while
    the job waited is refused, not waited on) with more than its headers."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
    except UnreadableFile as exc:
        raise fail(path, str(exc).removeprefix(f"{path} ")) from None
    if size <= 3600:
        raise fail(path, f"the file holds only {size} bytes of headers and no traces")


def byte_orders(path: Path, endian: str) -> tuple[tuple[str, ...], str]:
    """The byte orders to read ``path`` in: those of ``endian`` ("auto": both) in which the sample format code is
    one seisd reads; and, for "auto", why (for a later error). A code and its byte swap are never both valid, so
    "auto" settles on one order here.

    Raises SegyImportError naming the code, its bytes and the codes seisd reads when no order gives one.
    """
    with open(path, "rb") as fh:
        fh.seek(FORMAT_BYTE - 1)
        raw = fh.read(2)
    codes = {e: int.from_bytes(raw, e, signed=True) for e in ("big", "little")}
    tried = ("big", "little") if endian == "auto" else (endian,)
    ok = tuple(e for e in tried if codes[e] in SAMPLE_FORMATS)
    e = ok[0] if ok else min(tried, key=lambda o: abs(codes[o]))  # none valid: name the reading that looks like one
    other = "little" if e == "big" else "big"
    if ok:
        return ok, (f"; tried {e}-endian only, since the sample format code (bytes {FORMAT_BYTE}-{FORMAT_BYTE + 1}) "
                    f"is {codes[e]} read that way and {codes[other]} read {other}-endian" if endian == "auto" else "")
    if endian == "auto":
        also = f" ({codes[other]} read {other}-endian)"
    elif codes[other] in SAMPLE_FORMATS:
        also = (f"; read {other}-endian it is {codes[other]} ({SAMPLE_FORMATS[codes[other]][0]}): the file is "
                f"probably {other}-endian, so give `endian: {other}` (or `endian: auto`)")
    else:
        also = ""
    formats = ", ".join(f"{code} ({name})" for code, (name, _) in SAMPLE_FORMATS.items())
    raise fail(path, f"sample format code {codes[e]} (binary header bytes {FORMAT_BYTE}-{FORMAT_BYTE + 1}, read "
                     f"{e}-endian) is not one seisd reads{also}; it reads {formats}. If the samples are one of "
                     "these, write its code into those bytes; otherwise convert the file to one of them (e.g. 5, "
                     "IEEE float32) with a SEG-Y tool")


def open_segy(path: Path, iline: int, xline: int, endians: tuple[str, ...],
              why: str = "") -> tuple[segyio.SegyFile, str, bool]:
    """Open with segyio in the first of ``endians`` that works; returns (file, endian, regular). Irregular files
    come back with regular=False. ``why`` (how the byte orders were chosen) goes into the error."""
    errors = []
    for ignore in (False, True):
        for e in endians:
            try:
                return segyio.open(str(path), "r", iline=iline, xline=xline, endian=e,
                                   ignore_geometry=ignore), e, not ignore
            except (RuntimeError, IndexError, ValueError) as exc:  # segyio's ways of saying "not this way"
                errors.append(f"{e}-endian{' unstructured' if ignore else ''}: {exc}")
    raise fail(path, f"truncated or not a SEG-Y file (no endianness gives a consistent trace count{why}); "
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
                             "seisd imports post-stack volumes; give `offset: N` (one of them) to import a single "
                             "offset")
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


def _scale_factor(scalar: int) -> float:
    """The factor a SEG-Y coordinate scalar stands for (negative: divide, positive: multiply, 0: 1)."""
    return 1.0 / -scalar if scalar < 0 else float(scalar or 1)


def _coordinates(x: np.ndarray, y: np.ndarray, scalar: np.ndarray) -> np.ndarray:
    """[n, 2] cdp x/y with the SEG-Y coordinate scalar applied (negative: divide, positive: multiply, 0: 1)."""
    s = np.where(scalar == 0, 1, scalar).astype(np.float64)
    factor = np.where(s < 0, 1.0 / np.abs(s), s)
    return np.stack([x * factor, y * factor], axis=1)


def _trace_layout(f: segyio.SegyFile, path: Path, ns: int) -> tuple[int, int]:
    """(offset of the first trace, bytes per trace), checked against the file size."""
    trace_bytes = 240 + ns * SAMPLE_FORMATS[int(f.bin[segyio.BinField.Format])][1]  # byte_orders checked the code
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


def _sample_axis(f: segyio.SegyFile, path: Path, samples: np.ndarray) -> tuple[float, float]:
    """(first sample, step) of the sample axis.

    segyio takes the interval from the binary header, else from the first trace header, else makes it 4 ms; the
    last is a guess that would put every depth of the survey in the wrong place, so it is refused here.
    """
    binary, trace = int(f.bin[segyio.BinField.Interval]), int(f.header[0][segyio.TraceField.TRACE_SAMPLE_INTERVAL])
    if binary <= 0 and trace <= 0:
        raise fail(path, f"the sample interval is not set: binary header bytes {INTERVAL_BYTE}-{INTERVAL_BYTE + 1} "
                         f"hold {binary} and the first trace header's bytes {TRACE_INTERVAL_BYTE}-"
                         f"{TRACE_INTERVAL_BYTE + 1} hold {trace}; seisd does not guess it. Write the interval into "
                         f"binary header bytes {INTERVAL_BYTE}-{INTERVAL_BYTE + 1} in microseconds (4000 for 4 ms; "
                         "thousandths of the unit for depth), e.g. with segyio: f.bin.update(hdt=4000) on the file "
                         "opened with mode 'r+'")
    step = float(samples[1] - samples[0]) if len(samples) > 1 else (binary if binary > 0 else trace) / 1e3
    return float(samples[0]), step


class _HeaderProbe:
    """Inline/crossline numbers of single traces, each read with one pread of its 240-byte header."""

    def __init__(self, path: Path, data_offset: int, trace_bytes: int, iline: int, xline: int, big: bool) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.data_offset, self.trace_bytes = data_offset, trace_bytes
        self.record = fields_dtype((iline, xline), big, 240)

    def __call__(self, k: int) -> tuple[int, int]:
        h = np.frombuffer(os.pread(self.fd, 240, self.data_offset + k * self.trace_bytes), dtype=self.record)[0]
        return int(h["f0"]), int(h["f1"])

    def close(self) -> None:
        os.close(self.fd)


def _guess_grid(probe: _HeaderProbe, n: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(sorting, inline axis, every trace's index in it, crossline axis, every trace's index in it) if the file
    looks like a complete sorted grid.

    A few dozen header reads: the first two traces give the fast axis, a binary search the length of the first
    line, the last trace the number of lines. Only a guess: the importer checks every trace (check_headers).
    """
    il0, xl0 = probe(0)
    if n == 1:
        return "inline", np.array([il0]), np.zeros(1, dtype=np.int64), np.array([xl0]), np.zeros(1, dtype=np.int64)
    il1, xl1 = probe(1)
    if il1 == il0 and xl1 != xl0:
        sorting, slow, fast_step = "inline", 0, xl1 - xl0
    elif xl1 == xl0 and il1 != il0:
        sorting, slow, fast_step = "crossline", 1, il1 - il0
    else:
        return None
    lo, hi = 1, n  # the first line ends where the slow number first changes: in (lo, hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if probe(mid)[slow] == (il0, xl0)[slow] else (lo, mid)
    length = hi
    if n % length:
        return None
    lines = n // length
    slow_step = (probe(length)[slow] - (il0, xl0)[slow]) if lines > 1 else 1
    last = probe(n - 1)
    fast0, slow0 = (xl0, il0) if slow == 0 else (il0, xl0)
    want_last = (slow0 + slow_step * (lines - 1), fast0 + fast_step * (length - 1))
    if slow_step == 0 or (last[slow], last[1 - slow]) != want_last:
        return None
    (fast_axis, fast_at), (slow_axis, slow_at) = _axis(fast0, fast_step, length), _axis(slow0, slow_step, lines)
    fast_all, slow_all = np.tile(fast_at, lines), np.repeat(slow_at, length)
    return (sorting, slow_axis, slow_all, fast_axis, fast_all) if slow == 0 else \
        (sorting, fast_axis, fast_all, slow_axis, slow_all)


def _axis(first: int, step: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The line numbers first, first + step, ... (count of them) in increasing order, and where each of them, in
    the file's order, sits in that axis (no sort or search over every trace: the numbers are a progression)."""
    at = np.arange(count, dtype=np.int64)
    numbers = first + step * at
    return (numbers, at) if step > 0 else (numbers[::-1].copy(), at[::-1].copy())


def _provisional(path: Path, iline: int, xline: int, endians: tuple[str, ...], unit: str) -> SegyScan | None:
    """A scan of a complete sorted post-stack grid guessed from a few headers, or None when the file is not one.

    The file is opened without segyio's geometry inference (which reads a header per line); the traces' own
    headers are checked against the guess while the importer streams them (SegyScan.check_headers).
    """
    for e in endians:
        try:
            f = segyio.open(str(path), "r", iline=iline, xline=xline, endian=e, ignore_geometry=True)
        except (RuntimeError, IndexError, ValueError):
            continue
        try:
            scan = _provisional_scan(f, path, e, iline, xline, unit)
        except (SegyImportError, OSError, ValueError):
            scan = None
        if scan is not None:
            return scan
        f.close()
    return None


def _provisional_scan(f: segyio.SegyFile, path: Path, e: str, iline: int, xline: int,
                      unit: str) -> SegyScan | None:
    n = f.tracecount
    samples = np.asarray(f.samples, dtype=np.float64)
    if n == 0 or len(samples) == 0:
        return None
    data_offset, trace_bytes = _trace_layout(f, path, len(samples))
    axis = _sample_axis(f, path, samples)
    probe = _HeaderProbe(path, data_offset, trace_bytes, iline, xline, e == "big")
    try:
        guess = _guess_grid(probe, n)
    finally:
        probe.close()
    if guess is None:
        return None
    sorting, il_axis, ii, xl_axis, xx = guess  # regular axes, every (inline, crossline) once, by construction
    geometry = Geometry(tuple(il_axis), tuple(xl_axis), *axis, len(samples), unit)
    return SegyScan(f, path, e, int(f.bin[segyio.BinField.Format]), sorting, geometry, np.ones(n, dtype=bool), ii,
                    xx, np.zeros((n, 2)), data_offset, trace_bytes, provisional=True,
                    fields=(iline, xline, CDP_X_BYTE, CDP_Y_BYTE, SCALAR_BYTE))


def scan_segy(path: Path, iline: int, xline: int, endian: str, offset: int | None, unit: str,
              full: bool = False) -> SegyScan:
    """Open ``path`` and bin its traces into a regular grid; the caller closes ``scan.f``.

    Unless ``full``, a regular sorted post-stack file gets a provisional grid (see the module doc) instead of a
    read of every header. Raises SegyImportError for an unsupported sample format code or a missing sample
    interval (checked first), truncated files, pre-stack data without ``offset``, repeated positions (shot
    gathers, wrong byte positions) and line numbers that form no grid.
    """
    _check_size(path)
    endians, why = byte_orders(path, endian)
    if not full and offset is None:
        quick = _provisional(path, iline, xline, endians, unit)
        if quick is not None:
            return quick
    f, e, regular = open_segy(path, iline, xline, endians, why)
    try:
        n = f.tracecount
        if n == 0:
            raise fail(path, "the file has no traces")
        samples = np.asarray(f.samples, dtype=np.float64)
        data_offset, trace_bytes = _trace_layout(f, path, len(samples))
        axis = _sample_axis(f, path, samples)  # before the header scan: a missing interval is refused at once
        il, xl, off, cx, cy, sc = read_fields(path, data_offset, n, trace_bytes, [
            iline, xline, OFFSET_BYTE, CDP_X_BYTE, CDP_Y_BYTE, SCALAR_BYTE], e == "big")
        keep = _select_offset(path, off, offset)
        il_axis = _line_axis(path, il[keep], "inline", iline)
        xl_axis = _line_axis(path, xl[keep], "crossline", xline)
        ii = np.searchsorted(il_axis, il)
        xx = np.searchsorted(xl_axis, xl)
        _check_unique_positions(path, ii[keep], xx[keep], len(xl_axis), iline, xline)
        geometry = Geometry(tuple(il_axis), tuple(xl_axis), *axis, len(samples), unit)
        return SegyScan(f, path, e, int(f.bin[segyio.BinField.Format]), _sorting(f, regular), geometry, keep, ii,
                        xx, _coordinates(cx, cy, sc), data_offset, trace_bytes)
    except BaseException:
        f.close()
        raise
