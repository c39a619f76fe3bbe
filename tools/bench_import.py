"""Benchmark: SEG-Y -> survey cache throughput, and random training crops from the cache vs segyio.

Prints one JSON line. Every baseline is measured in the same run on the same file:
- import GB/s vs sequential reading of the SEG-Y (the best of 1 MB and 64 MB reads), twice:
  warm: the file is in the page cache (read once first), so both figures are memory/CPU bound;
  cold: the file's pages are evicted with posix_fadvise(DONTNEED) (no root needed) before the read and before the
  import, so both read from the disk (on a VM the host may still cache it).
  Rounds of a read then an import; the ratio is the median of the rounds' ratios (the disk of a shared VM varies
  2-4x from moment to moment, and a read and an import side by side in time meet the same disk); the best round of
  each side is compared too (``_best``).
  The import leaves its cache to the kernel's writeback (workers/survey.py: .unsynced markers, fsynced by the
  first open); ``import_then_fsync`` adds that first open run at once, the worst case (a job that opens the survey
  later finds the pages written already). ``write_new_file_gbs`` (writing and fsyncing a new file of the same
  size) is what writing the float32 cache costs on its own.
- random crops/s as a training job takes them (inline, crossline and time 2D crops, 3D cubes) from the cache
  (workers.crops.extract_crop on Survey.volume()) vs through segyio on a file opened once. For segyio each
  orientation uses the fastest of several access patterns (line reads, trace-range reads, per-trace sample ranges;
  with and without segyio's mmap), chosen by timing them in this run; the first crops are checked equal.
Targets: import >= 0.5 x sequential read; cache crops >= 10 x segyio.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import segyio

from workers.crops import CropSpec, extract_crop
from workers.segy_import import import_segy
from workers.survey import Survey

CropReader = Callable[[segyio.SegyFile, tuple[int, int, int]], np.ndarray]
SPECS = {"inline": CropSpec((64, 64), "inline"), "crossline": CropSpec((64, 64), "crossline"),
         "time": CropSpec((64, 64), "time"), "3d": CropSpec((64, 64, 64), "3d")}


def make_segy(path: Path, ni: int, nx: int, ns: int) -> None:
    """An IEEE-float (format 5) inline-sorted cube with inline/crossline numbers in the standard bytes."""
    spec = segyio.spec()
    spec.format, spec.sorting = 5, segyio.TraceSortingFormat.INLINE_SORTING
    spec.samples, spec.ilines, spec.xlines = list(range(0, 4 * ns, 4)), list(range(1, ni + 1)), list(range(1, nx + 1))
    rng = np.random.default_rng(0)
    with segyio.create(str(path), spec) as f:
        k = 0
        for il in spec.ilines:
            for xl in spec.xlines:
                f.header[k] = {189: il, 193: xl, 181: 1000 * il, 185: 1000 * xl}
                k += 1
            f.iline[il] = rng.normal(size=(nx, ns)).astype(np.float32)


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (they must be clean: fsync first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


SETTLE_S = 4.0  # longer than a VM guest's free page reporting delay (2 s in Linux's page_reporting)


def settled_cold(path: Path, rest: float = SETTLE_S) -> None:
    """evict() and then wait ``rest`` seconds, so that what follows starts from the same state of free memory
    whatever ran before it. NOTE [first touch on a VM]: on a VM whose guest reports free memory to its host
    (virtio-balloon free page reporting, this project's Firecracker machine), memory the guest freed a few seconds
    earlier costs a host page fault at its next first touch: 1.1 GB of new pages took 1.3-2.5 s of kernel time
    after 5 s of rest and 0.10 s when touched again at once (2026-12-02). A step that runs right after an eviction
    reuses the pages just freed and pays nothing; one that runs seconds later pays for every page it fills (the
    read's page cache, the import's output). Comparing the two without the same rest measures the host, not the
    code."""
    evict(path)
    time.sleep(rest)


def first_touch_s_per_gb(rest: float = SETTLE_S, size: int = 256 << 20) -> float:
    """Seconds per GB to touch new anonymous memory after ``rest`` seconds (see settled_cold's NOTE): about 0.1
    on bare metal, more where the host takes freed memory back."""
    time.sleep(rest)
    t0 = time.perf_counter()
    block = np.empty(size, dtype=np.uint8)
    block[::4096] = 1
    elapsed = time.perf_counter() - t0
    del block
    return elapsed * (1 << 30) / size


def sequential_read(path: Path, chunk: int) -> float:
    """Seconds to read the whole file in ``chunk``-byte reads (a lower bound for any importer)."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        while fh.readinto(buf):
            pass
    return time.perf_counter() - t0


def best_read(path: Path, cold: bool, repeat: int) -> float:
    """Fastest sequential read over 1 MB and 64 MB reads (64 MB alone pays for faulting in a fresh buffer)."""
    times = []
    for chunk in (1 << 20, 64 << 20):
        for _ in range(repeat):
            if cold:
                evict(path)
            times.append(sequential_read(path, chunk))
    return min(times)


def write_new_file(folder: Path, size: int) -> float:
    """Seconds to write and fsync a new file of ``size`` bytes in 4 MB pwrites (what the cache write costs)."""
    block = np.ones(4 << 20, dtype=np.uint8)
    path = folder / "write.bin"
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for a in range(0, size, len(block)):
            os.pwrite(fd, block[:min(len(block), size - a)], a)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t0
    path.unlink()
    return elapsed


def timed_import(path: Path, folder: Path, cold: bool) -> tuple[float, float]:
    """(seconds of import_segy, seconds of the first Survey.open after it, which fsyncs what the import wrote)."""
    if cold:
        evict(path)
    shutil.rmtree(folder, ignore_errors=True)
    os.sync()  # nothing of an earlier step still being written back
    t0 = time.perf_counter()
    import_segy(path, folder)
    t1 = time.perf_counter()
    Survey.open(folder)
    return t1 - t0, time.perf_counter() - t1


# segyio crop readers: (file, centre) -> crop in extract_crop's layout. Windows lie inside the volume.
def _window(c: int, size: int) -> slice:
    return slice(c - size // 2, c - size // 2 + size)


def _inline_range(f, c):
    nx = len(f.xlines)
    x, s = _window(c[1], 64), _window(c[2], 64)
    return f.trace.raw[c[0] * nx + x.start:c[0] * nx + x.stop][:, s]


def _inline_line(f, c):
    return f.iline[f.ilines[c[0]]][_window(c[1], 64), _window(c[2], 64)]


def _crossline_stepped(f, c):
    nx = len(f.xlines)
    i, s = _window(c[0], 64), _window(c[2], 64)
    return f.trace.raw[i.start * nx + c[1]:i.stop * nx + c[1]:nx][:, s]


def _crossline_line(f, c):
    return f.xline[f.xlines[c[1]]][_window(c[0], 64), _window(c[2], 64)]


def _per_trace(f, c, inlines, xlines, samples):
    nx = len(f.xlines)
    return np.stack([np.stack([f.trace[i * nx + x, samples] for x in range(xlines.start, xlines.stop)])
                     for i in range(inlines.start, inlines.stop)])


def _crossline_traces(f, c):
    return _per_trace(f, c, _window(c[0], 64), slice(c[1], c[1] + 1), _window(c[2], 64))[:, 0]


def _time_depth_slice(f, c):
    return f.depth_slice[c[2]][_window(c[0], 64), _window(c[1], 64)]


def _time_ranges(f, c):
    nx = len(f.xlines)
    x = _window(c[1], 64)
    i = _window(c[0], 64)
    return np.stack([f.trace.raw[k * nx + x.start:k * nx + x.stop][:, c[2]] for k in range(i.start, i.stop)])


def _cube_ranges(f, c):
    nx = len(f.xlines)
    x, s = _window(c[1], 64), _window(c[2], 64)
    i = _window(c[0], 64)
    return np.stack([f.trace.raw[k * nx + x.start:k * nx + x.stop][:, s] for k in range(i.start, i.stop)])


def _cube_lines(f, c):
    i, x, s = _window(c[0], 64), _window(c[1], 64), _window(c[2], 64)
    return np.stack([f.iline[f.ilines[k]][x, s] for k in range(i.start, i.stop)])


SEGYIO_READERS: dict[str, dict[str, CropReader]] = {
    "inline": {"trace.raw range": _inline_range, "iline": _inline_line},
    "crossline": {"trace.raw stepped range": _crossline_stepped, "xline": _crossline_line,
                  "trace[k, samples] per trace": _crossline_traces},
    "time": {"depth_slice": _time_depth_slice, "trace.raw range per inline": _time_ranges},
    "3d": {"trace.raw range per inline": _cube_ranges, "iline per inline": _cube_lines},
}


def centres(shape: tuple[int, int, int], n: int, seed: int) -> np.ndarray:
    """Random crop centres whose 64-wide windows lie inside the volume on every axis."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(32, dim - 32, n) for dim in shape], axis=1)


def rate(read: Callable[[tuple[int, int, int]], object], points: np.ndarray, budget_s: float) -> float:
    """Crops per second over ``points`` (stops early after ``budget_s`` seconds, at least 3 crops)."""
    t0 = time.perf_counter()
    done = 0
    for c in points:
        read(tuple(int(v) for v in c))
        done += 1
        if done >= 3 and time.perf_counter() - t0 > budget_s:
            break
    return done / (time.perf_counter() - t0)


def best_segyio(path: Path, orientation: str, points: np.ndarray, vol: np.ndarray, budget_s: float) -> dict:
    """Fastest segyio access for this orientation (each tried with and without mmap), checked against the cache."""
    trials = []
    for use_mmap in (False, True):
        with segyio.open(str(path)) as f:
            if use_mmap:
                f.mmap()
            for name, reader in SEGYIO_READERS[orientation].items():
                for c in points[:2]:
                    c = tuple(int(v) for v in c)
                    want = extract_crop(vol, c, SPECS[orientation])
                    if not np.array_equal(np.asarray(reader(f, c), dtype=np.float32), want):
                        raise AssertionError(f"segyio reader {name!r} disagrees with the cache at {c}")
                trials.append((rate(lambda c: reader(f, c), points[:20], budget_s / 4),
                               name + (" (mmap)" if use_mmap else ""), use_mmap, reader))
    _, name, use_mmap, reader = max(trials, key=lambda t: t[0])
    with segyio.open(str(path)) as f:
        if use_mmap:
            f.mmap()
        return {"method": name, "rate": rate(lambda c: reader(f, c), points, budget_s)}


def crop_figures(vol: np.ndarray, path: Path, n: int, budget_s: float) -> dict:
    """Per orientation: cache and segyio crops/s and their ratio; overall: an even mix of the four orientations."""
    out: dict[str, dict] = {}
    for k, (orientation, spec) in enumerate(SPECS.items()):
        points = centres(vol.shape, n, seed=k)
        buf = np.empty(spec.out_shape(), dtype=np.float32)
        cache = rate(lambda c: extract_crop(vol, c, spec, out=buf), points, budget_s)
        seg = best_segyio(path, orientation, points, vol, budget_s)
        out[orientation] = {"cache_per_s": round(cache, 1), "segyio_per_s": round(seg["rate"], 1),
                            "ratio": round(cache / seg["rate"], 1), "segyio_method": seg["method"]}
    # An even mix spends 1/rate per crop of each orientation: the overall rate is the harmonic mean.
    mix = {side: len(out) / sum(1.0 / o[f"{side}_per_s"] for o in out.values()) for side in ("cache", "segyio")}
    out["overall"] = {"cache_per_s": round(mix["cache"], 1), "segyio_per_s": round(mix["segyio"], 1),
                      "ratio": round(mix["cache"] / mix["segyio"], 1)}
    return out


def import_figures(path: Path, tmp: Path, rounds: int) -> dict:
    """Warm and cold: ``rounds`` rounds, each a sequential read then an import, so both sides meet the same
    moments of a shared machine's disk. ``import_vs_sequential`` is the median over rounds of the round's read time
    / import time; ``..._best`` compares the best round of each side; every round is kept."""
    size = path.stat().st_size
    sequential_read(path, 1 << 20)  # warm the page cache
    figures = {}
    gbs = lambda seconds: round(size / seconds / 1e9, 3)  # noqa: E731
    for label, cold in (("warm", False), ("cold", True)):
        reads, imports, settles = [], [], []
        for _ in range(rounds):
            os.sync()
            reads.append(best_read(path, cold, 1))
            import_s, settle_s = timed_import(path, tmp / "survey", cold)
            imports.append(import_s)
            settles.append(settle_s)
        synced = [i + s for i, s in zip(imports, settles)]
        figures[label] = {"sequential_read_gbs": gbs(min(reads)), "import_gbs": gbs(min(imports)),
                          "import_vs_sequential": round(statistics.median(r / i for r, i in zip(reads, imports)), 3),
                          "import_vs_sequential_best": round(min(reads) / min(imports), 3),
                          "import_then_fsync_gbs": gbs(min(synced)),
                          "import_then_fsync_vs_sequential": round(
                              statistics.median(r / i for r, i in zip(reads, synced)), 3),
                          "rounds": [{"read_gbs": gbs(r), "import_gbs": gbs(i), "first_open_fsync_s": round(s, 3)}
                                     for r, i, s in zip(reads, imports, settles)]}
    figures["write_new_file_gbs"] = round(size / min(write_new_file(tmp, size) for _ in range(3)) / 1e9, 3)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="bigger cube (600 x 600 x 500, 0.8 GB), more repeats and "
                    "crops")
    args = ap.parse_args()
    # 0.2 GB by default: big enough that fixed costs (opening, statistics, geometry file) do not dominate as they
    # would on a toy file, small enough to make and import twice in well under a minute. Real surveys are larger.
    ni, nx, ns = (600, 600, 500) if args.long else (300, 300, 500)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sgy"
        make_segy(path, ni, nx, ns)
        size = path.stat().st_size
        imports = import_figures(path, Path(tmp), 8 if args.long else 5)
        import_segy(path, Path(tmp) / "crops")
        survey = Survey.open(Path(tmp) / "crops")  # as a training job opens it: fsyncs what the import wrote
        os.sync()  # and no writeback of the import rounds goes on under the crop timings
        crops = crop_figures(survey.volume(), path, 20000 if args.long else 2000, 8.0 if args.long else 2.0)
    print(json.dumps({
        "bench": "import", "shape": [ni, nx, ns], "file_bytes": size,
        "format": 5, "import_warm": imports["warm"], "import_cold": imports["cold"],
        "write_new_file_gbs": imports["write_new_file_gbs"], "import_target": 0.5,
        "crops": crops, "crop_target": 10,
    }))


if __name__ == "__main__":
    main()
