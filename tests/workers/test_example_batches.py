"""Batches from example sets (workers.example_batches.ExampleRecipe over workers.example_index.read_sets): fixed by
(seed, epoch, k), the same from the worker pool as in-process, each example normalised with its own survey's
statistics, segmentation labels equal to those cut from the picks, and the class union of sets with other classes.

Two small synthetic surveys (tools/synth.py, different seeds) are imported from SEG-Y and their picks read from
the generator's point files, as a user's would be.
"""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from workers.augment import Augmentation
from workers.crops import CropSpec
from workers.example_batches import ExampleRecipe
from workers.example_index import read_sets
from workers.examples import ExampleSetError, extract_examples
from workers.picks import PickSet, read_pick_files
from workers.pool import WorkerPool
from workers.sampling import PickSampler, PointLabels, batch_rngs
from workers.segy_import import import_segy

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import synth  # noqa: E402

CROP = CropSpec((12, 12), "inline")


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sets")
    out = {"surveys": [], "picks": [], "paths": []}
    for k, seed in enumerate((0, 1)):
        folder = root / f"raw{k}"
        synth.write(synth.generate(shape=(32, 32, 32), seed=seed), folder)
        survey = import_segy(folder / "seismic.sgy", root / f"s{k}", name=f"s{k}")
        picks = read_pick_files(sorted((folder / "picks").glob("*.pts")), survey, class_pattern=r"(?P<name>.+)\.pts")
        if k == 1:  # the second set lists its classes in the opposite order: the job's union maps them
            n = len(picks.class_names)
            picks = PickSet(picks.i, picks.x, picks.s, (n - 1 - picks.cls), list(picks.class_names)[::-1])
        path = root / f"set{k}.h5"
        extract_examples([(survey, picks, ["seismic"])], CROP, path)
        out["surveys"].append(survey)
        out["picks"].append(picks)
        out["paths"].append((f"set{k}", path))
    return out


def recipe_of(two_sets: dict, per_voxel: bool = False, augment: Augmentation | None = None,
              batch_size: int = 8) -> tuple[ExampleRecipe, object]:
    index = read_sets(two_sets["paths"], CROP, 1)
    sampler = PickSampler(index.positions, index.labels, balance=True)
    recipe = ExampleRecipe(files=tuple(index.files), set_of=index.set_of, row_of=index.row_of, norm=index.norm,
                           sampler=sampler, crop=CROP, batch_size=batch_size, batches_per_epoch=4,
                           per_voxel=per_voxel, augment=augment, survey_of=index.survey_of)
    return recipe, index


def batch(recipe: ExampleRecipe, seed: int, epoch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(seed, epoch, k, x, y)
    return x, y


def test_each_example_is_normalised_with_its_own_surveys_statistics(two_sets: dict) -> None:
    recipe, index = recipe_of(two_sets)
    x, y = batch(recipe, 3, 0, 1)
    rows = recipe.sampler.draw_index(batch_rngs(3, 0, 1)[0], recipe.batch_size)
    assert len(set(index.survey_of[rows].tolist())) == 2  # this batch mixes both surveys
    for i, r in enumerate(rows):
        s, row = int(index.set_of[r]), int(index.row_of[r])
        with h5py.File(index.files[s], "r") as h5:
            raw = h5["x"][row, 0]
        stats = two_sets["surveys"][s].stats("seismic")
        np.testing.assert_allclose(x[i, 0], (raw - stats["mean"]) / stats["std"], rtol=1e-5, atol=1e-5)
        assert y[i] == index.labels[r]


def test_batches_are_fixed_by_seed_epoch_and_index_and_the_pool_makes_the_same(two_sets: dict) -> None:
    aug = Augmentation(p_flip=0.5, p_shift=0.5, max_shift=3, p_noise=0.3, p_stretch=0.3)
    recipe, _ = recipe_of(two_sets, augment=aug)
    a, b = batch(recipe, 0, 1, 2), batch(recipe, 0, 1, 2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], batch(recipe, 0, 1, 3)[0])
    assert not np.array_equal(a[0], batch(recipe, 0, 2, 2)[0])
    pool = WorkerPool(recipe, n_workers=2, seed=0, ring_slots=4)
    try:
        for k, got in enumerate(pool.epoch(1)):
            with got:
                want = batch(recipe, 0, 1, k)
                np.testing.assert_array_equal(got.x.cpu().numpy() if hasattr(got.x, "cpu") else got.x, want[0])
                np.testing.assert_array_equal(got.y.cpu().numpy() if hasattr(got.y, "cpu") else got.y, want[1])
    finally:
        pool.close()


