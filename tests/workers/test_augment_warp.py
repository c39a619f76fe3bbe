"""Vertical warp augmentation: a displacement along the sample axis that varies across the section (folds that
grow with depth, a fault's throw), applied to inputs and labels together, drawn reproducibly."""
from __future__ import annotations

import numpy as np
import pytest

from workers.augment import (MAX_WARP, AugmentError, Augmentation, draw_plan, resample_axis, sample_positions,
                             warp_shifts)
from workers.crops import CropSpec
from workers.sampling import BatchRecipe, LabelVolumeSampler, RawVolume

from tests.workers.test_augment_stretch import ramp_batch, write_ramp

SHAPE = (16, 40, 48)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> tuple[RawVolume, RawVolume]:
    """Input = sample index + 1, labels = sample index: after a warp, each label is its input minus one."""
    return write_ramp(tmp_path_factory.mktemp("warp"), SHAPE)


def _batch(ramp, spec: CropSpec, aug: Augmentation | None, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return ramp_batch(ramp, [8, 20, 24], 8, spec, aug, k)


def test_shifts_are_bounded_reproducible_and_vary_across_the_section() -> None:
    crop = (64, 48)
    fields = [warp_shifts(crop, 1, 6.0, seed) for seed in range(40)]
    np.testing.assert_array_equal(warp_shifts(crop, 1, 6.0, 7), fields[7])
    assert all(f.shape == crop and np.abs(f).max() <= 12.0 + 1e-9 for f in fields)  # folds + throw
    assert all(f[32, 24] == 0 for f in fields)  # the centre sample stays in place (a patch model's label)
    lateral = [np.ptp(f[:, -1]) for f in fields]
    assert max(lateral) > 3.0  # traces move by different amounts: reflectors bend
    # folding grows with depth: the bottom sample moves more across the section than the top one (without
    # a fault, whose throw is the same at every depth)
    no_fault = [f for f in fields if np.abs(np.diff(f, axis=0)).max() < 1.0]
    assert no_fault and all(np.ptp(f[:, 0]) <= np.ptp(f[:, -1]) + 1e-9 for f in no_fault)
    # a fault: a jump between neighbouring traces, in some fields and not in others
    jumps = [np.abs(np.diff(f[:, 0])).max() for f in fields]
    assert 0 < sum(j > 1.0 for j in jumps) < len(jumps)


def test_positions_stay_inside_the_crop_with_stretch() -> None:
    for seed in range(20):
        pos = sample_positions((32, 24), 1, stretch=0.6, warp=seed, warp_max=MAX_WARP)
        assert pos.shape == (32, 24) and pos.min() >= 0 and pos.max() <= 23
    assert sample_positions((32, 24), 1).shape == (1, 24)  # no warp: the same positions on every trace


def test_floats_interpolate_and_integers_take_the_nearest_sample() -> None:
    pos = sample_positions((10, 30), 1, warp=3, warp_max=5.0)
    a = np.arange(30, dtype=np.float32)[None].repeat(10, 0)
    np.testing.assert_allclose(resample_axis(a, 1, pos), pos, atol=1e-5)
    labels = resample_axis(np.arange(30)[None].repeat(10, 0), 1, pos)
    assert labels.dtype.kind == "i" and np.all(np.abs(labels - pos) <= 0.5)


def test_inline_crops_warp_inputs_and_labels_together(ramp) -> None:
    x, y = _batch(ramp, CropSpec((32, 32), "inline"), Augmentation(p_warp=1.0, warp_max=6.0))
    assert np.all(np.abs(y - (x[:, 0] - 1)) <= 0.5)  # each label is the nearest input sample's
    centre = x[:, 0, :, 16]
    assert max(np.ptp(row) for row in centre) > 1.0  # the middle sample reads other depths on other traces
    assert not np.array_equal(x[0], x[1])  # each crop its own field
    assert np.all(x[:, 0, 16, 16] == 25)  # the centre sample (volume sample 24, input 25) stays in place


def test_3d_crops_warp_across_both_lateral_axes(ramp) -> None:
    x, y = _batch(ramp, CropSpec((12, 12, 32), "3d"), Augmentation(p_warp=1.0, warp_max=6.0, p_flip=1.0))
    assert np.all(np.abs(y - (x[:, 0] - 1)) <= 0.5)
    mid = x[:, 0, :, :, 16]
    assert max(np.ptp(m.mean(axis=0)) for m in mid) > 0.1 and max(np.ptp(m.mean(axis=1)) for m in mid) > 0.1


# Batches of settings without the warp, as the code before it (commit 18e601b) made them: sum of x, sum of |x|,
# sum of y, and a position-weighted sum of y (made by the same script at both commits).
BEFORE_WARP = {"inline": (15.135897320160439, 4276.887432005595, 21488, 23903),
               "3d": (175.75235063384753, 8420.098821002874, 46080, 36866)}


@pytest.mark.parametrize("spec", [CropSpec((32, 32), "inline"), CropSpec((8, 8, 24), "3d")])
def test_settings_without_the_warp_make_the_batches_they_made_before_it(tmp_path, spec: CropSpec) -> None:
    rng = np.random.default_rng(5)
    rng.standard_normal(SHAPE).astype(np.float32).tofile(tmp_path / "v.f32")
    np.broadcast_to((np.arange(SHAPE[2]) // 6).astype(np.int32), SHAPE).astype(np.int32).tofile(tmp_path / "l.i32")
    centres = np.array([[8, 20, 24], [5, 12, 20], [10, 25, 30]])
    sampler = LabelVolumeSampler(RawVolume(str(tmp_path / "l.i32"), SHAPE, "int32"), SHAPE, centres=centres)
    aug = Augmentation(p_flip=0.5, p_swap=0.5, p_noise=0.2, p_stretch=0.8, p_scale=0.3)
    recipe = BatchRecipe((RawVolume(str(tmp_path / "v.f32"), SHAPE),), spec, sampler, 8, 1, augment=aug)
    x, y = np.empty(recipe.x_shape, np.float32), np.empty(recipe.y_shape, np.int64)
    recipe.make_batch(3, 1, 2, x, y)
    x64 = np.float64(x)
    total, absolute, labels, weighted = BEFORE_WARP[spec.orientation]
    assert float(x64.sum()) == pytest.approx(total, rel=1e-9) and float(np.abs(x64).sum()) == pytest.approx(absolute)
    assert int(y.sum()) == labels and int((y * np.arange(y.size).reshape(y.shape) % 7).sum()) == weighted


def test_off_time_slices_and_draws(ramp) -> None:
    spec = CropSpec((32, 32), "inline")
    stretch = Augmentation(p_stretch=0.8)
    before = _batch(ramp, spec, stretch, k=2)
    # p_warp 0 takes no draws: the batches of settings without the warp are unchanged
    np.testing.assert_array_equal(_batch(ramp, spec, Augmentation(p_stretch=0.8, p_warp=0.0), k=2)[0], before[0])
    plan = draw_plan(Augmentation(p_warp=1.0), CropSpec((6, 6), "time"), np.random.default_rng(0))
    assert plan.warp is None  # a time slice has no sample axis
    half = Augmentation(p_warp=0.5)
    first = _batch(ramp, spec, half, k=5)
    np.testing.assert_array_equal(_batch(ramp, spec, half, k=5)[0], first[0])
    flat = [bool(np.all(row[0] == row[0, :1])) for row in first[0]]
    assert 0 < sum(flat) < len(flat)  # p = 0.5: some crops warped, some not


@pytest.mark.parametrize("bad", [-1.0, MAX_WARP + 1])
def test_warp_max_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(AugmentError, match="warp_max"):
        Augmentation(p_warp=0.5, warp_max=bad)
