"""SEG-Y -> survey cache: streams chunks of traces into a float32 volume, headers copied out in the same pass.

workers/segy_scan.py checks the sample format code and interval, opens the file and bins its traces into a grid
(holes become dead traces, zero-filled). The samples are then read straight from the file with numpy for every
format it accepts: IBM float (format 1, converted in numpy), IEEE float (5), float64 (6) and the integer formats
(2, 3, 8, 9, 10, 11, 12, 16): sequential reads of blocks of trace records (a structured dtype of [240-byte header,
ns samples] in the file's byte order), converted into the float32 cache a block at a time with the headers copied
out in the same pass. A code missing from NUMPY_FORMATS would go through segyio's trace reads (none is today).
The survey is built in ``.<folder>.partial`` (workers/names.py: a name no survey can have) and renamed at the end, so
a failed or cancelled import leaves nothing.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, Iterator

import numpy as np

from workers.names import work_path
from workers.row_writer import RowWriter
from workers.segy_records import SegyImportError, fail, trace_blocks
from workers.segy_scan import (CDP_X_BYTE, CDP_Y_BYTE, SCALAR_BYTE, TRACE_ID_BYTE, OFFSET_BYTE,
                               ProvisionalGridError, SegyScan, scan_segy)
from workers.survey import (GeometryArrays, Survey, SurveyError, mark_unsynced, reserve_trace_headers,
                            write_geometry_h5)

__all__ = ["ImportCancelled", "ImportReport", "SegyImportError", "add_volume", "ibm_to_float32", "import_segy"]

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]

CHUNK_BYTES = 1 << 20       # raw trace bytes decoded and summed at a time: a chunk stays in a 1 MB L2 cache
BLOCK_CHUNKS = 1            # chunks per read and per write: 2 and 8 measured slower (tools/bench_import.py)
WRITES_IN_FLIGHT = 2        # blocks handed to the writer thread and not yet written
STATS_TRACES = 2000         # traces sampled (evenly, in the stream) for the percentiles ...
STATS_DEPTHS = 128          # ... at about this many depths each
# Sample formats read with numpy (code -> dtype without byte order); IBM (1) is read as words and converted.
NUMPY_FORMATS = {1: "u4", 2: "i4", 3: "i2", 5: "f4", 6: "f8", 8: "i1", 9: "i8", 10: "u4", 11: "u2", 12: "u8",
                 16: "u1"}
# IBM float: value = (-1)^sign * mantissa / 2^24 * 16^(exponent - 64); indexed by the word's top byte.
_IBM_SCALE = np.array([(-1.0 if b & 0x80 else 1.0) * 2.0 ** (4 * ((b & 0x7F) - 64) - 24) for b in range(256)])


class ImportCancelled(Exception):
    """The caller's cancel() returned True; nothing was left on disk."""


@dataclass
class ImportReport:
    """What an import found, beyond the survey itself."""

    traces: int
    dead_traces: int
    nan_count: int
    endian: str
    sorting: str


class _Throttle:
    """Calls progress at most ``rate`` times a second (the last call always goes through)."""

    def __init__(self, progress: Progress | None, rate: float = 10.0) -> None:
        self.progress, self.gap, self.last = progress, 1.0 / rate, -math.inf

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self.last >= self.gap):
            self.last = now
            self.progress(fraction, message)


