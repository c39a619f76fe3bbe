"""Vertical stretch/squeeze augmentation: inputs resampled linearly, labels by nearest sample, both together."""
from __future__ import annotations

import numpy as np
import pytest

from workers.augment import AugmentError, Augmentation, draw_plan, stretch_axis, stretch_positions
from workers.crops import CropSpec
from workers.sampling import BatchRecipe, LabelVolumeSampler, RawVolume

SHAPE = (16, 16, 48)


def write_ramp(folder, shape: tuple[int, int, int]) -> tuple[RawVolume, RawVolume]:
    """Input = sample index + 1 (a ramp), labels = sample index: resampling either is easy to predict."""
    k = np.broadcast_to(np.arange(shape[2]), shape)
    (k + 1).astype(np.float32).tofile(folder / "k.f32")
    k.astype(np.int32).tofile(folder / "lab.i32")
    return RawVolume(str(folder / "k.f32"), shape), RawVolume(str(folder / "lab.i32"), shape, "int32")


def ramp_batch(ramp, centre: list[int], batch: int, spec: CropSpec, aug: Augmentation | None,
               k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Batch k of epoch 0 of crops around `centre` of the ramp volumes."""
    vol, lab = ramp
    sampler = LabelVolumeSampler(lab, vol.shape, centres=np.array([centre] * 3))
    recipe = BatchRecipe((vol,), spec, sampler, batch, 1, augment=aug)
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(0, 0, k, x, y)
    return x, y


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> tuple[RawVolume, RawVolume]:
    return write_ramp(tmp_path_factory.mktemp("stretch"), SHAPE)


def _batch(ramp, spec: CropSpec, aug: Augmentation | None, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return ramp_batch(ramp, [8, 8, 24], 16, spec, aug, k)


def test_positions_identity_centre_and_mirror() -> None:
    np.testing.assert_allclose(stretch_positions(9, 1.0), np.arange(9))
    for factor in (0.5, 0.7, 1.3, 2.0):
        pos = stretch_positions(21, factor)
        assert pos[10] == 10 and pos.min() >= 0 and pos.max() <= 20
    squeezed = stretch_positions(21, 0.5)
    assert squeezed[0] == 10 and squeezed[1] == 8  # read 10 and 8 samples above the top: mirrored back inside


def test_floats_interpolate_integers_take_the_nearest_sample() -> None:
    a = np.arange(12, dtype=np.float32)[None].repeat(3, 0)
    out = stretch_axis(a, 1, 1.6)
    np.testing.assert_allclose(out[:, 5] - out[:, 4], 1 / 1.6, rtol=1e-5)
    labels = stretch_axis(np.arange(12)[None].repeat(3, 0), 1, 1.6)
    assert labels.dtype.kind == "i" and np.all(np.abs(labels - out) <= 0.5)


def test_inline_crops_stretch_inputs_and_labels_together(ramp) -> None:
    x, y = _batch(ramp, CropSpec((6, 24), "inline"), Augmentation(p_stretch=1.0, stretch_range=(0.7, 1.4)))
    slopes = x[:, 0, 3, 12] - x[:, 0, 3, 11]  # d(input)/d(sample) at the centre = 1 / stretch factor
    assert np.all((slopes > 1 / 1.4 - 1e-4) & (slopes < 1 / 0.7 + 1e-4))
    assert slopes.max() - slopes.min() > 0.2  # factors differ from crop to crop
    assert np.all(np.abs(y - (x[:, 0] - 1)) <= 0.5)  # each label is the nearest input sample's
    # the lateral axis is not resampled
    np.testing.assert_array_equal(x[:, 0], x[:, 0, :1].repeat(6, axis=1))


def test_3d_crops_stretch_the_sample_axis_after_the_transpose(ramp) -> None:
    aug = Augmentation(p_stretch=1.0, p_swap=1.0, p_flip=1.0)
    x, y = _batch(ramp, CropSpec((6, 6, 24), "3d"), aug)
    slopes = x[:, 0, 2, 3, 12] - x[:, 0, 2, 3, 11]
    assert np.all((slopes > 1 / 1.4 - 1e-4) & (slopes < 1 / 0.7 + 1e-4)) and np.ptp(slopes) > 0.2
    assert np.all(np.abs(y - (x[:, 0] - 1)) <= 0.5)


def test_off_or_no_sample_axis_changes_nothing_and_draws_repeat(ramp) -> None:
    spec = CropSpec((6, 24), "inline")
    plain = _batch(ramp, spec, None)
    np.testing.assert_array_equal(_batch(ramp, spec, Augmentation(p_stretch=0.0))[0], plain[0])
    plan = draw_plan(Augmentation(p_stretch=1.0), CropSpec((6, 6), "time"), np.random.default_rng(0))
    assert plan.stretch == 1.0  # a time slice has no sample axis to stretch
    aug = Augmentation(p_stretch=0.5)
    first = _batch(ramp, spec, aug, k=3)
    np.testing.assert_array_equal(_batch(ramp, spec, aug, k=3)[0], first[0])
    stretched = [not np.array_equal(row, plain[0][0]) for row in first[0]]
    assert 0 < sum(stretched) < len(stretched)  # p = 0.5: some crops stretched, some not


@pytest.mark.parametrize("rng_", [(0.0, 1.2), (1.2, 1.1), (0.4, 1.0), (1.0, 2.5)])
def test_bad_stretch_range_is_refused(rng_) -> None:
    with pytest.raises(AugmentError, match="stretch_range"):
        Augmentation(p_stretch=0.5, stretch_range=rng_)
    with pytest.raises(AugmentError, match="p_stretch must be a probability"):
        Augmentation(p_stretch=1.5)
