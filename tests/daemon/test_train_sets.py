"""Train jobs fed by example sets, through a real seisd: sets of two synthetic surveys, the per-survey split, the
crop rule shared with extract, the default set, and predict's warning on a survey of another amplitude range.

Two 32^3 synthetic surveys of different seeds (tools/synth.py) and a third, the first scaled x100, are imported;
sets are extracted by extract jobs; the train jobs are tiny patchcnn runs (16x16 crops, batches of 16, 2 epochs).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tests.harness import ROOT, RunningDaemon, seisctl_json
from client.api import SeisdError

sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402

CROP = [16, 16]


def submit_ok(client: Any, job: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    record = client.wait(client.submit(job)["id"], timeout=timeout)
    assert record["state"] == "succeeded", record["error"]
    return record


def refused(client: Any, job: dict[str, Any]) -> list[str]:
    with pytest.raises(SeisdError) as err:
        client.submit(job)
    return err.value.details.get("problems") or [err.value.message]


def import_synth(client: Any, folder: Path, name: str, seed: int, scale: float = 1.0) -> None:
    s = synth.generate(shape=(32, 32, 32), seed=seed)
    if scale != 1.0:
        s = dataclasses.replace(s, seismic=s.seismic * scale)
    synth.write(s, folder)
    submit_ok(client, {"kind": "import", "survey": name, "segy": {"file": str(folder / "seismic.sgy")}})
    pts = sorted(str(p) for p in (folder / "picks").glob("*.pts"))
    submit_ok(client, {"kind": "import", "survey": name,
                       "picks": {"files": pts, "class_pattern": r"(?P<name>.+)\.pts"}})


def extract(client: Any, name: str, survey: str, crop: list[int] = CROP) -> dict[str, Any]:
    return submit_ok(client, {"kind": "extract", "examples": name, "sources": [{"survey": survey}],
                              "crop": {"size": crop}})


def train_job(output: str, data: dict[str, Any], epochs: int = 2) -> dict[str, Any]:
    return {"kind": "train", "output": output,
            "data": {"crop": {"size": CROP}, "batch_size": 16, "batches_per_epoch": 6, "val_batches": 2,
                     "split": {"block": 4, "gap": 2}, **data},
            "model": {"name": "patchcnn", "params": {"filters": [8, 8, 8]}},
            "train": {"epochs": epochs, "seed": 0, "progress_interval_s": 0.1, "early_stop": {"enabled": False}}}


@pytest.fixture(scope="module")
def sets(shared_daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    c = shared_daemon.client
    for name, seed, scale in (("s0", 0, 1.0), ("s1", 1, 1.0), ("loud", 0, 100.0)):
        import_synth(c, tmp_path_factory.mktemp(name), name, seed, scale)
    extract(c, "set0", "s0")
    extract(c, "set1", "s1")
    yield shared_daemon


@pytest.fixture(scope="module")
def trained(sets: RunningDaemon) -> dict[str, Any]:
    return submit_ok(sets.client, train_job("two_sets", {"examples": ["set0", "set1"]}))


def test_a_train_job_from_two_sets_of_two_surveys_records_both(sets: RunningDaemon, trained: dict) -> None:
    from daemon.kinds.modelinfo import read_model_info

    result = trained["result"]
    assert result["step"] == 12 and result["epoch"] == 2
    info = read_model_info(sets.home / "models" / "two_sets.h5")
    assert [s["name"] for s in info.trained_on["sets"]] == ["set0", "set1"]
    assert [s["surveys"] for s in info.trained_on["sets"]] == [["s0"], ["s1"]]
    surveys = {s["name"]: s for s in info.trained_on["surveys"]}
    assert set(surveys) == {"s0", "s1"}
    for name in ("s0", "s1"):
        doc = json.loads((sets.home / "surveys" / name / "survey.json").read_text())
        mean = doc["volumes"]["seismic"]["stats"]["mean"]
        assert surveys[name]["volumes"][0]["mean"] == pytest.approx(mean)
        assert surveys[name]["examples"] > 0
    assert info.normalisation["method"] == "per_survey"
    assert info.input_spec["examples"] == ["set0", "set1"]
    assert len(info.classes) >= 2


def test_the_blocked_split_is_made_in_each_surveys_own_grid(sets: RunningDaemon, trained: dict) -> None:
    """Both surveys give validation and training examples, and no validation example of a survey lies within the
    gap of a training example of that survey (both surveys share grid indices 0..31: a split over their joint
    positions would have mixed them)."""
    from daemon.kinds.train_split import split_by_source
    from daemon.kinds.train_spec import TrainSpec
    from workers.crops import CropSpec
    from workers.example_index import read_sets

    per_survey = trained["result"]["split"]["per_survey"]
    assert set(per_survey) == {"s0", "s1"}
    assert all(v["train_points"] > 0 and v["val_points"] > 0 for v in per_survey.values()), per_survey
    d = TrainSpec.model_validate(train_job("x", {"examples": ["set0", "set1"]})).data
    index = read_sets([(n, sets.home / "examples" / f"{n}.h5") for n in ("set0", "set1")], CropSpec(tuple(CROP)), 1)
    split = split_by_source(index.positions, index.survey_of, ["s0", "s1"], d, CropSpec(tuple(CROP)))
    for k in (0, 1):
        tr = index.positions[split.train][index.survey_of[split.train] == k][:, :2]
        va = index.positions[split.val][index.survey_of[split.val] == k][:, :2]
        assert len(tr) == per_survey[["s0", "s1"][k]]["train_points"] and len(va)
        nearest = np.abs(va[:, None, :] - tr[None, :, :]).max(axis=2).min()
        assert nearest > d.split.gap, nearest


def test_a_set_with_another_crop_is_refused_naming_it(sets: RunningDaemon) -> None:
    extract(sets.client, "small", "s0", crop=[12, 12])
    problems = refused(sets.client, train_job("bad", {"examples": ["set0", "small"]}))
    assert any("'small'" in p and "[12, 12]" in p and "[16, 16]" in p for p in problems), problems


def test_extract_and_train_refuse_a_crop_larger_than_the_survey_with_one_message(sets: RunningDaemon) -> None:
    big = [40, 16]  # the survey has 32 crosslines
    ex = refused(sets.client, {"kind": "extract", "examples": "big", "sources": [{"survey": "s0"}],
                               "crop": {"size": big}})
    job = train_job("big", {"survey": "s0"})
    job["data"]["crop"] = {"size": big}
    tr = refused(sets.client, job)
    ex_msg = next(p.split(": ", 1)[1] for p in ex if p.startswith("crop.size:"))
    tr_msg = next(p.split(": ", 1)[1] for p in tr if p.startswith("data.crop.size:"))
    assert ex_msg == tr_msg and "larger than survey 's0'" in ex_msg, (ex, tr)


def test_the_default_set_feeds_a_job_that_names_no_data(sets: RunningDaemon) -> None:
    from daemon.kinds.modelinfo import read_model_info

    c = sets.client
    job = train_job("from_default", {}, epochs=1)
    (sets.home / "examples" / "default.json").unlink(missing_ok=True)
    problems = refused(c, job)
    assert any("seisctl examples default NAME" in p for p in problems), problems
    seisctl_json(sets.home, "examples", "default", "set1")
    submit_ok(c, job)
    info = read_model_info(sets.home / "models" / "from_default.h5")
    assert [s["name"] for s in info.trained_on["sets"]] == ["set1"]


def test_predict_warns_on_a_survey_far_outside_the_training_amplitudes(sets: RunningDaemon, trained: dict) -> None:
    c = sets.client
    loud = submit_ok(c, {"kind": "predict", "model": "two_sets", "survey": "loud", "output": "loud_pred",
                         "figures": {"enabled": False}, "stride": 4, "format": "hdf5"})
    warnings = loud["result"]["warnings"]
    assert len(warnings) == 1 and "amplitude" in warnings[0], warnings
    # both figures are named: the survey's std and the training sources'
    assert "std" in warnings[0] and "'s0'" in warnings[0] and "'s1'" in warnings[0]
    assert warnings[0] in c.logs(loud["id"])["text"]
    quiet = submit_ok(c, {"kind": "predict", "model": "two_sets", "survey": "s1", "output": "s1_pred",
                          "figures": {"enabled": False}, "stride": 4, "format": "hdf5"})
    assert quiet["result"]["warnings"] == []


def test_a_segmentation_model_learns_from_the_sets_label_crops_with_the_swap(sets: RunningDaemon) -> None:
    """A U-Net learns per voxel from the sets' label crops; the swap cuts crossline sections from the source
    surveys (still in the home), and a set whose survey is gone refuses the swap naming the survey."""
    from daemon.kinds.modelinfo import read_model_info

    job = train_job("seg_sets", {"examples": ["set0", "set1"], "augment": {"p_swap": 0.5, "p_flip": 0.5}})
    job["model"] = {"name": "unet", "params": {"base": 4, "depth": 2}}
    record = submit_ok(sets.client, job)
    assert record["result"]["step"] == 12
    info = read_model_info(sets.home / "models" / "seg_sets.h5")
    assert info.input_spec["apply_kind"] == "fcn" and info.input_spec["apply_orientation"] == "both"
    # the set's survey removed: the swap cannot be cut, and the job says which survey is missing
    extract(sets.client, "gone", "loud")
    seisctl_json(sets.home, "survey", "rm", "loud")
    job = train_job("seg_gone", {"examples": ["gone"], "augment": {"p_swap": 0.5}})
    problems = refused(sets.client, job)
    assert any(p.startswith("data.augment.p_swap:") and "survey 'loud' is not in this home" in p
               for p in problems), problems