def ibm_to_float32(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """IBM System/360 single-precision floats, given as uint32 words in any byte order, to IEEE float32.

    Exact in float64 (24-bit mantissa times a power of two), then rounded to the nearest float32; values beyond
    float32's range become +-inf (segyio makes them NaN; the importer zeroes and counts both).
    """
    w = words.astype(np.uint32)  # native byte order, own copy
    scale = _IBM_SCALE[w >> 24]
    np.bitwise_and(w, 0xFFFFFF, out=w)
    np.multiply(scale, w, out=scale)
    out = np.empty(words.shape, dtype=np.float32) if out is None else out
    with np.errstate(over="ignore"):
        np.copyto(out, scale, casting="same_kind")
    return out


def _record_dtype(scan: SegyScan) -> np.dtype:
    """One trace record: 240 header bytes, then the samples (numpy formats) or opaque bytes (segyio formats)."""
    ns = scan.geometry.sample_count
    code = NUMPY_FORMATS.get(scan.sample_format)
    samples = (f"{'>' if scan.endian == 'big' else '<'}{code}", (ns,)) if code else (f"V{scan.trace_bytes - 240}",)
    return np.dtype([("h", np.uint8, (240,)), ("s", *samples)])


def _decode(scan: SegyScan, a: int, records: np.ndarray, out: np.ndarray) -> None:
    """Traces [a, a + len(records)) as float32 into ``out`` ([traces, ns])."""
    if scan.sample_format not in NUMPY_FORMATS:  # e.g. 24-bit integers: segyio converts
        np.copyto(out, scan.f.trace.raw[a:a + len(out)].reshape(out.shape), casting="unsafe")
    elif scan.sample_format == 1:
        ibm_to_float32(records["s"], out)
    else:
        np.copyto(out, records["s"], casting="unsafe")  # byte swap and cast in one pass


class _Sums:
    """Running sum, sum of squares, count, min and max of the live samples, and an even sample of them (every
    ``traces // STATS_TRACES``-th trace at about STATS_DEPTHS depths) for the percentiles."""

    def __init__(self, traces: int) -> None:
        self.sum = self.sumsq = 0.0
        self.count = self.non_finite = 0
        self.min, self.max = math.inf, -math.inf
        self.every, self.seen = max(1, traces // STATS_TRACES), 0
        self.sample: list[np.ndarray] = []

    def add(self, data: np.ndarray) -> None:
        """Fold in a [traces, ns] float32 block (C-contiguous): float32 partial sums, accumulated in float64.

        NaN and inf are replaced by 0 in place first and counted (one would poison every normalisation); the
        block's min and max tell whether there are any, so a clean block costs no extra pass.
        """
        if not data.size:
            return
        lo, hi = float(data.min()), float(data.max())  # min/max propagate NaN
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = ~np.isfinite(data)
            data[bad] = 0.0
            self.non_finite += int(bad.sum())
            lo, hi = float(data.min()), float(data.max())
        # Per-trace sums as a matrix-vector product (BLAS: several times numpy's own sum); the sum of squares as
        # one dot product (float32 partial sums: relative error ~1e-6, plenty for a standard deviation).
        self.sum += float((data @ np.ones(data.shape[1], dtype=np.float32)).sum(dtype=np.float64))
        flat = data.reshape(-1)
        if max(-lo, hi) > 1e15:  # squares could overflow float32 (e.g. 8-byte integer samples): float64
            flat = flat.astype(np.float64)
        self.sumsq += float(np.dot(flat, flat))
        self.count += data.size
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        step = max(1, data.shape[1] // STATS_DEPTHS)
        self.sample.append(data[(-self.seen) % self.every::self.every, ::step].flatten())  # a copy: ours
        self.seen += len(data)


def _stream(scan: SegyScan, vol: np.memmap, headers: np.memmap | None, report: _Throttle,
            cancel: Cancel | None) -> _Sums:
    """Copy traces into ``vol`` (and raw headers into ``headers``) block by block; returns the running sums (their
    ``non_finite`` counts the NaN/inf samples zeroed)."""
    writers: list[RowWriter] = []
    try:
        for target, width in ((vol, scan.geometry.sample_count), (headers, 240)):
            if target is not None:
                writers.append(RowWriter(target, width))  # reserves its region: a full disk fails here
        return _copy_chunks(scan, writers, report, cancel)
    finally:
        for w in writers:
            w.close()


def _copy_chunks(scan: SegyScan, writers: list[RowWriter], report: _Throttle,
                 cancel: Cancel | None) -> _Sums:
    """The block loop of _stream: read, decode, NaN/inf zeroing, running sums, write samples (and headers).

    The file is read and the cache written BLOCK_CHUNKS chunks at a time, decoded and summed a chunk at a time, so
    the samples are summed while still in the CPU's cache and the sums are those of the same chunks whatever the
    block size (one chunk a block measured fastest: the kernel's copies stay in cache too). A writer thread writes
    block k while this one decodes and sums block k + 1 and a reader thread reads block k + 2 and checks its headers
    against a provisional grid (system calls and numpy release the GIL), so the three parts of the work overlap;
    WRITES_IN_FLIGHT bounds the buffers. The check runs in the reader thread, which mostly waits on the disk: in the
    writer it made that thread the one this one waited for. A wrong guess surfaces (ProvisionalGridError) from the
    reader's future before the block is decoded: nothing written by then is kept.
    """
    n, ns = scan.traces, scan.geometry.sample_count
    chunk = max(1, CHUNK_BYTES // scan.trace_bytes)
    block = chunk * BLOCK_CHUNKS
    flat_all = scan.ii * scan.geometry.shape[1] + scan.xx
    sums = _Sums(int(scan.keep.sum()))
    bufs = [np.empty((min(block, n), ns), dtype=np.float32) for _ in range(WRITES_IN_FLIGHT + 1)]
    in_flight: deque[Future] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="segy-write") as pool:
        try:
            # raw blocks in use: WRITES_IN_FLIGHT being written, one decoded here, one being read
            blocks = trace_blocks(scan.path, scan.data_offset, n, _record_dtype(scan), block, WRITES_IN_FLIGHT + 2)
            for a, b, records in _read_ahead(_checked(scan, blocks) if scan.provisional else blocks):
                if cancel is not None and cancel():
                    raise ImportCancelled(f"import of {scan.path} cancelled at trace {a} of {n}")
                data, keep, starts = bufs[(a // block) % len(bufs)][:b - a], scan.keep[a:b], range(a, b, chunk)
                whole = bool(keep.all())
                for c in starts:
                    _decode(scan, c, records[c - a:c - a + chunk], data[c - a:c - a + chunk])
                    if whole:
                        sums.add(data[c - a:c - a + chunk])  # before the write: zeroes NaN/inf in place
                heads, flat = records["h"], flat_all[a:b]
                if not whole:  # one offset of several: the kept traces, summed by the same chunks
                    data, heads, flat = data[keep], heads[keep], flat[keep]
                    kept = np.concatenate([[0], np.cumsum(keep)])
                    for c in starts:
                        sums.add(data[kept[c - a]:kept[min(c + chunk, b) - a]])
                in_flight.append(pool.submit(_write_chunk, writers, flat, (data, heads)))
                if len(in_flight) > WRITES_IN_FLIGHT:
                    in_flight.popleft().result()  # its buffers are reused by the next block
                report(b / n, f"{b} of {n} traces")
            while in_flight:
                in_flight.popleft().result()
        finally:
            for f in in_flight:
                f.cancel()
    return sums


Block = tuple[int, int, np.ndarray]  # first trace, end, the records of traces [first, end)


def _read_ahead(blocks: Generator[Block, None, None]) -> Iterator[Block]:
    """The items of ``blocks``, each one fetched in a thread while the caller works on the one before; an error of
    the fetch (a file that ends early) is raised here."""
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="segy-read") as pool:
            ahead = pool.submit(next, blocks, None)
            while (item := ahead.result()) is not None:
                ahead = pool.submit(next, blocks, None)
                yield item
    finally:
        blocks.close()  # the file, once no fetch is running (the pool's exit waits for the last)


def _checked(scan: SegyScan, blocks: Generator[Block, None, None]) -> Generator[Block, None, None]:
    """The blocks, each checked against the scan's provisional grid as it is read (in the reader thread)."""
    try:
        for a, b, records in blocks:
            scan.check_headers(a, b, records)
            yield a, b, records
    finally:
        blocks.close()


def _write_chunk(writers: list[RowWriter], flat: np.ndarray, blocks: tuple[np.ndarray, ...]) -> None:
    """Writer thread: write the block's arrays (samples, headers) at rows ``flat``."""
    for w, rows in zip(writers, blocks):
        w.write(flat, rows)


def _stats(sums: _Sums) -> dict[str, float]:
    """Exact mean/std/min/max over the live samples; p01/p99 from the stream's even sample of them."""
    count = max(sums.count, 1)
    mean = sums.sum / count
    std = math.sqrt(max(sums.sumsq / count - mean * mean, 0.0))
    sample = np.concatenate(sums.sample) if sums.sample else np.zeros(1, dtype=np.float32)
    p01, p99 = np.percentile(sample, [1, 99], overwrite_input=True)  # partitions in place, float32: no extra copy
    return {"mean": mean, "std": std, "min": sums.min if sums.count else 0.0,
            "max": sums.max if sums.count else 0.0, "p01": float(p01), "p99": float(p99),
            "nan_count": sums.non_finite}


def _fill_dead(scan: SegyScan, headers: np.ndarray, live: np.ndarray, iline: int, xline: int,
               cdp: np.ndarray) -> None:
    """Synthesise headers of dead traces: a live header with il/xl/coordinates set and trace id 2 (dead)."""
    dead_i, dead_x = np.nonzero(~live)
    if not len(dead_i):
        return
    li, lx = np.nonzero(live)
    template = np.array(headers[li[0], lx[0]])
    big = scan.endian == "big"
    scalar = int.from_bytes(template[SCALAR_BYTE - 1:SCALAR_BYTE + 1].tobytes(), "big" if big else "little",
                            signed=True)
    factor = 1.0 / abs(scalar) if scalar < 0 else float(scalar or 1)
    for i, x in zip(dead_i, dead_x):
        h = template.copy()
        for byte, value, size in ((iline, scan.geometry.inlines[i], 4), (xline, scan.geometry.crosslines[x], 4),
                                  (CDP_X_BYTE, round(cdp[i, x, 0] / factor), 4),
                                  (CDP_Y_BYTE, round(cdp[i, x, 1] / factor), 4), (TRACE_ID_BYTE, 2, 2)):
            h[byte - 1:byte - 1 + size] = np.frombuffer(
                int(value).to_bytes(size, "big" if big else "little", signed=True), dtype=np.uint8)
        headers[i, x] = h


def _grid_coordinates(scan: SegyScan, live: np.ndarray) -> np.ndarray:
    """[ni, nx, 2] coordinates; dead positions from an affine fit (il, xl) -> (x, y) over the live traces."""
    ni, nx, _ = scan.geometry.shape
    cdp = np.zeros((ni, nx, 2), dtype=np.float64)
    keep = slice(None) if scan.keep.all() else scan.keep  # all: no copies of the per-trace arrays
    cdp.reshape(ni * nx, 2)[scan.ii[keep] * nx + scan.xx[keep]] = scan.coords[keep]
    if (~live).any() and live.sum() >= 3:
        li, lx = np.nonzero(live)
        design = np.stack([li, lx, np.ones_like(li)], axis=1).astype(np.float64)
        fit, *_ = np.linalg.lstsq(design, cdp[li, lx], rcond=None)
        di, dx = np.nonzero(~live)
        cdp[di, dx] = np.stack([di, dx, np.ones_like(di)], axis=1) @ fit
    return cdp


def _source_info(scan: SegyScan, iline: int, xline: int, offset: int | None) -> dict:
    return {"path": str(scan.path.resolve()), "format": scan.sample_format,
            "endian": scan.endian, "sorting": scan.sorting, "traces": scan.traces,
            "bytes": {"iline": iline, "xline": xline, "offset": OFFSET_BYTE, "cdp_x": CDP_X_BYTE,
                      "cdp_y": CDP_Y_BYTE, "scalar": SCALAR_BYTE},
            "offset": offset, "ext_headers": int(scan.f.ext_headers)}


def import_segy(path: str | os.PathLike, survey_folder: str | os.PathLike, name: str | None = None,
                volume: str = "seismic", iline: int = 189, xline: int = 193, endian: str = "auto",
                progress: Progress | None = None, cancel: Cancel | None = None, offset: int | None = None,
                sample_unit: str = "ms") -> Survey:
    """Import a post-stack 3D SEG-Y into a new survey folder and return it opened.

    ``survey.import_report`` (an ImportReport) says how many traces were dead and how many NaN/inf samples were
    replaced by 0. Pre-stack files are refused unless ``offset`` picks one offset. Raises SegyImportError for files
    that cannot be imported, ImportCancelled when ``cancel()`` turns True; neither leaves a folder behind.
    """
    path, folder = Path(path), Path(survey_folder)
    if folder.exists():
        raise SurveyError(f"{folder} already exists; remove it or choose another survey folder")
    report = _Throttle(progress)
    import_report = _scanned(path, iline, xline, endian, offset, sample_unit, lambda scan: _import_once(
        scan, folder, name, volume, iline, xline, offset, report, cancel))
    out = Survey.open(folder, sync=False)  # the first use fsyncs (workers/survey.py)
    report(1.0, f"imported {path.name}: {' x '.join(map(str, out.shape))}", force=True)
    out.import_report = import_report
    return out


def _scanned(path: Path, iline: int, xline: int, endian: str, offset: int | None, unit: str,
             attempt: Callable[[SegyScan], int]) -> ImportReport:
    """Scan the file and run ``attempt(scan)`` -> NaN count, again after reading every header if the provisional
    grid fails; returns what the import found."""
    scan = scan_segy(path, iline, xline, endian, offset, unit)
    try:
        try:
            nan_count = attempt(scan)
        except ProvisionalGridError:  # the guessed grid was wrong about some trace: bin every header
            scan.f.close()
            scan = scan_segy(path, iline, xline, endian, offset, unit, full=True)
            nan_count = attempt(scan)
    finally:
        scan.f.close()
    return ImportReport(int(scan.keep.sum()), int((~scan.live_mask()).sum()), nan_count, scan.endian,
                        scan.sorting)


def _import_once(scan: SegyScan, folder: Path, name: str | None, volume: str, iline: int, xline: int,
                 offset: int | None, report: _Throttle, cancel: Cancel | None) -> int:
    """One attempt of import_segy on an open scan, built in ``.<folder>.partial``; returns the NaN count."""
    partial = work_path(folder)
    shutil.rmtree(partial, ignore_errors=True)  # leftover of a crashed import of this survey (no user's name)
    try:
        ni, nx, _ = scan.geometry.shape
        live = scan.live_mask()
        survey = Survey.create(partial, scan.geometry, name=name or folder.name,
                               source=_source_info(scan, iline, xline, offset))
        mark_unsynced(partial, f"{volume}.f32", "geometry.h5")
        headers = reserve_trace_headers(partial / "geometry.h5", ni, nx)
        vol = survey.new_volume(volume)
        sums = _stream(scan, vol, headers, report, cancel)
        cdp = _grid_coordinates(scan, live)  # after the stream: a provisional scan takes coordinates there
        _fill_dead(scan, headers, live, iline, xline, cdp)
        del headers  # written in place in geometry.h5; the rest goes beside it
        arrays = GeometryArrays(cdp[..., 0], cdp[..., 1], ~live, _text_headers(scan.path, int(scan.f.ext_headers)),
                                _binary_header(scan.path))
        write_geometry_h5(partial / "geometry.h5", arrays)
        survey.doc["has_geometry_h5"] = True
        survey.doc["source"]["dead_traces"] = int((~live).sum())
        survey.register_volume(volume, _stats(sums))
        del vol
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return sums.non_finite


def _binary_header(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(3200)
        return fh.read(400)


def _text_headers(path: Path, ext_headers: int) -> list[bytes]:
    """The raw textual headers (EBCDIC or ASCII as stored; segyio's f.text decodes them, we keep the bytes)."""
    with open(path, "rb") as fh:
        texts = [fh.read(3200)]
        for k in range(max(ext_headers, 0)):
            fh.seek(3600 + 3200 * k)
            texts.append(fh.read(3200))
    return texts


def add_volume(path: str | os.PathLike, survey_folder: str | os.PathLike, volume: str, iline: int = 189,
               xline: int = 193, endian: str = "auto", progress: Progress | None = None,
               cancel: Cancel | None = None, offset: int | None = None) -> Survey:
    """Import a second attribute (another SEG-Y on the same grid) as ``volume`` of an existing survey.

    Refused with SegyImportError naming the difference when the grid does not match the survey's.
    """
    survey = Survey.open(survey_folder, sync=False)  # the first job to use it fsyncs what is still unsynced
    if volume in survey.volumes:
        raise SurveyError(f"survey {survey.name!r} already has a volume {volume!r}; choose another name")
    tmp = work_path(survey.folder / f"{volume}.f32")
    survey.import_report = _scanned(Path(path), iline, xline, endian, offset, survey.geometry.sample_unit,
                                    lambda scan: _add_once(scan, survey, volume, tmp, progress, cancel))
    return survey


def _add_once(scan: SegyScan, survey: Survey, volume: str, tmp: Path, progress: Progress | None,
              cancel: Cancel | None) -> int:
    """One attempt of add_volume on an open scan; returns the NaN count."""
    path = scan.path
    try:
        diff = scan.geometry.differences(survey.geometry)
        if diff:
            raise fail(Path(path), f"its grid differs from survey {survey.name!r}: " + "; ".join(diff))
        ni, nx, ns = survey.shape
        with open(tmp, "wb") as fh:
            fh.truncate(ni * nx * ns * 4)
        vol = np.memmap(tmp, dtype=np.float32, mode="r+", shape=(ni, nx, ns))
        sums = _stream(scan, vol, None, _Throttle(progress), cancel)
        stats = _stats(sums)
        del vol
        mark_unsynced(survey.folder, f"{volume}.f32")
        os.replace(tmp, survey.folder / f"{volume}.f32")
        survey.register_volume(volume, stats)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sums.non_finite
