"""Results back to SEG-Y with the geometry and headers of the survey's source file.

The output repeats the source's textual header(s), its binary header (with the sample format code changed: 8 for
1-byte integers, 5 for IEEE float) and every trace header, in the source's byte order. Every grid position is written,
dead ones included, with the header synthesised at import (trace identification code 2 = dead), so the output is a
complete regular grid that segyio opens without ignore_geometry. Written inline by inline, so memory stays at one
inline whatever the cube size; built as ``.<out>.partial`` and renamed at the end.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from workers.names import work_path
from workers.survey import Survey

FORMAT_CODES = {"int8": 8, "float32": 5}
FORMAT_CODE_OFFSET = 24  # bytes 3225-3226 of the file: sample format code in the binary header


class SegyWriteError(ValueError):
    """Data that cannot be written as asked (shape, dtype, value range)."""


Source = np.ndarray | Callable[[int], np.ndarray]


def _binary_header(raw: bytes, code: int, big: bool) -> bytes:
    head = bytearray(raw)
    head[FORMAT_CODE_OFFSET:FORMAT_CODE_OFFSET + 2] = code.to_bytes(2, "big" if big else "little")
    return bytes(head)


def _inline(data: Source, i: int, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    block = np.asarray(data(i) if callable(data) else data[i])
    if block.shape != shape:
        raise SegyWriteError(f"inline index {i}: got shape {block.shape}, expected {shape} (crossline x sample)")
    if dtype.kind == "i" and block.size and (block.min() < -128 or block.max() > 127):
        raise SegyWriteError(f"inline index {i}: values {block.min()}..{block.max()} do not fit int8 (format 8); "
                             "write class ids < 128 or use dtype='float32'")
    return block.astype(dtype)


def write_like_survey(survey: Survey, out_path: str | os.PathLike, data: Source, dtype: str = "int8") -> Path:
    """Write ``data`` ([ni, nx, ns] array or memmap, or a callable inline_index -> [nx, ns]) as a SEG-Y like the
    survey's source. ``dtype`` "int8" (format 8, for class ids) or "float32" (format 5, for probabilities)."""
    if dtype not in FORMAT_CODES:
        raise SegyWriteError(f"dtype {dtype!r} is not supported; use one of {list(FORMAT_CODES)}")
    ni, nx, ns = survey.shape
    if not callable(data) and tuple(np.shape(data)) != survey.shape:
        raise SegyWriteError(f"data shape {np.shape(data)} differs from survey {survey.name!r} shape {survey.shape}")
    big = survey.source.get("endian", "big") == "big"
    out_dt = np.dtype(("i1" if dtype == "int8" else "f4")).newbyteorder(">" if big else "<")
    texts, binary = survey.source_headers()
    out_path = Path(out_path)
    tmp = work_path(out_path)
    try:
        with open(tmp, "wb") as fh:
            for text in texts:
                fh.write(text.ljust(3200, b" ")[:3200])
            fh.write(_binary_header(binary, FORMAT_CODES[dtype], big))
            record = np.empty((nx, 240 + ns * out_dt.itemsize), dtype=np.uint8)
            for i in range(ni):
                record[:, :240] = survey.trace_headers_of_inline(i)
                record[:, 240:] = _inline(data, i, (nx, ns), out_dt).view(np.uint8).reshape(nx, -1)
                fh.write(record.tobytes())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path
