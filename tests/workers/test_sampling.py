"""Samplers and splits: crops come from where they should, labels are balanced, held-out blocks keep their gap."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from workers import augment as aug_ops
from workers.augment import Augmentation
from workers.crops import CropSpec, extract_crop
from workers.sampling import (BatchRecipe, LabelVolumeSampler, PickSampler, PointLabels, RawVolume, SamplingError,
                              batch_rngs)
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


# --- batched make_batch: the same batches as cutting crop by crop, and as before batching (digests) ---

DSHAPE = (10, 12, 14)
FULL_AUG = Augmentation(p_flip=0.5, p_swap=0.5, p_scale=0.5, p_polarity=0.5, p_noise=0.5, p_shift=0.5, max_shift=3)
DIGEST_BATCHES = ((0, 0, 0), (5, 1, 2), (5, 2, 7))  # (seed, epoch, k)


def _digest_recipes(folder: Path) -> dict[str, BatchRecipe]:
    """Every orientation, with and without augmentation, context channels, normalisation, an int16 volume and
    per-voxel labels; picks on the faces so that crops (and context slices, and shifts) leave the volume."""
    rng = np.random.default_rng(7)
    vols = []
    for c, dtype in enumerate(("float32", "float32", "int16")):
        (rng.standard_normal(DSHAPE) * 100).astype(dtype).tofile(folder / f"d{c}.raw")
        vols.append(RawVolume(str(folder / f"d{c}.raw"), DSHAPE, dtype))
    rng.integers(-1, 4, DSHAPE).astype(np.int32).tofile(folder / "lab.i32")
    labels = LabelVolumeSampler(RawVolume(str(folder / "lab.i32"), DSHAPE, "int32"), DSHAPE)
    picks = np.stack([rng.integers(0, s, 40) for s in DSHAPE], axis=1)
    picks[:20:2, 0] = 0
    picks[1:20:2, 1] = DSHAPE[1] - 1
    picks[20:30, 2] = 0
    picks[30:, 0] = DSHAPE[0] - 1
    pick_sampler = PickSampler(picks, rng.integers(0, 3, 40))
    norm = ((1.0, 50.0), (-2.0, 99.0), (0.5, 80.0))
    out = {}
    for o, size in (("inline", (6, 5)), ("crossline", (5, 8)), ("time", (6, 6)), ("3d", (4, 4, 5))):
        ctx = 0 if o == "3d" else 1
        out[f"{o}-plain"] = BatchRecipe(tuple(vols[:2]), CropSpec(size, o), pick_sampler, 24, 3, context=ctx)
        out[f"{o}-aug-norm"] = BatchRecipe(tuple(vols), CropSpec(size, o), pick_sampler, 24, 3, norm=norm,
                                           augment=FULL_AUG)
        out[f"{o}-labels-aug"] = BatchRecipe((vols[0],), CropSpec(size, o), labels, 12, 3, context=ctx,
                                             augment=FULL_AUG)
    return out


# sha256 (first 16 hex digits) of DIGEST_BATCHES' x and y, recorded with the crop-by-crop make_batch of commit
# b939c7c, before batched extraction. A change on purpose to sampling or augmentation changes the stream for a
# seed: record new digests then (print them from this test's `got`), and say so in the commit.
RECORDED_DIGESTS = {
    "inline-plain": "708486860e0a3a24", "inline-aug-norm": "b024705e32de4201",
    "inline-labels-aug": "5f4813626ea1c31f", "crossline-plain": "d61e971b1abae944",
    "crossline-aug-norm": "07608074222da7b3", "crossline-labels-aug": "31b02e1ff80014db",
    "time-plain": "75cf2adda0e26acf", "time-aug-norm": "7344560ede90fab3", "time-labels-aug": "b2d0fdfe0afe280c",
    "3d-plain": "1eceb0e056b70db0", "3d-aug-norm": "9c4aba7f62bd755e", "3d-labels-aug": "b4be8fe65bc040dc",
}


def _reference_batch(recipe: BatchRecipe, seed: int, epoch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch (seed, epoch, k) made crop by crop and channel by channel with extract_crop (the pre-batching way)."""
    recipe.open()
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    rng_sample, rng_aug = batch_rngs(seed, epoch, k)
    centers, labels = recipe.sampler.draw(rng_sample, recipe.batch_size)
    vols = recipe._opened[: len(recipe.volumes)]
    for i in range(recipe.batch_size):
        plan = aug_ops.draw_plan(recipe.augment, recipe.crop, rng_aug)
        spec, c = aug_ops.cut_spec(recipe.crop, plan), aug_ops.shifted_center(tuple(centers[i]), plan)
        fixed = [ax for ax in range(3) if ax not in spec.volume_axes]
        ch = 0
        for v, vol in enumerate(vols):
            for d in range(-recipe.context, recipe.context + 1):
                cc = list(c)
                if fixed:
                    cc[fixed[0]] += d
                extract_crop(vol, tuple(cc), spec, out=x[i, ch])
                if recipe.norm is not None:
                    aug_ops.normalise(x[i, ch], *recipe.norm[v])
                ch += 1
        aug_ops.apply_geometry(x[i], recipe.crop, plan, lead=1)
        aug_ops.apply_amplitude(x[i], plan, recipe.augment)
        if labels is not None:
            y[i] = labels[i]
            continue
        lab = recipe._opened[-1]
        inside = extract_crop(np.ones(lab.shape, np.float32), c, spec) > 0
        y[i] = aug_ops.apply_geometry(np.where(inside, extract_crop(lab, c, spec), -1).astype(np.int64),
                                      recipe.crop, plan, lead=0)
    return x, y


