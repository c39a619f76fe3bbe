"""Tile plans: every voxel covered, deterministic ids, and blended identity tiles reproduce the volume."""
from __future__ import annotations

import numpy as np
import pytest

from daemon.executor.predict.tiling import (TilePlan, TilingError, VolumeReader, axis_starts, nearest_grid,
                                   ramp_window)

PLANS = [
    ((5, 37, 51), (16, 24), 6, "inline"),
    ((9, 20, 30), (8, 16), (3, 5), "crossline"),
    ((6, 21, 33), (10, 12), 4, "both"),
    ((11, 19, 23), (5, 8, 8), (2, 3, 3), "inline"),
    ((3, 7, 9), (16, 32), 8, "inline"),          # tiles larger than the volume: padded
    ((4, 6, 10), (8, 8, 16), 4, "inline"),        # 3D tiles larger than the volume
]


def blend_identity(plan: TilePlan, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What apply does with an identity model: weighted tile inputs summed, and the weight sum."""
    reader = VolumeReader([volume], [(0.0, 1.0)])
    acc = np.zeros(volume.shape, np.float64)
    wsum = np.zeros(volume.shape, np.float64)
    for tile in plan.tiles:
        out = reader.tile_input(tile, plan.input_shape)[0]
        valid = out[tuple(slice(0, tile.size[a]) for a in tile.model_axes())].reshape(tile.size)
        w = plan.window(tile)
        acc[tile.slices()] += valid * w
        wsum[tile.slices()] += w
    return acc, wsum


@pytest.mark.parametrize("shape, tile, overlap, orientation", PLANS)
def test_identity_tiles_reproduce_the_volume(shape, tile, overlap, orientation) -> None:
    volume = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    plan = TilePlan(shape, tile, overlap, orientation)
    acc, wsum = blend_identity(plan, volume)
    assert wsum.min() > 0, "a voxel no tile covers"
    np.testing.assert_allclose(acc / wsum, volume, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape, tile, overlap, orientation", PLANS)
def test_plan_is_deterministic_with_sequential_ids(shape, tile, overlap, orientation) -> None:
    a, b = TilePlan(shape, tile, overlap, orientation), TilePlan(shape, tile, overlap, orientation)
    assert a.tiles == b.tiles
    assert [t.id for t in a.tiles] == list(range(len(a.tiles)))
    for t in a.tiles:
        assert all(0 <= s < n and 0 < e <= n for s, e, n in zip(t.start, t.stop, shape))


def test_both_orientations_list_inline_then_crossline_tiles() -> None:
    plan = TilePlan((4, 10, 12), (6, 12), 2, "both")
    kinds = [t.orientation for t in plan.tiles]
    assert set(kinds) == {"inline", "crossline"}
    assert kinds == sorted(kinds, key=lambda k: k != "inline")


def test_overlap_is_at_least_asked_and_last_tile_ends_at_the_border() -> None:
    starts = axis_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] + 32 == 100
    assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:]))


def test_window_is_positive_flat_inside_and_unramped_at_volume_borders() -> None:
    w = ramp_window(32, 8, ramp_low=True, ramp_high=True)
    assert w.min() > 0 and np.all(w[8:24] == 1)
    assert np.all(np.diff(w[:8]) > 0) and np.allclose(w[::-1], w)
    border = ramp_window(32, 8, ramp_low=False, ramp_high=True)
    assert np.all(border[:24] == 1) and border[-1] < 0.1


def test_ramps_hide_seams_for_a_model_with_context() -> None:
    """Blending tiles of a smoothing filter (zero-padded per tile) is closer to the global filter than a hard cut."""
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(1, 64, 64)).astype(np.float32)

    def smooth(img: np.ndarray) -> np.ndarray:
        p = np.pad(img, 2)
        return sum(p[a:a + img.shape[0], b:b + img.shape[1]] for a in range(5) for b in range(5)) / 25

    truth = smooth(volume[0])
    errors = {}
    for overlap in (0, 12):
        plan = TilePlan(volume.shape, (24, 24), overlap)
        acc = np.zeros((64, 64))
        wsum = np.zeros((64, 64))
        for t in plan.tiles:
            out = smooth(volume[0][t.slices()[1:]])
            w = plan.window(t)[0]
            acc[t.slices()[1:]] += out * w
            wsum[t.slices()[1:]] += w
        errors[overlap] = np.abs(acc / wsum - truth)[2:-2, 2:-2].max()
    assert errors[12] < 0.5 * errors[0]


def test_nearest_grid_maps_each_index_to_its_closest_grid_point() -> None:
    grid, nearest = nearest_grid(10, 3)
    assert grid.tolist() == [0, 3, 6, 9]
    assert np.all(np.abs(grid[nearest] - np.arange(10)) <= 1)


@pytest.mark.parametrize("kwargs, words", [
    (dict(shape=(4, 5, 6), tile=(8, 8), overlap=8), "overlap"),
    (dict(shape=(4, 5, 6), tile=(8,), overlap=2), "tile must be"),
    (dict(shape=(4, 5), tile=(8, 8), overlap=2), "volume shape"),
    (dict(shape=(4, 5, 6), tile=(8, 8), overlap=2, orientation="diagonal"), "orientation"),
])
def test_bad_specs_are_refused_with_a_reason(kwargs, words) -> None:
    with pytest.raises(TilingError, match=words):
        TilePlan(**kwargs)
