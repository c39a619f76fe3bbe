"""Benchmark: SEG-Y -> survey cache throughput, and random crop reads from the cache vs segyio.

Prints one JSON line. Baselines are measured in the same run on the same file:
- import GB/s vs plain sequential reading of the SEG-Y in 64 MB chunks. The page cache cannot be dropped without
  root, so the file is read once to warm it first: both figures are warm-cache figures (CPU/memory bound).
- random inline crops/s from the cache's memmap (extract_crop) vs the same crops read through segyio
  (f.trace.raw over the crop's consecutive traces, then sliced in samples).
Targets: import >= 0.5 x sequential read; cache crops >= 10 x segyio.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import segyio

from workers.crops import CropSpec, extract_crop
from workers.segy_import import import_segy


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


def sequential_read(path: Path, chunk: int = 64 << 20) -> float:
    """Seconds to read the whole file in chunks (a lower bound for any importer)."""
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(chunk)
        while fh.readinto(buf):
            pass
    return time.perf_counter() - t0


def crop_rates(survey_vol: np.ndarray, path: Path, spec: CropSpec, n: int, n_segyio: int) -> tuple[float, float]:
    """(cache crops/s, segyio crops/s) for random inline crops."""
    ni, nx, ns = survey_vol.shape
    rng = np.random.default_rng(1)
    centers = np.stack([rng.integers(0, ni, n), rng.integers(0, nx, n), rng.integers(0, ns, n)], axis=1)
    out = np.empty(spec.out_shape(), dtype=np.float32)
    t0 = time.perf_counter()
    for c in centers:
        extract_crop(survey_vol, tuple(c), spec, out=out)
    cache_rate = n / (time.perf_counter() - t0)
    hx, hs = spec.size[0] // 2, spec.size[1] // 2
    t0 = time.perf_counter()
    with segyio.open(str(path)) as f:
        for i, x, s in centers[:n_segyio]:
            x0, x1 = max(x - hx, 0), min(x - hx + spec.size[0], nx)
            block = f.trace.raw[i * nx + x0:i * nx + x1]
            _ = block[:, max(s - hs, 0):min(s - hs + spec.size[1], ns)]
    segyio_rate = n_segyio / (time.perf_counter() - t0)
    return cache_rate, segyio_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="bigger cube (400 x 400 x 500) and more crops")
    args = ap.parse_args()
    ni, nx, ns = (400, 400, 500) if args.long else (200, 200, 300)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sgy"
        make_segy(path, ni, nx, ns)
        size = path.stat().st_size
        sequential_read(path)  # warm the page cache: both figures below are warm-cache
        seq_s = min(sequential_read(path) for _ in range(3))
        t0 = time.perf_counter()
        survey = import_segy(path, Path(tmp) / "survey")
        import_s = time.perf_counter() - t0
        spec = CropSpec((64, 64), "inline")
        cache_rate, segyio_rate = crop_rates(survey.volume(), path, spec, 20000 if args.long else 5000, 500)
    seq_gbs, imp_gbs = size / seq_s / 1e9, size / import_s / 1e9
    print(json.dumps({
        "bench": "import", "shape": [ni, nx, ns], "file_bytes": size, "page_cache": "warm (cannot drop)",
        "sequential_read_gbs": round(seq_gbs, 3), "import_gbs": round(imp_gbs, 3),
        "import_vs_sequential": round(imp_gbs / seq_gbs, 3), "import_target": 0.5,
        "crop": spec.to_dict(), "cache_crops_per_s": round(cache_rate, 1), "segyio_crops_per_s": round(segyio_rate, 1),
        "cache_vs_segyio": round(cache_rate / segyio_rate, 2), "crop_target": 10,
    }))


if __name__ == "__main__":
    main()
