"""SEG-Y import into the survey cache, against segyio's own reading of the real segyio test files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import segyio

from workers import segy_import
from workers.segy_import import ImportCancelled, SegyImportError, add_volume, import_segy
from workers.survey import Geometry, Survey, SurveyError, boot_id

GOOD = ["f3.sgy", "f3-lsb.sgy", "Format1msb.sgy", "Format1lsb.sgy", "Format2msb.sgy", "Format3msb.sgy",
        "Format5msb.sgy", "Format5lsb.sgy", "Format6msb.sgy", "Format8msb.sgy", "Format16msb.sgy", "small.sgy",
        "small-lsb.sgy", "tiny.sgy"]
REFUSED = {"broken.sgy": "truncated", "text.sgy": "no traces", "shot-gather.sgy": "not a post-stack 3D grid",
           "small-ps.sgy": r"pre-stack data: 2 offsets \[1, 2\]"}


def _segyio_cube(path: Path, endian: str) -> tuple[np.ndarray, segyio.SegyFile]:
    f = segyio.open(str(path), endian=endian)
    return segyio.tools.cube(f), f


@pytest.mark.parametrize("name", GOOD)
def test_import_matches_segyio(shared_data: Path, tmp_path: Path, name: str) -> None:
    src = shared_data / "segyio" / name
    survey = import_segy(src, tmp_path / "s")  # endianness detected, never told
    endian = "little" if "lsb" in name else "big"
    assert survey.import_report.endian == endian
    cube, f = _segyio_cube(src, endian)
    with f:
        assert survey.inlines.tolist() == list(f.ilines)
        assert survey.crosslines.tolist() == list(f.xlines)
        np.testing.assert_allclose(survey.samples, f.samples)
        scalar = f.attributes(71)[0]
        x = f.attributes(181)[:].reshape(survey.shape[:2]) / (abs(scalar) if scalar < 0 else 1)
        np.testing.assert_allclose(survey.cdp_xy()[0], x)
        headers = survey.geometry_arrays().trace_headers
        assert headers.shape == (*survey.shape[:2], 240)
        assert int.from_bytes(headers[0, 0, 188:192].tobytes(), "big" if endian == "big" else "little") \
            == f.ilines[0]
    vol = survey.volume()
    assert not vol.flags.writeable and vol.shape == cube.shape
    # IBM float is converted by segyio in both readings; other formats are exact casts to float32
    np.testing.assert_allclose(vol, cube.astype(np.float32), rtol=1e-6)
    stats = survey.stats()
    assert stats["nan_count"] == 0
    assert stats["mean"] == pytest.approx(float(cube.astype(np.float64).mean()), rel=1e-6, abs=1e-9)
    assert stats["min"] <= stats["p01"] <= stats["p99"] <= stats["max"]
    assert not survey.dead_mask().any()
    assert not (tmp_path / ".s.partial").exists()


@pytest.mark.parametrize("name,why", REFUSED.items())
def test_bad_files_are_refused_with_the_reason(shared_data: Path, tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(SegyImportError, match=why) as err:
        import_segy(shared_data / "segyio" / name, tmp_path / "s")
    assert name in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,shape", [("1x1.sgy", (1, 1, 10)), ("1xN.sgy", (1, 6, 10)), ("Mx1.sgy", (6, 1, 10))])
def test_single_line_files_are_pre_stack_and_import_one_offset(shared_data: Path, tmp_path: Path, name: str,
                                                               shape: tuple[int, int, int]) -> None:
    src = shared_data / "segyio" / name
    with pytest.raises(SegyImportError, match=r"4 offsets \[0, 1, 2, 3\]"):
        import_segy(src, tmp_path / "refused")
    survey = import_segy(src, tmp_path / "s", offset=2)
    assert survey.shape == shape
    with segyio.open(str(src)) as f:
        want = np.stack([f.trace[k] for k in range(f.tracecount) if f.header[k][37] == 2])
    np.testing.assert_allclose(survey.volume().reshape(-1, shape[2]), want, rtol=1e-6)


def _write_segy(path: Path, positions: list[tuple[int, int]], data: np.ndarray, xl_sorted: bool = False) -> None:
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, list(range(0, 4 * data.shape[1], 4)), len(positions)
    with segyio.create(str(path), spec) as f:
        for k, (il, xl) in enumerate(positions):
            f.header[k] = {segyio.TraceField.INLINE_3D: il, segyio.TraceField.CROSSLINE_3D: xl,
                           segyio.TraceField.CDP_X: 1000 + 10 * il, segyio.TraceField.CDP_Y: 5000 + 20 * xl,
                           segyio.TraceField.SourceGroupScalar: 1}
            f.trace[k] = data[k]


def test_missing_traces_become_dead_and_nans_are_counted(tmp_path: Path) -> None:
    grid = [(il, xl) for il in (10, 12, 14, 16) for xl in (1, 2, 3, 4, 5)]
    holes = {(12, 3), (16, 1)}
    positions = [p for p in grid if p not in holes]
    data = np.arange(len(positions) * 8, dtype=np.float32).reshape(-1, 8) + 1
    data[0, 3] = np.nan
    data[1, 0] = np.inf
    _write_segy(tmp_path / "holes.sgy", positions, data)
    survey = import_segy(tmp_path / "holes.sgy", tmp_path / "s")
    assert survey.inlines.tolist() == [10, 12, 14, 16] and survey.crosslines.tolist() == [1, 2, 3, 4, 5]
    assert survey.import_report.dead_traces == 2 and survey.import_report.nan_count == 2
    assert survey.stats()["nan_count"] == 2
    dead = survey.dead_mask()
    assert sorted(zip(*np.nonzero(dead))) == [(1, 2), (3, 0)]
    vol = survey.volume()
    assert not vol[dead].any()
    i, x = survey.index_of(14, 4)
    np.testing.assert_array_equal(vol[i, x], data[positions.index((14, 4))])
    assert vol[0, 0, 3] == 0 and vol[0, 1, 0] == 0
    cx, cy = survey.cdp_xy()  # dead positions get coordinates from the affine fit of the live ones
    assert cx[1, 2] == pytest.approx(1000 + 10 * 12) and cy[3, 0] == pytest.approx(5000 + 20 * 1)
    synth = survey.geometry_arrays().trace_headers[1, 2]
    assert int.from_bytes(synth[188:192].tobytes(), "big") == 12
    assert int.from_bytes(synth[28:30].tobytes(), "big") == 2  # trace id: dead


def test_crossline_sorted_file(tmp_path: Path) -> None:
    positions = [(il, xl) for xl in (20, 21, 22) for il in (1, 2, 3, 4)]
    data = np.random.default_rng(1).normal(size=(12, 6)).astype(np.float32)
    _write_segy(tmp_path / "xl.sgy", positions, data)
    survey = import_segy(tmp_path / "xl.sgy", tmp_path / "s")
    assert survey.import_report.sorting == "crossline"
    with segyio.open(str(tmp_path / "xl.sgy")) as f:
        assert f.sorting == segyio.TraceSortingFormat.CROSSLINE_SORTING
        np.testing.assert_array_equal(survey.volume(), np.stack([f.iline[il] for il in f.ilines]))


def test_trace_out_of_place_in_a_regular_file_is_binned_by_its_headers(tmp_path: Path) -> None:
    """segyio infers a regular grid from a few headers; one swapped pair in a later line breaks the promise, and
    the import must notice while streaming, rescan every header and still put each trace where its header says."""
    positions = [(il, xl) for il in (5, 6, 7, 8) for xl in (30, 31, 32, 33, 34)]
    k1, k2 = positions.index((7, 31)), positions.index((7, 33))
    positions[k1], positions[k2] = positions[k2], positions[k1]
    data = np.random.default_rng(2).normal(size=(len(positions), 7)).astype(np.float32)
    _write_segy(tmp_path / "swap.sgy", positions, data)
    with segyio.open(str(tmp_path / "swap.sgy")) as f:  # the premise: segyio calls it regular, inline sorted
        assert f.sorting == segyio.TraceSortingFormat.INLINE_SORTING
    survey = import_segy(tmp_path / "swap.sgy", tmp_path / "s")
    vol = survey.volume()
    cx, cy = survey.cdp_xy()
    for k, (il, xl) in enumerate(positions):
        i, x = survey.index_of(il, xl)
        np.testing.assert_array_equal(vol[i, x], data[k])
        assert (cx[i, x], cy[i, x]) == (1000 + 10 * il, 5000 + 20 * xl)
    assert survey.import_report.dead_traces == 0 and not (tmp_path / ".s.partial").exists()


def test_regular_file_takes_coordinates_while_streaming(tmp_path: Path) -> None:
    """The single-pass path (no separate header scan) gives the same coordinates and headers as the full scan."""
    positions = [(il, xl) for il in (100, 102, 104) for xl in (7, 8, 9, 10)]
    data = np.random.default_rng(3).normal(size=(len(positions), 5)).astype(np.float32)
    _write_segy(tmp_path / "reg.sgy", positions, data)
    scan = segy_import.scan_segy(tmp_path / "reg.sgy", 189, 193, "auto", None, "ms")
    scan.f.close()
    assert scan.provisional  # the premise of the test: the quick path is taken
    survey = import_segy(tmp_path / "reg.sgy", tmp_path / "s")
    cx, cy = survey.cdp_xy()
    heads = survey.geometry_arrays().trace_headers
    for k, (il, xl) in enumerate(positions):
        i, x = survey.index_of(il, xl)
        assert (cx[i, x], cy[i, x]) == (1000 + 10 * il, 5000 + 20 * xl)
        assert int.from_bytes(heads[i, x][188:192].tobytes(), "big") == il
        np.testing.assert_array_equal(survey.volume()[i, x], data[k])


@pytest.mark.parametrize("scalars", [(-100,), (-10, 100, 0)], ids=["one-scalar", "mixed-scalars"])
def test_decreasing_line_numbers_and_coordinate_scalars_on_the_single_pass_path(tmp_path: Path,
                                                                               scalars: tuple[int, ...]) -> None:
    """A crossline-sorted file whose inline and crossline numbers both decrease, with one coordinate scalar for
    every trace or a different one trace by trace: the quick path's grid, trace positions and coordinates are
    those the headers say."""
    positions = [(il, xl) for xl in (50, 45, 40) for il in (9, 7, 5, 3)]
    data = np.random.default_rng(4).normal(size=(len(positions), 6)).astype(np.float32)
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, list(range(0, 24, 4)), len(positions)
    want = {}
    with segyio.create(str(tmp_path / "down.sgy"), spec) as f:
        for k, (il, xl) in enumerate(positions):
            scalar = scalars[k % len(scalars)]
            raw_x, raw_y = 1000 * il + k, 50000 + 30 * xl
            f.header[k] = {segyio.TraceField.INLINE_3D: il, segyio.TraceField.CROSSLINE_3D: xl,
                           segyio.TraceField.CDP_X: raw_x, segyio.TraceField.CDP_Y: raw_y,
                           segyio.TraceField.SourceGroupScalar: scalar}
            f.trace[k] = data[k]
            factor = 1 / -scalar if scalar < 0 else scalar or 1
            want[il, xl] = (raw_x * factor, raw_y * factor)
    scan = segy_import.scan_segy(tmp_path / "down.sgy", 189, 193, "auto", None, "ms")
    scan.f.close()
    assert scan.provisional and scan.sorting == "crossline"  # the premise: the quick path is taken
    survey = import_segy(tmp_path / "down.sgy", tmp_path / "s")
    assert survey.inlines.tolist() == [3, 5, 7, 9] and survey.crosslines.tolist() == [40, 45, 50]
    cx, cy = survey.cdp_xy()
    for k, (il, xl) in enumerate(positions):
        i, x = survey.index_of(il, xl)
        np.testing.assert_array_equal(survey.volume()[i, x], data[k])
        assert (cx[i, x], cy[i, x]) == pytest.approx(want[il, xl], rel=1e-12)


def test_progress_cancel_and_add_volume(shared_data: Path, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    survey = import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "f3", progress=lambda f, m: calls.append((f, m)))
    assert calls and calls[-1][0] == 1.0
    with pytest.raises(ImportCancelled):
        import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "c", cancel=lambda: True)
    assert not (tmp_path / "c").exists() and not (tmp_path / ".c.partial").exists()
    with pytest.raises(SurveyError, match="already exists"):
        import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "f3")
    add_volume(shared_data / "segyio" / "Format5msb.sgy", tmp_path / "f3", "ieee")
    again = Survey.open(tmp_path / "f3")
    assert again.volumes == ["seismic", "ieee"]
    np.testing.assert_allclose(again.volume("ieee"), survey.volume(), rtol=1e-6)
    with pytest.raises(SegyImportError, match="inlines 1..5"):
        add_volume(shared_data / "segyio" / "small.sgy", tmp_path / "f3", "small")
    assert not (tmp_path / "f3" / ".small.f32.partial").exists()


def test_survey_geometry_helpers(tmp_path: Path) -> None:
    g = Geometry.regular((100, 750, 1), (300, 1250, 1), (4, 1848, 4))
    assert g.shape == (651, 951, 462)
    survey = Survey.create(tmp_path / "f3", g)
    assert survey.index_of(339, 300) == (239, 0)
    assert survey.sample_index(1.848, "s") == 461 and survey.sample_index(6) == 0  # 6 ms rounds to 4 or 8
    with pytest.raises(SurveyError, match="inline 99 is not in the survey"):
        survey.index_of(99, 300)
    with pytest.raises(SurveyError, match="no volume 'seismic'"):
        survey.volume()
    assert g.same_grid(Geometry.regular((100, 750, 1), (300, 1250, 1), (4, 1848, 4)))
    assert g.differences(Geometry.regular((100, 750, 2), (300, 1250, 1), (4, 1848, 4)))[0].startswith("inlines")
    with pytest.raises(SurveyError, match="not a survey"):
        Survey.open(tmp_path)


# Per format: what segyio stores it as, and values that use its range (floats span many magnitudes).
FORMATS = {1: np.float32, 2: np.int32, 3: np.int16, 5: np.float32, 6: np.float64, 8: np.int8, 9: np.int64,
           10: np.uint32, 11: np.uint16, 12: np.uint64, 16: np.uint8}


def _format_values(fmt: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(FORMATS[fmt])
    if dtype.kind == "f":
        values = rng.normal(size=shape) * 10.0 ** rng.uniform(-6, 7, size=shape)
        values[0, :3] = [0.0, -1.0, 1.0]
        return values.astype(dtype)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    values[0, :2] = [info.min, info.max]
    return values


def _write_format(path: Path, fmt: int, endian: str, ni: int = 3, nx: int = 4, ns: int = 50) -> None:
    spec = segyio.spec()
    spec.format, spec.endian, spec.samples, spec.tracecount = fmt, endian, list(range(0, 4 * ns, 4)), ni * nx
    values = _format_values(fmt, (ni * nx, ns), np.random.default_rng(fmt))
    with segyio.create(str(path), spec) as f:
        for k in range(ni * nx):
            f.header[k] = {segyio.TraceField.INLINE_3D: 10 + k // nx, segyio.TraceField.CROSSLINE_3D: 1 + k % nx}
            f.trace[k] = values[k]


@pytest.mark.parametrize("endian", ["big", "little"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_numpy_reader_agrees_with_segyio(tmp_path: Path, fmt: int, endian: str) -> None:
    src = tmp_path / f"format{fmt}.sgy"
    _write_format(src, fmt, endian)
    survey = import_segy(src, tmp_path / "s")
    assert survey.source["format"] == fmt and survey.import_report.endian == endian
    with segyio.open(str(src), endian=endian) as f:
        want = np.asarray(f.trace.raw[:]).astype(np.float32)
    got = survey.volume().reshape(want.shape)
    if fmt == 1:  # segyio truncates IBM -> IEEE, numpy rounds to nearest: within one float32 step
        np.testing.assert_allclose(got, want, rtol=1e-6)
    else:  # the same cast to float32 on both sides
        np.testing.assert_array_equal(got, want)
    assert np.abs(want).max() > 0 and len(np.unique(want)) > 100  # the file holds real, varied values


def test_segyio_fallback_reads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Formats numpy does not read go through segyio's trace reads: same values for a format both can read."""
    src = tmp_path / "ibm.sgy"
    _write_format(src, 1, "big")
    fast = import_segy(src, tmp_path / "fast").volume()
    monkeypatch.delitem(segy_import.NUMPY_FORMATS, 1)
    slow = import_segy(src, tmp_path / "slow").volume()
    with segyio.open(str(src)) as f:
        np.testing.assert_array_equal(slow.reshape(f.tracecount, -1), f.trace.raw[:])
    np.testing.assert_allclose(fast, slow, rtol=1e-6)


