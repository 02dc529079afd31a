import numpy as np
import pytest
from helpers import brute_force_grid
from scipy import ndimage

from cloudcli.metrics import dice
from cloudcli.post.search import LEVELS, above, component_counts, histograms, search


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
    expected = brute_force_grid(probs, truth, min_areas)
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
    from cloudcli.post.search import above, gate_scores, histograms, map_dice

    probs, truth = random_case(7, n=12)
    scores = np.random.default_rng(7).random(12)
    hist_all, hist_in = histograms(probs, truth)
    kept = map_dice(above(hist_all), above(hist_in), hist_in.sum(1), column=100, min_area=3)
    thresholds = np.round(np.arange(0, 1, 0.01), 2)
    fast = gate_scores(kept, hist_in.sum(1) == 0, scores, thresholds)
    for t, value in zip(thresholds, fast):
        total = 0.0
        for p, tr, c in zip(probs, truth, scores):
            mask = p > 100
            if mask.sum() < 3 or c <= t:
                mask[:] = False
            total += dice(mask, tr)
        assert value == pytest.approx(total / len(probs), abs=1e-12)


def drop_components_reference(mask: np.ndarray, min_component: int) -> np.ndarray:
    """8-connected components below min_component removed, with scipy (independent of OpenCV)."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_component
    keep[0] = False
    return keep[labels]


def component_case(seed: int, n: int = 8, shape: tuple[int, int] = (9, 11)) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed noise, so thresholds cut several components of various sizes."""
    rng = np.random.default_rng(seed)
    raw = ndimage.uniform_filter(rng.random((n, *shape)), size=(1, 3, 3))
    probs = np.clip((raw - raw.min()) / (raw.max() - raw.min()) * 255, 0, 255).astype(np.uint8)
    truth = ndimage.uniform_filter(rng.random((n, *shape)), size=(1, 3, 3)) > 0.5
    probs[0], truth[0] = 0, False
    probs[1], truth[1] = 255, True
    probs[2], truth[2] = 255, False
    return probs, truth


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_component_grid_equals_brute_force(seed: int) -> None:
    probs, truth = component_case(seed)
    levels, min_components, min_areas = (60, 100, 127, 150, 200), (0, 2, 3, 5, 12), (0, 4, 10, 30)
    area, inter = component_counts(probs, truth, levels, min_components)
    for j, level in enumerate(levels):
        for c, mc in enumerate(min_components):
            for i, (p, t) in enumerate(zip(probs, truth)):
                mask = drop_components_reference(p > level, mc)
                assert area[i, j * len(min_components) + c] == mask.sum()
                assert inter[i, j * len(min_components) + c] == (mask & t).sum()
    result = search(probs, truth, min_areas, min_components, levels)
    assert len(result.scores) == 255 + len(levels) * 4  # min_component 0 is the plain columns
    # brute force over the whole grid in the documented tie order: the plain 255 levels first
    columns = [(int(level), 0) for level in LEVELS] + [(lv, m) for lv in levels for m in min_components if m > 1]
    best, where = -1.0, None
    for level, mc in columns:
        for a in min_areas:
            total = 0.0
            for p, t in zip(probs, truth):
                mask = drop_components_reference(p > level, mc) if mc else p > level
                total += dice(mask if mask.sum() >= a else np.zeros_like(mask), t)
            if total / len(probs) > best + 1e-12:
                best, where = total / len(probs), (level, mc, a)
    assert result.score == pytest.approx(best, abs=1e-12)
    assert (result.level, result.min_component, result.min_area) == where


def test_component_rule_removes_a_speck_known_answer() -> None:
    probs = np.zeros((1, 6, 8), np.uint8)
    probs[0, :3, :3] = 200  # a 9-pixel blob, all true
    probs[0, 5, 7] = 200  # a 1-pixel false positive
    truth = probs > 0
    truth[0, 5, 7] = False
    result = search(probs, truth, (0,), min_components=(0, 2), component_levels=(127,))
    assert (result.level, result.min_component, result.score) == (127, 2, 1.0)
    assert search(probs, truth, (0,)).score == pytest.approx(2 * 9 / (10 + 9))
