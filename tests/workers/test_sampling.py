"""Samplers and splits: crops come from where they should, labels are balanced, held-out blocks keep their gap."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.crops import CropSpec
from workers.sampling import BatchRecipe, LabelVolumeSampler, PickSampler, RawVolume, SamplingError
from workers.split import SplitError, block_split, random_split

SHAPE = (12, 14, 16)


def _coded(tmp_path: Path, name: str = "coded.f32", scale: float = 1.0) -> RawVolume:
    """A volume whose value encodes its position: v = scale * (10000 i + 100 j + k)."""
    i, j, k = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    (scale * (10000 * i + 100 * j + k)).astype(np.float32).tofile(tmp_path / name)
    return RawVolume(str(tmp_path / name), SHAPE)


def _batch(recipe: BatchRecipe, seed: int = 0, epoch: int = 0, k: int = 0):
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(seed, epoch, k, x, y)
    return x, y


@pytest.mark.parametrize("orientation,size", [("inline", (4, 6)), ("crossline", (4, 6)), ("time", (4, 6)),
                                              ("3d", (4, 4, 6))])
def test_crops_centre_on_the_pick_in_every_orientation(tmp_path, orientation, size) -> None:
    pick = np.array([[6, 7, 8]])
    recipe = BatchRecipe((_coded(tmp_path),), CropSpec(size, orientation), PickSampler(pick, [3]), 2, 1)
    x, y = _batch(recipe)
    assert x.shape == (2, 1, *size) and y.tolist() == [3, 3]
    centre = tuple(s // 2 for s in size)
    assert x[(0, 0, *centre)] == 10000 * 6 + 100 * 7 + 8


def test_context_channels_are_the_neighbouring_slices_and_volumes_stack(tmp_path) -> None:
    pick = np.array([[6, 7, 8]])
    vols = (_coded(tmp_path), _coded(tmp_path, "half.f32", 0.5))
    recipe = BatchRecipe(vols, CropSpec((4, 6), "inline"), PickSampler(pick, [0]), 1, 1, context=2)
    x, _ = _batch(recipe)
    assert x.shape == (1, 10, 4, 6)
    centre = x[0, :, 2, 3]
    expected = [10000 * (6 + d) + 708 for d in range(-2, 3)]
    np.testing.assert_array_equal(centre[:5], expected)
    np.testing.assert_array_equal(centre[5:], np.float32(0.5) * np.array(expected, np.float32))
    with pytest.raises(SamplingError, match="2D crops only"):
        BatchRecipe(vols, CropSpec((4, 4, 4), "3d"), PickSampler(pick, [0]), 1, 1, context=1)


def test_class_balancing_draws_rare_classes_as_often(tmp_path) -> None:
    labels = np.array([0] * 95 + [1] * 5)
    picks = np.tile([[1, 1, 1]], (100, 1))
    sampler = PickSampler(picks, labels)
    _, drawn = sampler.draw(np.random.default_rng(0), 4000)
    assert 0.4 < drawn.mean() < 0.6
    _, plain = PickSampler(picks, labels, balance=False).draw(np.random.default_rng(0), 4000)
    assert plain.mean() < 0.1


def test_label_volume_crops_carry_per_voxel_labels_and_unlabelled_edges(tmp_path) -> None:
    lab = np.full(SHAPE, -1, np.int32)
    lab[5] = np.arange(SHAPE[2]) % 3  # one labelled inline
    lab.tofile(tmp_path / "lab.i32")
    sampler = LabelVolumeSampler(RawVolume(str(tmp_path / "lab.i32"), SHAPE, "int32"), SHAPE, slices=(0, (5,)))
    recipe = BatchRecipe((_coded(tmp_path),), CropSpec((8, 8), "inline"), sampler, 16, 1)
    x, y = _batch(recipe)
    assert y.shape == (16, 8, 8)
    inline_of_crop = (x[:, 0, 4, 4] // 10000).astype(int)
    assert set(inline_of_crop) == {5}
    for b in range(16):
        k = x[b, 0, 4, :] % 100  # sample index of each column of the crop's centre row
        inside = (x[b, 0, 4, :] != 0) | (np.arange(8) == 4)
        np.testing.assert_array_equal(y[b, 4, inside], (k[inside] % 3).astype(np.int64))
    assert (y == -1).any(), "crops hanging off the volume are unlabelled there"


def test_batches_depend_only_on_seed_epoch_and_index(tmp_path) -> None:
    rng = np.random.default_rng(1)
    picks = np.stack([rng.integers(0, s, 30) for s in SHAPE], axis=1)
    recipe = BatchRecipe((_coded(tmp_path),), CropSpec((4, 6), "inline"), PickSampler(picks, rng.integers(0, 3, 30)),
                         8, 4)
    a, b = _batch(recipe, 1, 2, 3), _batch(recipe, 1, 2, 3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], _batch(recipe, 1, 2, 2)[0])
    assert not np.array_equal(a[0], _batch(recipe, 2, 2, 3)[0])


def test_block_split_keeps_a_gap_between_train_and_validation() -> None:
    pts = np.random.default_rng(0).integers(0, 120, (3000, 3))
    gap = 6
    s = block_split(pts, block=20, gap=gap, val_fraction=0.25, seed=1)
    assert len(s.val) and len(s.train) and not set(s.train) & set(s.val)
    dist = np.abs(pts[s.train][:, None, :2] - pts[s.val][None, :, :2]).max(axis=-1).min()
    assert dist > gap
    r = random_split(pts, 0.25, seed=1)
    assert len(r.val) == 750 and len(r.train) == 2250
    # the random split puts near-copies on both sides: that is why it is not the default
    assert np.abs(pts[r.train][:, None, :2] - pts[r.val][None, :, :2]).max(axis=-1).min() <= 1
    with pytest.raises(SplitError, match="smaller blocks"):
        block_split(pts[:1], block=20, gap=6)
