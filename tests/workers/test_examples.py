"""Example sets: extraction from real surveys and the management verbs (info, lock, rm, rename, default, note)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from workers.crops import CropSpec, extract_crop
from workers.examples import (ExampleSetError, ExampleSetInfo, ExampleSetLocked, ExtractCancelled, extract_examples,
                              get_default, info, list_sets, remove, rename, set_default, set_locked, set_note)
from workers.picks import from_labelled_slice
from workers.segy_import import add_volume, import_segy


@pytest.fixture()
def example_set(shared_data: Path, tmp_path: Path) -> tuple[Path, list]:
    f3 = import_segy(shared_data / "segyio" / "f3.sgy", tmp_path / "f3")
    f3 = add_volume(shared_data / "segyio" / "Format5msb.sgy", tmp_path / "f3", "ieee")
    small = import_segy(shared_data / "segyio" / "small.sgy", tmp_path / "small")
    small = add_volume(shared_data / "segyio" / "small-lsb.sgy", tmp_path / "small", "copy")
    lab = np.full(f3.shape[1:], -1)
    lab[0, 0], lab[5, 30], lab[17, 74] = 0, 1, 1          # corners hit the zero-filled edges
    lab2 = np.full(small.shape[1:], -1)
    lab2[2, 10] = 2
    sources = [(f3, from_labelled_slice(f3, 111, lab, ["sand", "shale"]), ["seismic", "ieee"]),
               (small, from_labelled_slice(small, 3, lab2, ["sand", "shale", "salt"]), ["seismic", "copy"])]
    out = tmp_path / "examples" / "set1.h5"
    out.parent.mkdir()
    extract_examples(sources, CropSpec((5, 9), "inline"), out, job_id="job-7", notes="first try")
    return out, sources


def test_extract_writes_crops_labels_and_meta(example_set: tuple[Path, list]) -> None:
    out, sources = example_set
    got = info(out)
    assert got.count == 4 and got.class_counts == {"sand": 1, "shale": 2, "salt": 1}
    assert got.meta["crop"] == {"size": [5, 9], "orientation": "inline"} and got.meta["job_id"] == "job-7"
    assert got.meta["volumes"] == ["seismic", "ieee"] and got.meta["normalisation"][0]["seismic"]["std"] > 0
    with h5py.File(out, "r") as h5:
        x, y, src, pos, lab = h5["x"][()], h5["y"][()], h5["source"][()], h5["position"][()], h5["labels"][()]
    assert lab.shape == (4, 5, 9) and lab[:, 2, 4].tolist() == y.tolist()  # the centre voxel holds its own class
    assert (lab >= 0).sum() == 4  # the picks lie far apart: each crop covers its own only
    assert x.shape == (4, 2, 5, 9) and y.tolist() == [0, 1, 1, 2] and src.tolist() == [0, 0, 0, 1]
    for k in range(4):
        survey, _, vols = sources[src[k]]
        for c, v in enumerate(vols):
            np.testing.assert_array_equal(x[k, c], extract_crop(survey.volume(v), tuple(pos[k]),
                                                                CropSpec((5, 9))))
    # centre (xl 17, s 74) is the last crossline and sample: crop rows past index 2, columns past 4 lie outside
    assert not x[2, :, 3:, :].any() and not x[2, :, :, 5:].any() and x[2, :, :3, :5].all()


def test_lock_refuses_rm_and_overwrite_then_unlock(example_set: tuple[Path, list]) -> None:
    out, sources = example_set
    folder = out.parent
    set_default(folder, "set1")
    assert get_default(folder) == "set1" and [s.name for s in list_sets(folder)] == ["set1"]
    assert set_locked(out, True).locked
    with pytest.raises(ExampleSetLocked, match="'set1' is locked"):
        remove(out)
    with pytest.raises(ExampleSetLocked):
        extract_examples(sources, CropSpec((3, 3), "time"), out)
    with pytest.raises(ExampleSetLocked):
        rename(out, "other")
    assert set_note(out, "kept").meta["notes"] == "kept"
    set_locked(out, False)
    moved = rename(out, "renamed")
    assert get_default(folder) == "renamed" and info(moved).meta["notes"] == "kept"
    remove(moved)
    assert list_sets(folder) == [] and get_default(folder) is None
    with pytest.raises(ExampleSetError, match="no example set"):
        info(moved)


def test_cancel_leaves_nothing(example_set: tuple[Path, list], tmp_path: Path) -> None:
    _, sources = example_set
    out = tmp_path / "cancelled.h5"
    with pytest.raises(ExtractCancelled):
        extract_examples(sources, CropSpec((4, 4, 4), "3d"), out, cancel=lambda: True)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    with pytest.raises(ExampleSetError, match="has no volume"):
        extract_examples([(sources[0][0], sources[0][1], ["nope"])], CropSpec((4, 4)), out)


def test_a_broken_set_is_listed_with_its_error(example_set: tuple[Path, list]) -> None:
    """A truncated set and a file that is no HDF5 at all show in the listing as broken, with the error `info`
    gives; the good set lists as before; a broken set can be removed (its lock flag cannot be read)."""
    out, _ = example_set
    folder = out.parent
    data = out.read_bytes()
    (folder / "cut.h5").write_bytes(data[: len(data) // 2])
    (folder / "junk.h5").write_text("not an example set\n")
    listing = {s.name: s for s in list_sets(folder)}
    assert sorted(listing) == ["cut", "junk", "set1"]
    assert isinstance(listing["set1"], ExampleSetInfo) and listing["set1"].count == 4
    for name in ("cut", "junk"):
        broken = listing[name]
        assert not isinstance(broken, ExampleSetInfo) and broken.path == folder / f"{name}.h5"
        with pytest.raises(ExampleSetError) as err:
            info(folder / f"{name}.h5")
        assert broken.error == str(err.value)
        assert str(folder / f"{name}.h5") in broken.error and "cannot be read" in broken.error
        assert f"seisctl examples rm {name}" in broken.error
    remove(folder / "junk.h5")
    assert not (folder / "junk.h5").exists()
