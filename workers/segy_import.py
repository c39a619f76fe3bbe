"""SEG-Y -> survey cache. Reads with segyio, streams chunks of traces into a float32 memmap.

Steps: open (endianness detected: big, then little; regular geometry first, then ``ignore_geometry=True`` so an
irregular file can be told from a broken one), read the trace headers' inline/crossline/offset/coordinates, bin the
traces into a regular grid (holes become dead traces, zero-filled), then stream the samples chunk by chunk. The
survey is built in ``<folder>.partial`` and renamed at the end, so a failed or cancelled import leaves nothing.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import segyio

from workers.survey import Geometry, GeometryArrays, Survey, SurveyError, write_geometry_h5

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]

BYTES_PER_SAMPLE = {1: 4, 2: 4, 3: 2, 5: 4, 6: 8, 8: 1, 9: 8, 10: 4, 11: 2, 12: 8, 15: 3, 16: 1}
OFFSET_BYTE, SCALAR_BYTE, CDP_X_BYTE, CDP_Y_BYTE, TRACE_ID_BYTE = 37, 71, 181, 185, 29
CHUNK_BYTES = 64 << 20      # samples read per step: bounds memory whatever the file size
STATS_TRACES = 2000         # traces sampled for the percentiles


class SegyImportError(ValueError):
    """A SEG-Y file that cannot be imported as a post-stack 3D survey; the message names the file and why."""


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


@dataclass
class _Scan:
    """An opened SEG-Y with its traces binned into a grid."""

    f: segyio.SegyFile
    path: Path
    endian: str
    sorting: str
    geometry: Geometry
    keep: np.ndarray          # [n_traces] bool: traces that go into the volume (one offset)
    ii: np.ndarray            # [n_traces] inline index of each trace
    xx: np.ndarray            # [n_traces] crossline index of each trace
    coords: np.ndarray        # [n_traces, 2] cdp x/y with the scalar applied
    data_offset: int
    trace_bytes: int


class _Throttle:
    """Calls progress at most ``rate`` times a second (the last call always goes through)."""

    def __init__(self, progress: Progress | None, rate: float = 10.0) -> None:
        self.progress, self.gap, self.last = progress, 1.0 / rate, -math.inf

    def __call__(self, fraction: float, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now - self.last >= self.gap):
            self.last = now
            self.progress(fraction, message)


def _fail(path: Path, why: str) -> SegyImportError:
    return SegyImportError(f"cannot import {path}: {why}")


def _open(path: Path, iline: int, xline: int, endian: str) -> tuple[segyio.SegyFile, str, bool]:
    """Open with segyio; returns (file, endian, regular). Irregular files come back with regular=False."""
    if not path.is_file():
        raise _fail(path, "no such file")
    if path.stat().st_size <= 3600:
        raise _fail(path, f"the file holds only {path.stat().st_size} bytes of headers and no traces")
    endians = ("big", "little") if endian == "auto" else (endian,)
    errors = []
    for ignore in (False, True):
        for e in endians:
            try:
                return segyio.open(str(path), "r", iline=iline, xline=xline, endian=e,
                                   ignore_geometry=ignore), e, not ignore
            except (RuntimeError, IndexError, ValueError) as exc:  # segyio's ways of saying "not this way"
                errors.append(f"{e}-endian{' unstructured' if ignore else ''}: {exc}")
    raise _fail(path, "truncated or not a SEG-Y file (no endianness gives a consistent trace count); "
                      + "; ".join(errors[-len(endians):]))


def _line_axis(path: Path, values: np.ndarray, label: str, byte: int) -> np.ndarray:
    """Regular axis of line numbers covering ``values`` (step = gcd of the gaps; missing lines become dead)."""
    uniq = np.unique(values)
    step = int(np.gcd.reduce(np.diff(uniq))) if len(uniq) > 1 else 1
    n = (int(uniq[-1]) - int(uniq[0])) // step + 1
    if n > 100 * len(uniq) and n > 100_000:
        raise _fail(path, f"{label} numbers (byte {byte}) {uniq[:5].tolist()}... do not form a grid; "
                          f"check the {label} byte position")
    return np.arange(int(uniq[0]), int(uniq[-1]) + 1, step, dtype=np.int64)


def _select_offset(path: Path, offsets: np.ndarray, offset: int | None) -> np.ndarray:
    uniq = np.unique(offsets)
    if offset is None:
        if len(uniq) > 1:
            raise _fail(path, f"pre-stack data: {len(uniq)} offsets {uniq[:10].tolist()} (byte {OFFSET_BYTE}); "
                              "seisd imports post-stack volumes; pass offset=<one of them> to import a single offset")
        return np.ones(len(offsets), dtype=bool)
    if offset not in uniq:
        raise _fail(path, f"offset {offset} is not in the file; its offsets are {uniq[:10].tolist()}")
    return offsets == offset


def _check_unique_positions(path: Path, ii: np.ndarray, xx: np.ndarray, nx: int, iline: int, xline: int) -> None:
    flat = ii * nx + xx
    uniq, counts = np.unique(flat, return_counts=True)
    if len(uniq) < len(flat):
        k = int(np.argmax(counts))
        raise _fail(path, f"not a post-stack 3D grid: {len(flat) - len(uniq)} traces repeat an inline/crossline "
                          f"position (e.g. {int(counts[k])} traces at grid index {divmod(int(uniq[k]), nx)}) "
                          f"with inline byte {iline} and crossline byte {xline}; a shot gather or a wrong byte "
                          "position (pass iline=/xline=)")


def _field_size(byte: int) -> int:
    """Width of the trace header field starting at ``byte`` (SEG-Y rev 1 table, 1-based)."""
    four = set(range(1, 29, 4)) | set(range(37, 69, 4)) | set(range(73, 89, 4)) | {181, 185, 189, 193, 197}
    return 4 if byte in four else 2


def _read_fields(raw: np.ndarray, bytes_: list[int], big: bool) -> list[np.ndarray]:
    """Header fields of every trace, parsed from the raw trace records chunk by chunk (one pass, bounded memory)."""
    n = raw.shape[0]
    out = [np.empty(n, dtype=np.int64) for _ in bytes_]
    step = 1 << 16
    for a in range(0, n, step):
        heads = np.array(raw[a:a + step, :240])
        for arr, byte in zip(out, bytes_):
            size = _field_size(byte)
            dt = np.dtype(f"{'>' if big else '<'}i{size}")
            arr[a:a + step] = np.ascontiguousarray(heads[:, byte - 1:byte - 1 + size]).view(dt).ravel()
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
        raise _fail(path, f"file size {path.stat().st_size} does not match {f.tracecount} traces of "
                          f"{trace_bytes} bytes")
    return data_offset, trace_bytes


def _scan(path: Path, iline: int, xline: int, endian: str, offset: int | None, unit: str) -> _Scan:
    f, e, regular = _open(path, iline, xline, endian)
    try:
        n = f.tracecount
        if n == 0:
            raise _fail(path, "the file has no traces")
        samples = np.asarray(f.samples, dtype=np.float64)
        data_offset, trace_bytes = _trace_layout(f, path, len(samples))
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=data_offset, shape=(n, trace_bytes))
        il, xl, off, cx, cy, sc = _read_fields(raw, [iline, xline, OFFSET_BYTE, CDP_X_BYTE, CDP_Y_BYTE,
                                                     SCALAR_BYTE], e == "big")
        del raw
        keep = _select_offset(path, off, offset)
        il_axis = _line_axis(path, il[keep], "inline", iline)
        xl_axis = _line_axis(path, xl[keep], "crossline", xline)
        ii = np.searchsorted(il_axis, il)
        xx = np.searchsorted(xl_axis, xl)
        _check_unique_positions(path, ii[keep], xx[keep], len(xl_axis), iline, xline)
        step = float(samples[1] - samples[0]) if len(samples) > 1 else max(f.bin[segyio.BinField.Interval], 1) / 1e3
        geometry = Geometry(tuple(il_axis), tuple(xl_axis), float(samples[0]), step, len(samples), unit)
        sorting = {segyio.TraceSortingFormat.INLINE_SORTING: "inline",
                   segyio.TraceSortingFormat.CROSSLINE_SORTING: "crossline"}.get(f.sorting, "unstructured") \
            if regular else "unstructured"
        return _Scan(f, path, e, sorting, geometry, keep, ii, xx, _coordinates(cx, cy, sc), data_offset,
                     trace_bytes)
    except BaseException:
        f.close()
        raise


def _stream(scan: _Scan, vol: np.ndarray, headers: np.ndarray | None, report: _Throttle,
            cancel: Cancel | None) -> tuple[dict[str, float], int]:
    """Copy traces into ``vol`` (and raw headers into ``headers``) chunk by chunk; returns (running sums, nan count)."""
    n, ns = scan.f.tracecount, scan.geometry.sample_count
    raw = np.memmap(scan.path, dtype=np.uint8, mode="r", offset=scan.data_offset, shape=(n, scan.trace_bytes))
    flat_all = scan.ii * scan.geometry.shape[1] + scan.xx
    fd = os.open(vol.filename, os.O_WRONLY) if isinstance(vol, np.memmap) and vol.filename else None
    try:
        return _copy_chunks(scan, vol, headers, report, cancel, raw, flat_all, fd)
    finally:
        if fd is not None:
            os.close(fd)


def _copy_chunks(scan: _Scan, vol: np.ndarray, headers: np.ndarray | None, report: _Throttle, cancel: Cancel | None,
                 raw: np.ndarray, flat_all: np.ndarray, fd: int | None) -> tuple[dict[str, float], int]:
    """The chunk loop of _stream: segyio reads, NaN/inf zeroing, contiguous pwrite or scatter, running sums."""
    n, ns = scan.f.tracecount, scan.geometry.sample_count
    chunk = max(1, CHUNK_BYTES // (ns * 8))
    acc = {"sum": 0.0, "sumsq": 0.0, "count": 0, "min": math.inf, "max": -math.inf}
    bad_total = 0
    vol2d = vol.reshape(-1, ns)
    heads2d = headers.reshape(-1, 240) if headers is not None else None
    for a in range(0, n, chunk):
        if cancel is not None and cancel():
            raise ImportCancelled(f"import of {scan.path} cancelled at trace {a} of {n}")
        b = min(a + chunk, n)
        keep = scan.keep[a:b]
        data = np.asarray(scan.f.trace.raw[a:b], dtype=np.float32).reshape(b - a, ns)
        heads = raw[a:b, :240]
        flat = flat_all[a:b]
        if not keep.all():
            data, heads, flat = data[keep], heads[keep], flat[keep]
        if not np.isfinite(data).all():  # counted, zeroed and reported: a NaN would poison every normalisation
            bad = ~np.isfinite(data)
            bad_total += int(bad.sum())
            data[bad] = 0.0
        # Sorted files map a chunk of traces onto consecutive cache rows: one slice copy instead of a scatter.
        where = slice(int(flat[0]), int(flat[0]) + len(flat)) \
            if len(flat) and flat[-1] - flat[0] == len(flat) - 1 and (np.diff(flat) == 1).all() else flat
        if isinstance(where, slice) and fd is not None:
            # pwrite into the page cache: cheaper than faulting in fresh memmap pages one 4 KiB page at a time
            os.pwrite(fd, np.ascontiguousarray(data), where.start * ns * 4)
        else:
            vol2d[where] = data
        if heads2d is not None:
            heads2d[where] = heads
        if data.size:
            acc["sum"] += float(data.sum(dtype=np.float64))
            acc["sumsq"] += float(np.einsum("ij,ij->", data, data, dtype=np.float64))
            acc["count"] += data.size
            acc["min"], acc["max"] = min(acc["min"], float(data.min())), max(acc["max"], float(data.max()))
        report(b / n, f"{b} of {n} traces")
    return acc, bad_total


def _stats(vol: np.ndarray, live: np.ndarray, acc: dict[str, float], nan_count: int) -> dict[str, float]:
    """Exact mean/std/min/max over live traces; p01/p99 from up to STATS_TRACES evenly spread live traces."""
    count = max(acc["count"], 1)
    mean = acc["sum"] / count
    std = math.sqrt(max(acc["sumsq"] / count - mean * mean, 0.0))
    li, lx = np.nonzero(live)
    pick = np.linspace(0, len(li) - 1, min(STATS_TRACES, len(li))).astype(np.int64) if len(li) else []
    sample = np.asarray(vol[li[pick], lx[pick]], dtype=np.float64) if len(li) else np.zeros(1)
    p01, p99 = np.percentile(sample, [1, 99])
    return {"mean": mean, "std": std, "min": acc["min"] if acc["count"] else 0.0,
            "max": acc["max"] if acc["count"] else 0.0, "p01": float(p01), "p99": float(p99),
            "nan_count": nan_count}


def _fill_dead(scan: _Scan, headers: np.ndarray, live: np.ndarray, iline: int, xline: int,
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


def _grid_coordinates(scan: _Scan, live: np.ndarray) -> np.ndarray:
    """[ni, nx, 2] coordinates; dead positions from an affine fit (il, xl) -> (x, y) over the live traces."""
    ni, nx, _ = scan.geometry.shape
    cdp = np.zeros((ni, nx, 2), dtype=np.float64)
    cdp[scan.ii[scan.keep], scan.xx[scan.keep]] = scan.coords[scan.keep]
    if (~live).any() and live.sum() >= 3:
        li, lx = np.nonzero(live)
        design = np.stack([li, lx, np.ones_like(li)], axis=1).astype(np.float64)
        fit, *_ = np.linalg.lstsq(design, cdp[li, lx], rcond=None)
        di, dx = np.nonzero(~live)
        cdp[di, dx] = np.stack([di, dx, np.ones_like(di)], axis=1) @ fit
    return cdp


def _source_info(scan: _Scan, iline: int, xline: int, offset: int | None) -> dict:
    return {"path": str(scan.path.resolve()), "format": int(scan.f.bin[segyio.BinField.Format]),
            "endian": scan.endian, "sorting": scan.sorting, "traces": int(scan.f.tracecount),
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
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # leftover of a crashed import
    report = _Throttle(progress)
    scan = _scan(path, iline, xline, endian, offset, sample_unit)
    try:
        ni, nx, _ = scan.geometry.shape
        live = np.zeros((ni, nx), dtype=bool)
        live[scan.ii[scan.keep], scan.xx[scan.keep]] = True
        cdp = _grid_coordinates(scan, live)
        survey = Survey.create(partial, scan.geometry, name=name or folder.name,
                               source=_source_info(scan, iline, xline, offset))
        headers = np.lib.format.open_memmap(partial / "headers.tmp.npy", "w+", np.uint8, (ni, nx, 240))
        vol = survey.new_volume(volume)
        acc, nan_count = _stream(scan, vol, headers, report, cancel)
        vol.flush()
        _fill_dead(scan, headers, live, iline, xline, cdp)
        arrays = GeometryArrays(cdp[..., 0], cdp[..., 1], ~live, _text_headers(path, int(scan.f.ext_headers)),
                                _binary_header(path), headers)
        write_geometry_h5(partial / "geometry.h5", arrays)
        del headers
        (partial / "headers.tmp.npy").unlink()
        survey.doc["has_geometry_h5"] = True
        survey.doc["source"]["dead_traces"] = int((~live).sum())
        survey.register_volume(volume, _stats(vol, live, acc, nan_count))
        del vol
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        scan.f.close()
    report(1.0, f"imported {path.name}: {ni} x {nx} x {scan.geometry.sample_count}", force=True)
    out = Survey.open(folder)
    out.import_report = ImportReport(int(scan.keep.sum()), int((~live).sum()), nan_count, scan.endian, scan.sorting)
    return out


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
    survey = Survey.open(survey_folder)
    if volume in survey.volumes:
        raise SurveyError(f"survey {survey.name!r} already has a volume {volume!r}; choose another name")
    scan = _scan(Path(path), iline, xline, endian, offset, survey.geometry.sample_unit)
    tmp = survey.folder / f"{volume}.f32.partial"
    try:
        diff = scan.geometry.differences(survey.geometry)
        if diff:
            raise _fail(Path(path), f"its grid differs from survey {survey.name!r}: " + "; ".join(diff))
        ni, nx, ns = survey.shape
        live = np.zeros((ni, nx), dtype=bool)
        live[scan.ii[scan.keep], scan.xx[scan.keep]] = True
        with open(tmp, "wb") as fh:
            fh.truncate(ni * nx * ns * 4)
        vol = np.memmap(tmp, dtype=np.float32, mode="r+", shape=(ni, nx, ns))
        acc, nan_count = _stream(scan, vol, None, _Throttle(progress), cancel)
        vol.flush()
        stats = _stats(vol, live, acc, nan_count)
        del vol
        os.replace(tmp, survey.folder / f"{volume}.f32")
        survey.register_volume(volume, stats)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        scan.f.close()
    survey.import_report = ImportReport(int(scan.keep.sum()), int((~live).sum()), nan_count, scan.endian,
                                        scan.sorting)
    return survey
