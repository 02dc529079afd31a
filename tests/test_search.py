import numpy as np
import pytest

from cloudcli.metrics import dice
from cloudcli.search import LEVELS, above, histograms, search


def brute_force(probs: np.ndarray, truth: np.ndarray, min_areas: tuple[int, ...]) -> np.ndarray:
    """Re-threshold and re-score every map for every grid point."""
    scores = np.zeros((len(LEVELS), len(min_areas)))
    for i, level in enumerate(LEVELS):
        for j, a in enumerate(min_areas):
            total = 0.0
            for p, t in zip(probs, truth):
                mask = p > level
                if mask.sum() < a:
                    mask[:] = False
                total += dice(mask, t)
            scores[i, j] = total / len(probs)
    return scores


def random_case(seed: int, n: int = 9, shape: tuple[int, int] = (5, 7)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    truth = rng.random((n, *shape)) < rng.random((n, 1, 1))
    probs[0], truth[0] = 0, False  # an all-empty map with an empty truth
    probs[1], truth[1] = 255, True  # all full
    probs[2], truth[2] = 255, False  # full prediction, empty truth
    probs[3], truth[3] = 0, True  # empty prediction, full truth
    return probs, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grid_equals_brute_force(seed: int) -> None:
    probs, truth = random_case(seed)
    min_areas = (0, 1, 5, 20, 35, 36)
    result = search(probs, truth, min_areas)
    expected = brute_force(probs, truth, min_areas)
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)
    i, j = np.unravel_index(np.argmax(expected), expected.shape)
    assert (result.level, result.min_area) == (i, min_areas[j]) and result.score == pytest.approx(expected[i, j])


def test_histograms_and_areas_known_answer() -> None:
    probs = np.array([[[0, 10, 10, 255]]], dtype=np.uint8)
    truth = np.array([[[True, True, False, False]]])
    hist_all, hist_in = histograms(probs, truth)
    assert hist_all[0, [0, 10, 255]].tolist() == [1, 2, 1] and hist_all.sum() == 4
    assert hist_in[0, [0, 10]].tolist() == [1, 1] and hist_in.sum() == 2
    area, inter = above(hist_all), above(hist_in)
    assert area.shape == (1, 255)
    assert area[0, [0, 9, 10, 254]].tolist() == [3, 3, 1, 1]  # p > level
    assert inter[0, [0, 9, 10]].tolist() == [1, 1, 0]


def test_perfect_probabilities_find_a_perfect_score() -> None:
    rng = np.random.default_rng(5)
    truth = rng.random((6, 8, 8)) < 0.4
    probs = np.where(truth, 200, 40).astype(np.uint8)
    result = search(probs, truth, (0, 10))
    assert result.score == 1.0 and 40 <= result.level < 200 and result.min_area == 0


def test_gate_scores_equal_brute_force() -> None:
    from cloudcli.search import above, gate_scores, histograms, map_dice

    probs, truth = random_case(7, n=12)
    cls_probs = np.random.default_rng(7).random(12)
    hist_all, hist_in = histograms(probs, truth)
    kept = map_dice(above(hist_all), above(hist_in), hist_in.sum(1), level=100, min_area=3)
    thresholds = np.round(np.arange(0, 1, 0.01), 2)
    fast = gate_scores(kept, hist_in.sum(1) == 0, cls_probs, thresholds)
    for t, value in zip(thresholds, fast):
        total = 0.0
        for p, tr, c in zip(probs, truth, cls_probs):
            mask = p > 100
            if mask.sum() < 3 or c <= t:
                mask[:] = False
            total += dice(mask, tr)
        assert value == pytest.approx(total / len(probs), abs=1e-12)
