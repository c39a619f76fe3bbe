"""glibc malloc settings for the processes that run torch on the CPU (executors, ranks, shards).

torch takes a tensor's memory from malloc. With glibc's defaults a training step of a small unet (batches of 8
64 x 64 crops) frees and re-allocates its activations through fresh pages every step: about 6,000 page faults a
step, 15-20 % of the CPU time in the kernel, and a plain loop on this project's 2-core machine ran 150-180
samples/s where the same loop with the settings below ran 180-230 (0 faults a step; tools/bench_train.py runs its
bare loop with them too, so its ratio measures seisd's pipeline, not the allocator).

The settings: blocks up to MMAP_THRESHOLD come from the heap instead of their own mmap (glibc's ceiling for this
setting is 32 MiB on 64-bit), and up to TRIM_THRESHOLD of free memory at the top of the heap is kept instead of
handed back to the kernel after every step. Setting only the trim threshold would be worse than nothing: it freezes
glibc's adaptive mmap threshold at 128 KiB. An executor lives across jobs, so release() hands the kept memory back
(malloc_trim) when a job ends. Anything else (musl, macOS) is left as it is. An admin's own MALLOC_* environment
variables win: the settings are not applied when one is set.
"""
from __future__ import annotations

import ctypes
import functools
import os

MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library this process runs with, when it is glibc (looked up once)."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
        libc.gnu_get_libc_version  # present in glibc only
        return libc
    except (OSError, AttributeError):
        return None


def tune() -> bool:
    """Apply the settings to this process; True when they were applied."""
    libc = _glibc()
    if libc is None or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                          TRIM_THRESHOLD))


def release() -> None:
    """Hand free heap memory back to the kernel (after a job, so an idle executor does not keep its peak)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
