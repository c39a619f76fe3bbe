"""SEG-Y predictions read by the survey page through the survey's geometry (daemon/viewers/labels.py), on real
files of other people (segyio's F3 crop in several sample formats and byte orders) and on a file whose traces are
in another order, with one missing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import segyio

from daemon.viewers.labels import LabelsError, SegyOnGrid, open_prediction
from workers.segy_import import import_segy
from workers.survey import Survey


@pytest.fixture(scope="module")
def f3(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Survey:
    return import_segy(shared_data / "segyio" / "f3.sgy", tmp_path_factory.mktemp("labels") / "f3", name="f3")


@pytest.mark.parametrize("name, endian", [("Format8msb.sgy", "big"), ("Format16msb.sgy", "big"),
                                          ("Format1lsb.sgy", "little"), ("Format3msb.sgy", "big")])
def test_segy_in_any_sample_format_reads_as_segyio_reads_it(f3: Survey, shared_data: Path, tmp_path: Path,
                                                            name: str, endian: str) -> None:
    path = shared_data / "segyio" / name
    with segyio.open(path, endian=endian) as f:
        cube = segyio.tools.cube(f)
    v = SegyOnGrid(path, f3)
    assert v.in_order
    for key in (3, (slice(None), 5), (slice(None), slice(None), 40)):
        np.testing.assert_allclose(np.asarray(v[key], dtype=np.float64), cube[key], rtol=1e-6)


def test_traces_in_another_order_and_missing_ones_go_where_their_headers_say(f3: Survey, shared_data: Path,
                                                                             tmp_path: Path) -> None:
    src = shared_data / "segyio" / "Format8msb.sgy"
    with segyio.open(src) as f:
        cube = segyio.tools.cube(f).astype(np.float64)
        ns = len(f.samples)
    record = np.dtype([("h", np.uint8, (240,)), ("s", ">i1", (ns,))])
    traces = np.fromfile(src, dtype=record, offset=3600)
    ni, nx = f3.shape[:2]
    order = np.arange(ni * nx).reshape(ni, nx).T.ravel()  # crossline by crossline
    gone = int(order[7])  # inline index 7, crossline index 0: no trace there
    out = tmp_path / "pred" / "labels.sgy"
    out.parent.mkdir()
    with open(src, "rb") as fh, open(out, "wb") as dst:
        dst.write(fh.read(3600))
        traces[order[order != gone]].tofile(dst)
    v = SegyOnGrid(out, f3)
    assert not v.in_order
    expected = cube.copy()
    expected[7, 0] = -1
    for key in (7, (slice(None), 0), (slice(None), slice(None), 33)):
        np.testing.assert_array_equal(v[key], expected[key])


def test_a_segy_of_another_survey_is_refused_naming_the_trace(f3: Survey, shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    shutil.copy(shared_data / "segyio" / "small.sgy", folder / "labels.sgy")
    with pytest.raises(LabelsError, match="belongs to another survey"):
        open_prediction(folder, f3)