def test_ibm_conversion_of_known_words() -> None:
    # -118.625 = 0xC276A000 is the textbook example; 0x41100000 = 1.0; 0x00000000 = 0; 0x3F... are fractions
    words = np.array([0xC276A000, 0x41100000, 0x00000000, 0x40800000, 0x42640000, 0x7FFFFFFF], dtype=">u4")
    got = segy_import.ibm_to_float32(words)
    np.testing.assert_array_equal(got[:5], [-118.625, 1.0, 0.0, 0.5, 100.0])
    assert np.isinf(got[5])  # beyond float32: infinite (the importer zeroes and counts it)
    np.testing.assert_array_equal(segy_import.ibm_to_float32(words.astype("<u4")), got)


def test_import_leaves_unsynced_markers_that_the_first_open_settles(shared_data: Path, tmp_path: Path) -> None:
    """The import does not wait for the disk: markers (holding this boot's id) name what it wrote; the first open
    fsyncs those files and removes the markers."""
    src = shared_data / "segyio" / "small.sgy"
    import_segy(src, tmp_path / "s")
    markers = sorted(p.name for p in (tmp_path / "s").glob("*.unsynced"))
    assert markers == ["geometry.h5.unsynced", "seismic.f32.unsynced"]
    assert json.loads((tmp_path / "s" / "seismic.f32.unsynced").read_text())["boot_id"] == boot_id()
    survey = Survey.open(tmp_path / "s")
    assert not list((tmp_path / "s").glob("*.unsynced"))
    cube, f = _segyio_cube(src, "big")
    with f:
        np.testing.assert_array_equal(survey.volume(), cube)
    add_volume(src, tmp_path / "s", "second")
    assert [p.name for p in (tmp_path / "s").glob("*.unsynced")] == ["second.f32.unsynced"]
    Survey.open(tmp_path / "s")
    assert not list((tmp_path / "s").glob("*.unsynced"))


