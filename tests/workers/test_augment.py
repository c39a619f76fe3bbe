"""Augmentation: each operation does what it says when drawn, nothing when off, and is deterministic."""
from __future__ import annotations

import numpy as np
import pytest

from workers.augment import AugmentError, Augmentation
from workers.crops import CropSpec
from workers.sampling import BatchRecipe, LabelVolumeSampler, PickSampler, RawVolume

SHAPE = (16, 16, 20)
PICK = np.array([[8, 8, 10]])


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> RawVolume:
    path = tmp_path_factory.mktemp("aug") / "v.f32"
    np.random.default_rng(0).normal(3.0, 2.0, SHAPE).astype(np.float32).tofile(path)
    return RawVolume(str(path), SHAPE)


def _x(volume, aug, spec=CropSpec((6, 8), "inline"), norm=None, seed=0):
    recipe = BatchRecipe((volume,), spec, PickSampler(PICK, [1]), 4, 1, norm=norm, augment=aug)
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(seed, 0, 0, x, y)
    return x


def test_off_changes_nothing_and_flips_mirror_the_lateral_axis(volume) -> None:
    plain = _x(volume, None)
    np.testing.assert_array_equal(_x(volume, Augmentation()), plain)
    np.testing.assert_array_equal(_x(volume, Augmentation(p_flip=1.0)), np.flip(plain, axis=2))
    plain3d = _x(volume, None, CropSpec((4, 6, 8), "3d"))
    np.testing.assert_array_equal(_x(volume, Augmentation(p_flip=1.0), CropSpec((4, 6, 8), "3d")),
                                  np.flip(plain3d, axis=(2, 3)))


def test_swap_cuts_the_other_section_or_transposes(volume) -> None:
    swapped = _x(volume, Augmentation(p_swap=1.0))
    np.testing.assert_array_equal(swapped, _x(volume, None, CropSpec((6, 8), "crossline")))
    cube = CropSpec((6, 6, 8), "3d")
    np.testing.assert_array_equal(_x(volume, Augmentation(p_swap=1.0), cube),
                                  np.swapaxes(_x(volume, None, cube), 2, 3))


def test_amplitude_operations(volume) -> None:
    norm = ((3.0, 2.0),)
    plain = _x(volume, None, norm=norm)
    assert abs(plain.mean()) < 0.5 and 0.6 < plain.std() < 1.4  # normalised by the survey's statistics
    np.testing.assert_allclose(_x(volume, Augmentation(p_polarity=1.0), norm=norm), -plain)
    np.testing.assert_allclose(_x(volume, Augmentation(p_scale=1.0, scale_range=(2.0, 2.0)), norm=norm), 2 * plain)
    noisy = _x(volume, Augmentation(p_noise=1.0, noise_std=0.1), norm=norm)
    assert 0.07 < (noisy - plain).std() < 0.13
    np.testing.assert_array_equal(noisy, _x(volume, Augmentation(p_noise=1.0, noise_std=0.1), norm=norm))
    assert not np.array_equal(noisy, _x(volume, Augmentation(p_noise=1.0, noise_std=0.1), norm=norm, seed=1))


def test_vertical_shift_moves_input_and_labels_together(tmp_path) -> None:
    i, j, k = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    (k + 1).astype(np.float32).tofile(tmp_path / "k.f32")
    (k % 5).astype(np.int32).tofile(tmp_path / "lab.i32")
    sampler = LabelVolumeSampler(RawVolume(str(tmp_path / "lab.i32"), SHAPE, "int32"), SHAPE, slices=(2, (10,)))
    recipe = BatchRecipe((RawVolume(str(tmp_path / "k.f32"), SHAPE),), CropSpec((4, 6), "inline"), sampler, 32, 1,
                         augment=Augmentation(p_shift=1.0, max_shift=2))
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(0, 0, 0, x, y)
    shifts = x[:, 0, 2, 3] - 1 - 10  # centre cell's sample index minus the unshifted centre's
    assert set(shifts.astype(int)) <= {-2, -1, 0, 1, 2} and len(set(shifts.astype(int))) > 2
    inside = x[:, 0] != 0
    np.testing.assert_array_equal(y[inside], (x[:, 0][inside].astype(np.int64) - 1) % 5)
    assert (y[~inside] == -1).all()


def test_bad_probability_is_refused() -> None:
    with pytest.raises(AugmentError, match="p_flip must be a probability"):
        Augmentation(p_flip=1.5)
