"""The importer's block loop (workers/segy_import.py): reads of several chunks at a time, fetched by a thread ahead of
the decoding, written by another, and the space of the cache reserved before the first write
(workers/row_writer.py)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import segyio

from workers import segy_import, segy_records
from workers.row_writer import reserve
from workers.segy_import import SegyImportError, import_segy

NS = 20


def _pre_stack(path: Path) -> np.ndarray:
    """6 inlines x 5 crosslines x offsets 100, 200, 300, NaN and inf among the samples; returns the samples."""
    traces = [(il, xl, off) for il in range(1, 7) for xl in range(10, 15) for off in (100, 200, 300)]
    data = np.random.default_rng(3).normal(size=(len(traces), NS)).astype(np.float32)
    data[4, 2] = data[40, 0] = np.nan
    data[46, 7] = -np.inf
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, list(range(0, 4 * NS, 4)), len(traces)
    with segyio.create(str(path), spec) as f:
        for k, (il, xl, off) in enumerate(traces):
            f.header[k] = {segyio.TraceField.INLINE_3D: il, segyio.TraceField.CROSSLINE_3D: xl,
                           segyio.TraceField.offset: off, segyio.TraceField.CDP_X: 100 * il,
                           segyio.TraceField.CDP_Y: 100 * xl, segyio.TraceField.SourceGroupScalar: 1}
            f.trace[k] = data[k]
    return data


@pytest.mark.parametrize("block_chunks", [1, 3, 64])
def test_the_survey_does_not_depend_on_the_block_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      block_chunks: int) -> None:
    """Chunks of 4 traces, blocks of 1, 3 and all the chunks, one offset of three kept (kept traces cross block
    boundaries): the same volume and the same statistics, to the last bit, as segyio's reading with NaN/inf
    zeroed."""
    data = _pre_stack(tmp_path / "ps.sgy")
    monkeypatch.setattr(segy_import, "CHUNK_BYTES", 4 * (240 + 4 * NS))
    monkeypatch.setattr(segy_import, "BLOCK_CHUNKS", 1)
    base = import_segy(tmp_path / "ps.sgy", tmp_path / "one", offset=200)
    monkeypatch.setattr(segy_import, "BLOCK_CHUNKS", block_chunks)
    survey = import_segy(tmp_path / "ps.sgy", tmp_path / "s", offset=200)
    kept = data[1::3]
    assert survey.import_report == base.import_report
    assert survey.import_report.nan_count == int((~np.isfinite(kept)).sum()) == 3
    want = np.where(np.isfinite(kept), kept, 0).reshape(6, 5, NS)
    np.testing.assert_array_equal(survey.volume(), want)
    assert (tmp_path / "s" / "seismic.f32").read_bytes() == (tmp_path / "one" / "seismic.f32").read_bytes()
    stats = json.loads((tmp_path / "s" / "survey.json").read_text())["volumes"]
    assert stats == json.loads((tmp_path / "one" / "survey.json").read_text())["volumes"]
    assert survey.stats()["mean"] == pytest.approx(float(want.mean(dtype=np.float64)), rel=1e-6)
    heads = survey.geometry_arrays().trace_headers
    assert int.from_bytes(heads[5, 4, 36:40].tobytes(), "big") == 200  # the kept offset's own headers


@pytest.mark.parametrize("reads", ["mapped", "read"])
def test_a_file_cut_short_during_the_import_fails_naming_where(shared_data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, reads: str) -> None:
    """The file loses its second half after the scan (at the first progress report, while blocks are being read
    ahead): the reader's error reaches the caller, and nothing is left behind. Both ways of reading blocks
    (workers/segy_records.py NOTE [mapped reads]): a kernel without MADV_POPULATE_READ answers EINVAL, as an
    unknown advice does, and gets plain reads."""
    if reads == "read":
        monkeypatch.setattr(segy_records, "MADV_POPULATE_READ", 12345)
        assert segy_records._mapping(shared_data / "segyio" / "f3.sgy", 3600) is None
    else:
        assert segy_records._mapping(shared_data / "segyio" / "f3.sgy", 3600) is not None, "no mapped reads here"
    src = tmp_path / "f3.sgy"
    shutil.copy(shared_data / "segyio" / "f3.sgy", src)
    with segyio.open(str(src)) as f:
        traces = f.tracecount
    trace_bytes = (src.stat().st_size - 3600) // traces
    monkeypatch.setattr(segy_import, "CHUNK_BYTES", trace_bytes)
    monkeypatch.setattr(segy_import, "BLOCK_CHUNKS", 2)
    cut = 3600 + trace_bytes * (traces // 2) + 100

    def shorten(fraction: float, message: str) -> None:
        if src.stat().st_size > cut:
            os.truncate(src, cut)

    with pytest.raises(SegyImportError, match=f"f3.sgy: the file ended inside trace {traces // 2}"):
        import_segy(src, tmp_path / "s", progress=shorten)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f3.sgy"]


def test_reserve_allocates_the_blocks_and_keeps_zeros(tmp_path: Path) -> None:
    path = tmp_path / "cache.f32"
    path.write_bytes(b"\x01" * 4096)
    fd = os.open(path, os.O_RDWR)
    try:
        reserved = reserve(fd, 4096, 3 << 20)
    finally:
        os.close(fd)
    if not reserved:
        pytest.skip("this filesystem has no fallocate: the writes allocate as they go")
    st = path.stat()
    assert st.st_size == 4096 + (3 << 20) and st.st_blocks * 512 >= st.st_size
    data = path.read_bytes()
    assert data[:4096] == b"\x01" * 4096 and not any(data[4096:])


def test_percentiles_of_a_file_whose_every_sample_is_kept(tmp_path: Path) -> None:
    """3900 traces of 250 samples: fewer than 2 x STATS_TRACES traces and 2 x STATS_DEPTHS samples, so the
    percentile sample is every sample, and more than three blocks, so the block buffers are reused: the sample
    must be a copy, not a view of a buffer."""
    ni, nx, ns = 39, 100, 250
    data = np.random.default_rng(5).normal(size=(ni * nx, ns)).astype(np.float32) * 50
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, list(range(0, 4 * ns, 4)), ni * nx
    with segyio.create(str(tmp_path / "c.sgy"), spec) as f:
        for k in range(ni * nx):
            f.header[k] = {segyio.TraceField.INLINE_3D: 1 + k // nx, segyio.TraceField.CROSSLINE_3D: 1 + k % nx}
            f.trace[k] = data[k]
    assert (240 + 4 * ns) * ni * nx > 3 * segy_import.CHUNK_BYTES * segy_import.BLOCK_CHUNKS
    stats = import_segy(tmp_path / "c.sgy", tmp_path / "s").stats()
    p01, p99 = np.percentile(data, [1, 99])
    assert stats["p01"] == pytest.approx(p01, rel=1e-6) and stats["p99"] == pytest.approx(p99, rel=1e-6)
