"""OpendTect example sets: export then import gives the same set; a set built by hand in OpendTect's documented
layout imports; files seisd cannot use are refused by name; an example set laid out as a survey gives back its
examples when crops are cut at its picks."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from workers.crops import CropSpec, extract_crop
from workers.example_survey import PICKS, survey_of_examples
from workers.examples import ExampleSetLocked, extract_examples, info, set_locked
from workers.odt_examples import OdtExampleError, export_odt, import_odt
from workers.picks import PickSet
from workers.segy_import import add_volume, import_segy

CROPS = [CropSpec((8, 9), "inline"), CropSpec((6, 7), "crossline"), CropSpec((5, 4), "time"),
         CropSpec((3, 4, 5), "3d")]


@pytest.fixture(scope="module")
def f3(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("f3")
    import_segy(shared_data / "segyio" / "f3.sgy", folder / "f3")
    return add_volume(shared_data / "segyio" / "Format5msb.sgy", folder / "f3", "ieee")


def seisd_set(f3, crop: CropSpec, out: Path) -> Path:
    """A seisd example set of two channels and three classes, picks spread over the survey."""
    rng = np.random.default_rng(0)
    n = 30
    picks = PickSet(rng.integers(0, f3.shape[0], n), rng.integers(0, f3.shape[1], n), rng.integers(0, f3.shape[2], n),
                    np.arange(n) % 3, ["sand", "shale", "salt/brine"])
    extract_examples([(f3, picks, ["seismic", "ieee"]), (f3, picks, ["seismic", "ieee"])], crop, out, job_id="j1",
                     notes="from f3")
    return out


def read_set(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs["meta"]), {k: h5[k][()] for k in ("x", "y", "source", "position")}


@pytest.mark.parametrize("crop", CROPS, ids=[c.orientation for c in CROPS])
def test_export_then_import_is_the_same_set(f3, tmp_path: Path, crop: CropSpec) -> None:
    original = seisd_set(f3, crop, tmp_path / "a.h5")
    summary = export_odt(original, tmp_path / "odt.h5")
    assert summary["count"] == 60 and summary["groups"] == ["f3", "f3_2"]
    back = import_odt(tmp_path / "odt.h5", tmp_path / "b.h5")
    meta_a, data_a = read_set(original)
    meta_b, data_b = read_set(back.path)
    assert meta_b == meta_a
    for key in data_a:
        assert data_b[key].dtype == data_a[key].dtype, key
        np.testing.assert_array_equal(data_b[key], data_a[key], err_msg=key)


def test_export_writes_opendtects_layout(f3, tmp_path: Path) -> None:
    export_odt(seisd_set(f3, CROPS[0], tmp_path / "a.h5"), tmp_path / "odt.h5")
    _, data = read_set(tmp_path / "a.h5")
    with h5py.File(tmp_path / "odt.h5", "r") as h5:
        attrs = {k: v.decode() for k, v in h5["++info++"].attrs.items()}
        assert attrs["Type"] == "Seismic Classification" and attrs["Content"] == "Classification Data"
        assert attrs["Input.Shape"] == "1`8`9" and attrs["Classes"] == "1`2`3" and attrs["Examples.Size"] == "2"
        assert attrs["Input.0.0.Name"] == "seismic" and attrs["Input.0.1.Name"] == "ieee"
        assert attrs["Examples.0.2.Class Name"] == "salt/brine" and attrs["Examples.0.2.Name"] == "salt_brine"
        mean, std = map(float, attrs["Input.0.0.Stats"].split("`"))
        assert std > 0 and mean == pytest.approx(f3.stats("seismic")["mean"])
        x, y = h5["f3/salt_brine/x_data"][()], h5["f3/salt_brine/y_data"][()]
    rows = np.flatnonzero((data["source"] == 0) & (data["y"] == 2))
    assert x.shape == (len(rows), 2, 1, 8, 9) and y.shape == (len(rows), 1) and set(y[:, 0]) == {3.0}
    np.testing.assert_array_equal(x[:, :, 0], data["x"][rows])


def write_info(h5: h5py.File, attrs: dict[str, str]) -> None:
    ds = h5.create_dataset("++info++", (1,), "S1")
    for k, v in attrs.items():
        ds.attrs[k] = np.bytes_(v)


def hand_made(path: Path, attrs: dict[str, str] | None = None, y_value: float = 7.0) -> dict[str, np.ndarray]:
    """An OpendTect set written from the documented layout alone: 2 attributes, classes 3 (`Sand`) and 7 (`Shale`),
    inline examples 1 x 5 x 6; target `F3` one dataset per collection, target `F3b` one dataset per example."""
    rng = np.random.default_rng(1)
    sand, shale, more = (rng.normal(size=(n, 2, 1, 5, 6)).astype(np.float32) for n in (4, 3, 2))
    with h5py.File(path, "w") as h5:
        write_info(h5, attrs or {
            "Type": "Seismic Classification", "Content": "Classification Data", "Input.Shape": "1`5`6",
            "Output.Shape": "1", "Examples.Size": "2", "Classes": "3`7", "Edge extrapolation": "No",
            "Examples.0.Name": "F3", "Examples.0.Survey": "F3_Demo", "Examples.0.Target": "Facies",
            "Examples.0.Size": "2", "Examples.0.0.Name": "Sand picks", "Examples.0.0.Class Name": "Sand",
            "Examples.0.0.ID": "100050.1", "Examples.0.1.Name": "Shale picks", "Examples.0.1.Class Name": "Shale",
            "Examples.0.1.ID": "100050.2", "Examples.1.Name": "F3b", "Examples.1.Survey": "Other",
            "Examples.1.Size": "1", "Examples.1.0.Name": "Shale picks", "Examples.1.0.ID": "100060.2",
            "Input.Size": "1", "Input.0.Name": "F3_Demo", "Input.0.Survey": "F3_Demo", "Input.0.Size": "2",
            "Input.0.0.Name": "Seismic", "Input.0.0.Stats": "0.5`2.0", "Input.0.1.Name": "Energy",
            "Input.0.1.Stats": "0`0", "Input.Scaling.Type": "Global Standardization"})
        h5["F3/Sand picks/x_data"] = sand
        h5["F3/Sand picks/y_data"] = np.full((4, 1), 3, np.float32)
        h5["F3/Shale picks/x_data"] = shale
        h5["F3/Shale picks/y_data"] = np.full((3, 1), y_value, np.float32)
        for k in range(2):   # the older layout: one dataset per example
            h5[f"F3b/Shale picks/x_data/{k}"] = more[k]
            h5[f"F3b/Shale picks/y_data/{k}"] = np.array([7.0], np.float32)
    return {"x": np.concatenate([sand, shale, more])[:, :, 0], "y": np.array([0] * 4 + [1] * 5, np.int32)}


def test_a_hand_made_opendtect_set_imports(tmp_path: Path) -> None:
    want = hand_made(tmp_path / "odt.h5")
    s = import_odt(tmp_path / "odt.h5", tmp_path / "set.h5", notes="from OpendTect", job_id="9")
    meta, data = read_set(s.path)
    assert s.count == 9 and s.class_counts == {"Sand": 4, "Shale": 5}
    assert meta["crop"] == {"size": [5, 6], "orientation": "inline"} and meta["volumes"] == ["Seismic", "Energy"]
    assert [sv["name"] for sv in meta["surveys"]] == ["F3_Demo", "Other"] and meta["notes"] == "from OpendTect"
    assert meta["opendtect"]["class_values"] == [3.0, 7.0]
    norm = meta["normalisation"][0]
    assert norm["Seismic"] == {"mean": 0.5, "std": 2.0}      # Stats as stored
    energy = want["x"][:7, 1].astype(np.float64)             # no Stats ("0`0"): measured on the source's examples
    assert norm["Energy"]["mean"] == pytest.approx(energy.mean()) and norm["Energy"]["std"] == pytest.approx(
        energy.std(), rel=1e-6)
    np.testing.assert_array_equal(data["x"], want["x"])
    np.testing.assert_array_equal(data["y"], want["y"])
    assert data["source"].tolist() == [0] * 7 + [1] * 2 and (data["position"] == -1).all()


def test_files_seisd_cannot_use_are_refused_by_name(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "plain.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(OdtExampleError, match=r"no \+\+info\+\+ dataset at its root"):
        import_odt(tmp_path / "plain.h5", tmp_path / "out.h5")
    with h5py.File(tmp_path / "img.h5", "w") as h5:
        write_info(h5, {"Type": "Seismic Image Transformation", "Content": "Segmentation"})
    with pytest.raises(OdtExampleError, match="'Seismic Classification' sets .* only"):
        import_odt(tmp_path / "img.h5", tmp_path / "out.h5")
    hand_made(tmp_path / "odd.h5", y_value=5.0)
    with pytest.raises(OdtExampleError, match=r"class values \[5.0\] that its Classes attribute"):
        import_odt(tmp_path / "odd.h5", tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.h5.partial").exists()
    hand_made(tmp_path / "odt.h5")
    set_locked(import_odt(tmp_path / "odt.h5", tmp_path / "out.h5").path, True)
    with pytest.raises(ExampleSetLocked):
        import_odt(tmp_path / "odt.h5", tmp_path / "out.h5")
    with pytest.raises(OdtExampleError, match="already exists"):
        export_odt(tmp_path / "out.h5", tmp_path / "odt.h5")


@pytest.mark.parametrize("crop", CROPS, ids=[c.orientation for c in CROPS])
def test_a_set_laid_out_as_a_survey_gives_its_examples_back(f3, tmp_path: Path, crop: CropSpec) -> None:
    s = info(seisd_set(f3, crop, tmp_path / "a.h5"))
    survey, picks = survey_of_examples(s.path, tmp_path / "surv", "surv")
    _, data = read_set(s.path)
    assert PickSet.load(tmp_path / "surv", PICKS).counts() == s.class_counts
    assert survey.stats("ieee")["mean"] == pytest.approx(s.meta["normalisation"][0]["ieee"]["mean"])
    for k, centre in enumerate(picks.positions()):
        for c, v in enumerate(["seismic", "ieee"]):
            np.testing.assert_array_equal(extract_crop(survey.volume(v), tuple(centre), crop), data["x"][k, c])
    assert picks.cls.tolist() == data["y"].tolist()