def test_segmentation_labels_are_the_picks_each_crop_covers(two_sets: dict) -> None:
    recipe, index = recipe_of(two_sets, per_voxel=True)
    x, y = batch(recipe, 5, 0, 0)
    assert y.shape == (8, 12, 12)
    rows = recipe.sampler.draw_index(batch_rngs(5, 0, 0)[0], recipe.batch_size)
    for i, r in enumerate(rows):
        s = int(index.set_of[r])
        picks = two_sets["picks"][s]
        want = PointLabels(two_sets["surveys"][s].shape, picks.positions(), index.label_maps[s][picks.cls])
        np.testing.assert_array_equal(y[i], want.crops(index.positions[r][None], CROP)[0])
        centre = tuple(n // 2 for n in CROP.size)
        assert y[i][centre] == index.labels[r]  # the centre voxel holds the example's own class


def test_a_segmentation_recipe_of_training_examples_sees_no_validation_labels(two_sets: dict) -> None:
    """Labels come from the recipe's own examples (as job_data's come from the split's picks): examples left out
    of the recipe (validation) are -1 in its crops even where a crop covers them."""
    _, index = recipe_of(two_sets)
    half = np.arange(len(index.labels)) % 2 == 0
    sampler = PickSampler(index.positions[half], index.labels[half], balance=False)
    recipe = ExampleRecipe(files=tuple(index.files), set_of=index.set_of[half], row_of=index.row_of[half],
                           norm=index.norm[half], sampler=sampler, crop=CROP, batch_size=8, batches_per_epoch=2,
                           per_voxel=True, survey_of=index.survey_of[half])
    _, y = batch(recipe, 1, 0, 0)
    rows = sampler.draw_index(batch_rngs(1, 0, 0)[0], 8)
    hidden = 0  # cells where a left-out example lies under a crop: unlabelled there
    for i, r in enumerate(rows):
        s = int(recipe.survey_of[r])
        mine, left = half & (index.survey_of == s), ~half & (index.survey_of == s)
        shape = two_sets["surveys"][s].shape
        want = PointLabels(shape, index.positions[mine], index.labels[mine]).crops(sampler.picks[r][None], CROP)[0]
        np.testing.assert_array_equal(y[i], want)
        others = PointLabels(shape, index.positions[left], index.labels[left]).crops(sampler.picks[r][None], CROP)[0]
        hidden += int(((others >= 0) & (y[i] < 0)).sum())
    assert hidden > 0  # the batch did cover left-out examples


def test_sets_with_their_classes_in_another_order_join_in_one_class_list(two_sets: dict) -> None:
    _, index = recipe_of(two_sets)
    assert index.classes == list(two_sets["picks"][0].class_names)
    for s in (0, 1):
        picks = two_sets["picks"][s]
        mine = index.set_of == s
        names = [index.classes[c] for c in index.labels[mine]]
        assert names == [picks.class_names[c] for c in picks.cls]


def test_sets_of_another_crop_or_channel_count_are_refused_by_name(two_sets: dict) -> None:
    with pytest.raises(ExampleSetError, match=r"example set 'set0' holds crops \[12, 12\] \(inline\); this job's "
                       r"data.crop is \[16, 16\]"):
        read_sets(two_sets["paths"], CropSpec((16, 16)), 1)
    with pytest.raises(ExampleSetError, match="'set0' has 1 channel"):
        read_sets(two_sets["paths"], CROP, 2)


def test_extract_refuses_a_crop_larger_than_the_survey(two_sets: dict, tmp_path: Path) -> None:
    survey, picks = two_sets["surveys"][0], two_sets["picks"][0]
    with pytest.raises(ExampleSetError, match=r"crop \[40, 12\] \(inline\) is larger than survey 's0', which has "
                       r"\[32, 32\]"):
        extract_examples([(survey, picks, ["seismic"])], CropSpec((40, 12)), tmp_path / "big.h5")
    assert not (tmp_path / "big.h5").exists()


def test_the_swap_cuts_the_other_section_from_the_source_survey(two_sets: dict) -> None:
    """With the source surveys' volumes (sections), a swapped inline crop is the crossline section through the
    example, normalised with its survey's statistics, and its labels those of the recipe's own examples."""
    from workers.crops import extract_crop
    from workers.sampling import RawVolume

    index = read_sets(two_sets["paths"], CROP, 1)
    sections = tuple((RawVolume(str(s.folder / s.doc["volumes"]["seismic"]["file"]), s.shape),)
                     for s in two_sets["surveys"])
    recipe = ExampleRecipe(files=tuple(index.files), set_of=index.set_of, row_of=index.row_of, norm=index.norm,
                           sampler=PickSampler(index.positions, index.labels, balance=True), crop=CROP, batch_size=8,
                           batches_per_epoch=4, per_voxel=True, augment=Augmentation(p_swap=1.0),
                           survey_of=index.survey_of, sections=sections)
    x, y = batch(recipe, 2, 0, 0)
    rows = recipe.sampler.draw_index(batch_rngs(2, 0, 0)[0], 8)
    crossline = CropSpec(CROP.size, "crossline")
    for i, r in enumerate(rows):
        s = int(index.survey_of[r])
        survey = two_sets["surveys"][s]
        stats = survey.stats("seismic")
        raw = extract_crop(survey.volume("seismic"), tuple(index.positions[r]), crossline)
        np.testing.assert_allclose(x[i, 0], (raw - stats["mean"]) / stats["std"], rtol=1e-5, atol=1e-5)
        mine = index.survey_of == s
        want = PointLabels(survey.shape, index.positions[mine], index.labels[mine])
        np.testing.assert_array_equal(y[i], want.crops(index.positions[r][None], crossline)[0])
    without = ExampleRecipe(**{**{k: getattr(recipe, k) for k in ("files", "set_of", "row_of", "norm", "sampler",
                                                                  "crop", "batch_size", "batches_per_epoch",
                                                                  "augment")}})
    with pytest.raises(Exception, match="swap needs the source surveys' volumes"):
        batch(without, 2, 0, 0)