def test_batched_make_batch_equals_crop_by_crop_and_the_recorded_digests(tmp_path) -> None:
    got = {}
    for name, recipe in _digest_recipes(tmp_path).items():
        h = hashlib.sha256()
        for seed, epoch, k in DIGEST_BATCHES:
            x, y = _batch(recipe, seed, epoch, k)
            rx, ry = _reference_batch(recipe, seed, epoch, k)
            np.testing.assert_array_equal(x, rx, err_msg=f"{name} x, batch {(seed, epoch, k)}")
            np.testing.assert_array_equal(y, ry, err_msg=f"{name} y, batch {(seed, epoch, k)}")
            h.update(x.tobytes())
            h.update(y.tobytes())
        got[name] = h.hexdigest()[:16]
    assert got == RECORDED_DIGESTS


def test_a_share_of_rows_is_those_rows_of_the_whole_batch(tmp_path) -> None:
    # data-parallel ranks make rows [a, b) of the same batch: the batched cut must not depend on the share
    for name, recipe in _digest_recipes(tmp_path).items():
        x, y = _batch(recipe, 5, 1, 2)
        for first, stop in ((0, 5), (5, recipe.batch_size), (3, 4)):
            share = dataclasses.replace(recipe, rows=(first, stop))
            xs, ys = _batch(share, 5, 1, 2)
            np.testing.assert_array_equal(xs, x[first:stop], err_msg=f"{name} rows {first}:{stop}")
            np.testing.assert_array_equal(ys, y[first:stop], err_msg=f"{name} rows {first}:{stop}")


@pytest.mark.parametrize("orientation,size", [("inline", (6, 8)), ("crossline", (6, 8)), ("time", (6, 8)),
                                              ("3d", (4, 6, 8))])
@pytest.mark.parametrize("augment", [None, Augmentation(p_flip=0.5, p_swap=0.5, p_shift=0.5, p_stretch=0.5)])
def test_point_labels_give_the_batches_of_the_label_volume_they_stand_for(tmp_path, orientation, size,
                                                                         augment) -> None:
    """Picks as PointLabels (what a train job uses) and written into a label volume give the same batches, bit for
    bit, in every orientation, with augmentation, at the volume's edges and with a point picked twice."""
    rng = np.random.default_rng(4)
    points = np.concatenate([rng.integers(0, SHAPE, size=(60, 3)), [[0, 0, 0], [11, 13, 15], [3, 4, 5], [3, 4, 5]]])
    labels = np.concatenate([rng.integers(0, 5, size=60), [1, 2, 3, 4]])  # the last pick of [3, 4, 5] wins
    dense = np.full(SHAPE, -1, np.float32)
    dense[points[:, 0], points[:, 1], points[:, 2]] = labels
    dense.tofile(tmp_path / "lab.f32")
    recipes = [BatchRecipe((_coded(tmp_path),), CropSpec(size, orientation),
                           LabelVolumeSampler(source, SHAPE, centres=points), 16, 4, augment=augment)
               for source in (RawVolume(str(tmp_path / "lab.f32"), SHAPE), PointLabels(SHAPE, points, labels))]
    for k in range(4):
        (xa, ya), (xb, yb) = (_batch(r, seed=1, k=k) for r in recipes)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert (ya >= 0).any() and (ya == -1).any()
    with pytest.raises(SamplingError, match="inside the volume"):
        PointLabels(SHAPE, np.array([[12, 0, 0]]), [1])


def test_a_share_of_crops_anywhere_takes_the_last_rows_and_leaves_the_pick_draws_as_they_were() -> None:
    points = np.array([[3, 4, 5], [6, 7, 8]])
    plain = LabelVolumeSampler(PointLabels(SHAPE, points, np.array([0, 1])), SHAPE, centres=points)
    mixed = dataclasses.replace(plain, anywhere=0.25)
    centres, _ = plain.draw(np.random.default_rng(3), 8)
    mixed_centres, _ = mixed.draw(np.random.default_rng(3), 8)
    assert {tuple(c) for c in centres} <= {tuple(p) for p in points}
    np.testing.assert_array_equal(mixed_centres[:6], centres[:6])  # the picks' draws come first, unchanged
    free = mixed_centres[6:]
    assert free.shape == (2, 3) and np.all((free >= 0) & (free < np.asarray(SHAPE)))
    many, _ = mixed.draw(np.random.default_rng(4), 400)
    assert len({tuple(c) for c in many[300:]}) > 50  # spread over the volume, not on the two picks
    with pytest.raises(SamplingError, match="anywhere"):
        dataclasses.replace(plain, anywhere=1.0)