def test_a_cache_written_before_a_restart_is_refused_with_the_fix(shared_data: Path, tmp_path: Path) -> None:
    """A marker from another boot: the data may never have reached the disk, so the survey is refused with the
    re-import command; a marker of another boot whose file never came to be is dropped; one of this boot whose file
    does not exist yet (an add_volume still writing) is left alone."""
    import_segy(shared_data / "segyio" / "small.sgy", tmp_path / "s", name="small")
    (tmp_path / "s" / "geometry.h5.unsynced").unlink()
    (tmp_path / "s" / "seismic.f32.unsynced").write_text(json.dumps({"boot_id": "another-boot", "written": "then"}))
    with pytest.raises(SurveyError, match=r"seismic\.f32 was still being written to disk when the machine restarted"
                                          r".*seisctl survey rm small, then seisctl survey import .*small\.sgy"):
        Survey.open(tmp_path / "s")
    (tmp_path / "s" / "seismic.f32.unsynced").unlink()
    (tmp_path / "s" / "seismic.f32.unsynced").write_text(json.dumps({"boot_id": boot_id()}))
    Survey.open(tmp_path / "s", sync=False)  # the daemon's catalog: checks, leaves this boot's marker alone
    assert (tmp_path / "s" / "seismic.f32.unsynced").exists()
    (tmp_path / "s" / "seismic.f32.unsynced").write_text(json.dumps({"boot_id": "another-boot"}))
    with pytest.raises(SurveyError, match="restarted"):
        Survey.open(tmp_path / "s", sync=False)  # ... and still refuses a survey cut by a restart
    (tmp_path / "s" / "seismic.f32.unsynced").unlink()
    (tmp_path / "s" / "gone.f32.unsynced").write_text(json.dumps({"boot_id": "another-boot"}))
    (tmp_path / "s" / "coming.f32.unsynced").write_text(json.dumps({"boot_id": boot_id()}))
    Survey.open(tmp_path / "s")
    assert [p.name for p in (tmp_path / "s").glob("*.unsynced")] == ["coming.f32.unsynced"]
