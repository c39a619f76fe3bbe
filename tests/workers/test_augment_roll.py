"""Vertical roll augmentation (data.augment.p_roll): the crop cut at a random depth and its lower part put on top,
inputs and labels together, whole samples only, drawn reproducibly and only when asked for."""
from __future__ import annotations

import numpy as np
import pytest

from workers.augment import AugmentError, Augmentation, draw_plan, roll_positions
from workers.crops import CropSpec

from tests.workers.test_augment_stretch import ramp_batch, write_ramp

SHAPE = (16, 40, 48)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory) -> tuple:
    """Input = sample index + 1, labels = sample index."""
    return write_ramp(tmp_path_factory.mktemp("roll"), SHAPE)


def _batch(ramp, spec: CropSpec, aug: Augmentation | None, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return ramp_batch(ramp, [8, 20, 24], 8, spec, aug, k)


def test_roll_positions_put_the_lower_part_on_top() -> None:
    np.testing.assert_array_equal(roll_positions(10, 0.3), [3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
    for n in (2, 7, 64):
        for share in (0.2, 0.5, 0.8):
            pos = roll_positions(n, share)
            assert sorted(pos) == list(range(n)) and pos[0] != 0  # every sample once, and a real cut


def test_rolled_crops_keep_labels_on_their_samples_and_meet_at_one_cut(ramp) -> None:
    x, y = _batch(ramp, CropSpec((32, 32), "inline"), Augmentation(p_roll=1.0))
    first = 24 - 16  # the crop's first sample: centre 24, 32 samples
    for xi, yi in zip(x[:, 0], y):
        np.testing.assert_array_equal(xi - 1, yi)          # exact: whole samples move, no interpolation
        trace = yi[0]
        assert (yi == trace).all()                         # every trace rolled alike
        jumps = np.flatnonzero(np.diff(trace) != 1)
        assert len(jumps) == 1 and trace[jumps[0]] == first + 31 and trace[jumps[0] + 1] == first
        assert 0.2 * 32 - 1 <= 32 - (jumps[0] + 1) <= 0.8 * 32 + 1   # cut a fifth to four fifths down
    # with the stretch in the same resampling, labels still follow their inputs (to the nearest sample)
    x, y = _batch(ramp, CropSpec((32, 32), "inline"), Augmentation(p_roll=1.0, p_stretch=1.0))
    assert np.abs(x[:, 0] - 1 - y).max() <= 0.5 + 1e-6


def test_off_time_slices_and_draws(ramp) -> None:
    spec = CropSpec((32, 32), "inline")
    before = _batch(ramp, spec, Augmentation(p_stretch=0.8), k=2)
    # p_roll 0 takes no draws: the batches of settings without the roll are unchanged
    np.testing.assert_array_equal(_batch(ramp, spec, Augmentation(p_stretch=0.8, p_roll=0.0), k=2)[0], before[0])
    assert draw_plan(Augmentation(p_roll=1.0), CropSpec((6, 6), "time"), np.random.default_rng(0)).roll == 0.0
    half = Augmentation(p_roll=0.5)
    first = _batch(ramp, spec, half, k=5)
    np.testing.assert_array_equal(_batch(ramp, spec, half, k=5)[1], first[1])   # reproducible
    plain = [bool(np.all(np.diff(row[0]) == 1)) for row in first[1]]
    assert 0 < sum(plain) < len(plain)  # p = 0.5: some crops rolled, some not


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_a_probability_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(AugmentError, match="p_roll"):
        Augmentation(p_roll=bad)
