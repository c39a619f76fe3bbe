"""Predictions written back as SEG-Y reopen in segyio with the source's geometry and coordinates."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import segyio

from workers.segy_import import import_segy
from workers.segy_write import SegyWriteError, write_like_survey


@pytest.mark.parametrize("name,endian", [("f3.sgy", "big"), ("f3-lsb.sgy", "little")])
@pytest.mark.parametrize("dtype,fmt", [("int8", 8), ("float32", 5)])
def test_written_cube_has_source_geometry(shared_data: Path, tmp_path: Path, name: str, endian: str, dtype: str,
                                          fmt: int) -> None:
    src = tmp_path / name
    shutil.copy(shared_data / "segyio" / name, src)
    survey = import_segy(src, tmp_path / "s")
    pred = (np.arange(np.prod(survey.shape)) % 7).reshape(survey.shape).astype(np.float32)
    if dtype == "float32":
        pred /= 7
    out = write_like_survey(survey, tmp_path / "pred.sgy", pred if dtype == "int8" else (lambda i: pred[i]), dtype)
    with segyio.open(str(src), endian=endian) as a, segyio.open(str(out), endian=endian) as b:
        assert list(b.ilines) == list(a.ilines) and list(b.xlines) == list(a.xlines)
        np.testing.assert_array_equal(b.samples, a.samples)
        for field in (segyio.TraceField.CDP_X, segyio.TraceField.CDP_Y, segyio.TraceField.SourceGroupScalar):
            np.testing.assert_array_equal(b.attributes(field)[:], a.attributes(field)[:])
        assert b.bin[segyio.BinField.Format] == fmt and b.text[0] == a.text[0]
        np.testing.assert_array_equal(segyio.tools.cube(b), pred)


def test_bad_data_is_refused(shared_data: Path, tmp_path: Path) -> None:
    survey = import_segy(shared_data / "segyio" / "small.sgy", tmp_path / "s")
    with pytest.raises(SegyWriteError, match="shape"):
        write_like_survey(survey, tmp_path / "o.sgy", np.zeros((2, 2, 2)))
    with pytest.raises(SegyWriteError, match="do not fit int8"):
        write_like_survey(survey, tmp_path / "o.sgy", np.full(survey.shape, 300))
    with pytest.raises(SegyWriteError, match="expected"):
        write_like_survey(survey, tmp_path / "o.sgy", lambda i: np.zeros(3), "float32")
    assert not list(tmp_path.glob("o.sgy*"))


def test_dead_traces_are_written_with_synthesised_headers(tmp_path: Path) -> None:
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, list(range(0, 20, 4)), 5
    positions = [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]           # (2, 2) is missing
    with segyio.create(str(tmp_path / "holes.sgy"), spec) as f:
        for k, (il, xl) in enumerate(positions):
            f.header[k] = {189: il, 193: xl, 181: 100 * il, 185: 10 * xl, 71: 1}
            f.trace[k] = np.full(5, k + 1, dtype=np.float32)
    survey = import_segy(tmp_path / "holes.sgy", tmp_path / "s")
    out = write_like_survey(survey, tmp_path / "o.sgy", np.asarray(survey.volume()), "float32")
    with segyio.open(str(out)) as f:   # a full regular grid now: no ignore_geometry needed
        assert f.tracecount == 6 and list(f.ilines) == [1, 2, 3]
        dead = f.header[3]
        assert (dead[189], dead[193], dead[181], dead[185], dead[29]) == (2, 2, 200, 20, 2)
        assert not f.trace[3].any()
