"""The numba kernels against their numpy definitions, on maps with every level and odd shapes."""

from __future__ import annotations

import numpy as np
import pytest

from cloudcli.post.kernels import ON, class_histograms, majority_vote
from cloudcli.post.search import histograms
from cloudcli.post.vote import majority


@pytest.mark.parametrize("shape", [(3, 4, 7, 13), (1, 1, 1, 1), (5, 2, 16, 9), (0, 4, 3, 3)])
def test_class_histograms_count_every_pixel_and_those_inside_each_class(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    maps = rng.integers(0, 256, shape, dtype=np.uint8)
    maps.reshape(-1)[:3] = (0, 255, 255)[: maps.size]  # both ends of the range
    packed = rng.integers(0, 1 << shape[1], (shape[0], *shape[2:]), dtype=np.uint8)
    got = class_histograms(maps, packed)
    assert got.shape == (shape[0], shape[1], 2, 256) and got.dtype == np.int32
    for k in range(shape[1]):
        hist_all, hist_in = histograms(maps[:, k], (packed >> k) & 1)
        np.testing.assert_array_equal(got[:, k, 0], hist_all)
        np.testing.assert_array_equal(got[:, k, 1], hist_in)
    assert (got[:, :, 0].sum(-1) == shape[2] * shape[3]).all()


@pytest.mark.parametrize("members, need", [(1, 1), (2, 1), (2, 2), (3, 2), (5, 3), (5, 5)])
def test_majority_vote_equals_numpys_vote_class_by_class(members, need) -> None:
    rng = np.random.default_rng(members * 10 + need)
    maps = [rng.integers(0, 256, (4, 3, 6, 11), dtype=np.uint8) for _ in range(members)]
    levels = rng.integers(0, 255, (members, 3))
    levels[0, 0] = 0  # a level at each end: p > 0 and p > 254
    levels[-1, -1] = 254
    got = majority_vote(maps, levels, need)
    for k in range(3):
        expected = majority(np.stack([m[:, k] for m in maps]), levels[:, k], need)
        np.testing.assert_array_equal(got[:, k], expected)
    assert set(np.unique(got)) <= {0, ON}


def test_majority_vote_refuses_a_minimum_it_cannot_reach() -> None:
    maps = [np.zeros((1, 1, 2, 2), np.uint8)] * 2
    with pytest.raises(ValueError, match=r"min_votes must be in 1..2"):
        majority_vote(maps, np.zeros((2, 1)), 3)
