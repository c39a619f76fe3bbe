"""Pick files (MalenoV), labelled slices and label volumes to PickSets on a survey grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.picks import (PickSet, PicksError, PicksOutsideSurvey, from_label_volume, from_labelled_slice,
                           read_pick_files)
from workers.survey import Geometry, Survey


@pytest.fixture()
def f3(tmp_path: Path) -> Survey:
    """F3's full grid, with no volume: picks need only the geometry."""
    return Survey.create(tmp_path / "f3", Geometry.regular((100, 750, 1), (300, 1250, 1), (4, 1848, 4)))


def _line_count(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def test_malenov_files_import_with_per_class_counts(shared_data: Path, f3: Survey) -> None:
    files = sorted((shared_data / "malenov-picks").glob("multi_*_ilxl.pts"))
    assert len(files) == 9
    picks = read_pick_files(files, f3)
    want = {f.name[len("multi_"):-len("_ilxl.pts")]: _line_count(f) for f in files}
    assert picks.counts() == want and len(picks) == sum(want.values())
    assert set(picks.i.tolist()) == {339 - 100}  # all on inline 339
    first = files[0].read_text().splitlines()[0].split()
    k = 0  # the first point of the first file, snapped by hand
    assert (picks.x[k], picks.s[k]) == (int(first[1]) - 300, (int(first[2]) - 4) // 4)
    picks.save(f3.folder, "malenov")
    back = PickSet.load(f3.folder, "malenov")
    assert back.counts() == want
    np.testing.assert_array_equal(back.positions(), picks.positions())


def _survey(tmp_path: Path) -> Survey:
    return Survey.create(tmp_path / "small", Geometry.regular((10, 20, 2), (100, 104, 1), (0, 36, 4)))


def test_headers_lf_spaces_seconds_duplicates_and_outside(tmp_path: Path) -> None:
    survey = _survey(tmp_path)
    pts = tmp_path / "multi_sand_ilxl.txt"
    pts.write_text("# my export\nInline Crossline Z\n12 101 0.008 5\n12 101 0.008 5\n20 104 0.036 1\n"
                   "30 101 0.008 0\n")
    with pytest.raises(PicksOutsideSurvey, match=r"1 of 4 points are outside.*\[30\.0, 101\.0, 0\.008\]"):
        read_pick_files([pts], survey, z_unit="s")
    picks = read_pick_files([pts], survey, z_unit="auto", drop_outside=True)
    assert picks.class_names == ["sand"] and picks.dropped_outside == 1 and picks.dropped_duplicates == 1
    assert picks.positions().tolist() == [[1, 1, 2], [5, 4, 9]]


def test_class_column_and_bad_files(tmp_path: Path) -> None:
    survey = _survey(tmp_path)
    pts = tmp_path / "all.pts"
    pts.write_text("10\t100\t0\t2\r\n14\t102\t8\t0\r\n")
    picks = read_pick_files([pts], survey, class_column=3)
    assert picks.class_names == ["class_0", "class_1", "class_2"] and picks.cls.tolist() == [2, 0]
    with pytest.raises(PicksError, match="does not match the file name"):
        read_pick_files([pts], survey)
    ragged = tmp_path / "multi_x_ilxl.pts"
    ragged.write_text("10 100 0\n12 101\n")
    with pytest.raises(PicksError, match="ragged"):
        read_pick_files([ragged], survey)
    with pytest.raises(PicksError, match="does not exist"):
        read_pick_files([tmp_path / "nope.pts"], survey)


def test_labelled_slice_and_label_volume(tmp_path: Path) -> None:
    survey = _survey(tmp_path)
    labels = np.full(survey.shape[1:], -1, dtype=np.int16)
    labels[1, 2:4] = 0
    labels[3, 7] = 1
    picks = from_labelled_slice(survey, 14, labels, ["a", "b"])
    assert picks.positions().tolist() == [[2, 1, 2], [2, 1, 3], [2, 3, 7]] and picks.counts() == {"a": 2, "b": 1}
    with pytest.raises(PicksError, match="crossline x sample"):
        from_labelled_slice(survey, 14, labels.T, ["a", "b"])
    vol = survey.new_volume("labels")
    vol[:] = -1
    vol[0, 0, 0], vol[5, 4, 9] = 1, 0
    vol.flush()
    survey.register_volume("labels", {})
    picks = from_label_volume(survey, "labels", ["a", "b"])
    assert picks.positions().tolist() == [[0, 0, 0], [5, 4, 9]] and picks.cls.tolist() == [1, 0]


def test_a_garbage_line_names_the_file_the_line_and_its_text(tmp_path: Path) -> None:
    survey = _survey(tmp_path)
    pts = tmp_path / "multi_g_ilxl.pts"
    pts.write_text("Inline Crossline Z\n10 100 0\n\n12 101 4\nhello world 12\n14 102 8\n")
    with pytest.raises(PicksError) as err:
        read_pick_files([pts], survey)
    msg = str(err.value)
    assert msg.startswith(f"{pts}, line 5: 'hello world 12'"), msg   # line numbers count headers and blank lines
    assert "'hello' is not a number" in msg and "inline, crossline and z" in msg, msg
    long = tmp_path / "multi_long_ilxl.pts"
    long.write_text("10 100 0\n" + "12 101 x" + "9" * 300 + "\n")
    msg = str(pytest.raises(PicksError, read_pick_files, [long], survey).value)
    assert f"{long}, line 2: '12 101 x999" in msg and "...'" in msg and len(msg) < 400, msg


def test_nan_lines_are_errors_not_headers(tmp_path: Path) -> None:
    """Only text that is not numbers is a header; NaN or inf in a point's inline, crossline, z (or class column)
    is an error in the data, named by line."""
    survey = _survey(tmp_path)
    lead = tmp_path / "multi_lead_ilxl.pts"
    lead.write_text("nan nan nan\nNaN NaN NaN\n10 100 0\n")
    with pytest.raises(PicksError, match=r"multi_lead_ilxl\.pts, line 1: 'nan nan nan' has nan as inline; a "
                                         r"point's inline, crossline and z \(and class column\) must be finite"):
        read_pick_files([lead], survey)
    mid = tmp_path / "multi_mid_ilxl.pts"
    mid.write_text("# export\nInline Crossline Z\n10 100 0\n12 inf 4\n")
    with pytest.raises(PicksError, match=r"line 4: '12 inf 4' has inf as crossline"):
        read_pick_files([mid], survey)
    extra = tmp_path / "multi_extra_ilxl.pts"   # a NaN in a column that is not used is left alone
    extra.write_text("10 100 0 nan\n12 101 4 1\n")
    assert len(read_pick_files([extra], survey)) == 2
    with pytest.raises(PicksError, match=r"line 1: '10 100 0 nan' has nan as class column 3"):
        read_pick_files([extra], survey, class_column=3)


def test_a_ragged_line_is_named(tmp_path: Path) -> None:
    survey = _survey(tmp_path)
    ragged = tmp_path / "multi_r_ilxl.pts"
    ragged.write_text("10 100 0\n12 101 4\n12 101\n14 102 8 3 3\n")
    with pytest.raises(PicksError, match=r"line 3: '12 101' has 2 columns where line 1 has 3 \(a ragged or "
                                         r"damaged line\)"):
        read_pick_files([ragged], survey)
