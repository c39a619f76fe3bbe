"""One mechanism: a train job's batches from an example set equal those it makes on the fly from the survey and
picks the set was extracted from (same split, normalisation, sampling, augmentation and labels), for a patch
classifier and for a segmentation model with the swap; only the vertical shift differs (a set's crop is moved, the
cells it uncovers zero), and it is off here. Built in-process on a home folder laid out by hand (no daemon needed:
the executor's own prepare_data runs on it).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from daemon.executor.training.job_data import make_batch, prepare_data
from daemon.kinds.train_spec import DataSection
from tests.harness import ROOT
from workers.crops import CropSpec
from workers.examples import extract_examples
from workers.picks import PickSet, read_pick_files
from workers.segy_import import import_segy

sys.path.insert(0, str(ROOT / "tools"))
import synth  # noqa: E402


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("one")
    home = root / "home"
    synth.write(synth.generate(shape=(32, 32, 32), seed=3), root / "raw")
    survey = import_segy(root / "raw" / "seismic.sgy", home / "surveys" / "s", name="s")
    picks = read_pick_files(sorted((root / "raw" / "picks").glob("*.pts")), survey,
                            class_pattern=r"(?P<name>.+)\.pts")
    picks.save(survey.folder, "default")
    (home / "examples").mkdir()
    extract_examples([(survey, PickSet.load(survey.folder, "default"), ["seismic"])], CropSpec((16, 16)),
                     home / "examples" / "set.h5")
    return home


@pytest.mark.parametrize("per_voxel", [False, True])
def test_batches_from_a_set_equal_those_from_its_survey_and_picks(home: Path, tmp_path: Path, per_voxel: bool) -> None:
    common = {"crop": {"size": [16, 16]}, "batch_size": 8, "batches_per_epoch": 3, "val_batches": 2,
              "split": {"block": 4, "gap": 2},
              "augment": {"p_flip": 0.5, "p_swap": 0.5, "p_noise": 0.3, "p_stretch": 0.5, "p_scale": 0.5}}
    on_the_fly = prepare_data(DataSection.model_validate({"survey": "s", **common}), home, tmp_path, 0, per_voxel)
    from_set = prepare_data(DataSection.model_validate({"examples": ["set"], **common}), home, tmp_path, 0, per_voxel)
    assert from_set.classes == on_the_fly.classes
    assert {k: from_set.split[k] for k in ("train_points", "val_points")} == \
        {k: on_the_fly.split[k] for k in ("train_points", "val_points")}
    for epoch in (0, 1):
        for k in range(3):
            # the training recipes, and those over every point (train.refit)
            pairs = ((on_the_fly.recipe, from_set.recipe), (on_the_fly.refit_recipe, from_set.refit_recipe))
            for mine, theirs in pairs:
                a, b = make_batch(mine, 0, epoch, k), make_batch(theirs, 0, epoch, k)
                np.testing.assert_allclose(b[0].numpy(), a[0].numpy(), rtol=1e-5, atol=1e-5)
                np.testing.assert_array_equal(b[1].numpy(), a[1].numpy())
    for (xa, ya), (xb, yb) in zip(on_the_fly.val, from_set.val):
        np.testing.assert_allclose(xb.numpy(), xa.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(yb.numpy(), ya.numpy())
