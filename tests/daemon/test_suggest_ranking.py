"""How `suggest` weighs what is already picked (daemon/executor/runners/suggest.py): the distance of every trace from
the nearest picked one, the weight it gives, and the ranking it changes. Pure functions on arrays; the job through
a real daemon and seisctl is tests/daemon/test_loop.py."""
from __future__ import annotations

import numpy as np
import pytest

from daemon.executor.runners.suggest import pick_distance, picked_weight, rank_lines
from daemon.kinds.suggest import SuggestSpec


def _brute(picked: np.ndarray) -> np.ndarray:
    ii, xx = np.indices(picked.shape)
    pi, px = np.nonzero(picked)
    if not len(pi):
        return np.full(picked.shape, np.inf)
    return np.sqrt(((ii[..., None] - pi) ** 2 + (xx[..., None] - px) ** 2).min(-1))


@pytest.mark.parametrize("shape,cap,count,seed", [((40, 57), 9, 5, 0), ((33, 20), 40, 3, 1), ((25, 25), 6, 0, 2),
                                                   ((60, 61), 12, 40, 3), ((1, 30), 5, 2, 4), ((30, 1), 5, 2, 5)])
def test_pick_distance_is_the_euclidean_distance_up_to_its_cap(shape, cap, count, seed) -> None:
    rng = np.random.default_rng(seed)
    picked = np.zeros(shape, dtype=bool)
    picked[rng.integers(shape[0], size=count), rng.integers(shape[1], size=count)] = True
    np.testing.assert_allclose(pick_distance(picked, cap), np.minimum(_brute(picked), cap))


def test_the_weight_is_0_on_picked_traces_and_1_from_near_on() -> None:
    positions = np.array([[10, 5, 0], [10, 6, 3], [10, 7, 9]])  # three traces of inline 10, several samples
    w = picked_weight(positions, (21, 30, 16), near=4)
    assert w.shape == (21, 30)
    assert (w[10, 5:8] == 0).all() and w[10, 8] == pytest.approx(0.25) and w[12, 6] == pytest.approx(0.5)
    assert (w[:6] == 1).all() and (w[15:] == 1).all() and w[10, 11] == 1


def test_a_region_over_the_picks_ranks_below_an_almost_as_unsure_one_away_from_them() -> None:
    """Two uncertain patches on crosslines 10-19: one across the picked inline 24, one 10-19 inlines from it and a
    little less unsure. Unweighted, the one over the picks wins; weighted by the picks, the one away from them, its
    score the region's uncertainty in full, while the one over the picks scores less than half of its own."""
    ni, nx, nb = 48, 48, 8
    grid = np.full((ni, nx, nb), 0.1)
    grid[20:30, 10:20] = 0.8   # inlines 20-29: across inline 24, where the picks are
    grid[34:44, 10:20] = 0.75  # inlines 34-43: 10 or more inlines from them
    edges = np.linspace(0, 64, nb + 1).astype(np.int64)
    spec = SuggestSpec(model="m", survey="s", lines=1, kinds=["crossline"], region=10 / 48, region_samples=1.0,
                       spacing=2, margin=2)
    plain = rank_lines(grid, edges, spec)[0]
    assert (plain["kind"], plain["index"], plain["traces"]) == ("crossline", 10, [20, 29])
    assert plain["score"] == pytest.approx(0.8) and plain["uncertainty"] == pytest.approx(0.8)
    picks = np.array([[24, x, 0] for x in range(4, 44)])  # crosslines 4-43 of inline 24
    weighted = rank_lines(grid, edges, spec, picked_weight(picks, (ni, nx, nb), near=16))[0]
    assert (weighted["kind"], weighted["index"], weighted["traces"]) == ("crossline", 10, [34, 43])
    # inlines 34-43 lie 10-19 from the picks: weights 10/16 .. 16/16; the score is weighed, the uncertainty not
    assert weighted["score"] == pytest.approx(0.75 * (10 + 11 + 12 + 13 + 14 + 15 + 4 * 16) / 160)
    assert weighted["uncertainty"] == pytest.approx(0.75)
    # the window over the picks weighs 0.8 * (4+3+2+1+0+1+2+3+4+5)/160 = 0.125: it lost


def test_picked_weight_refuses_picks_off_the_grid_and_is_1_without_near() -> None:
    assert (picked_weight(np.array([[1, 1, 0]]), (5, 6, 3), near=0) == 1).all()
    with pytest.raises(ValueError, match="outside the survey's 5 x 6 traces"):
        picked_weight(np.array([[5, 1, 0]]), (5, 6, 3), near=2)
    with pytest.raises(ValueError, match="outside"):
        picked_weight(np.array([[1, -1, 0]]), (5, 6, 3), near=2)
