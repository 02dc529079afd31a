"""The component sweep against OpenCV's connected components at every level, and the search over
all levels against re-applying the chosen rule."""

import cv2
import numpy as np
import pytest

from cloudcli.metrics import dice, dice_from_counts
from cloudcli.post.components import component_sweep
from cloudcli.post.rules import ClassRule, apply_rule
from cloudcli.post.search import LEVELS, component_levels, search

RULES = (0, 1, 2, 3, 5, 9, 40, 1000)  # 0 and 1 keep everything; 1000 is larger than any test map
# (with rules all below the map's size, sets grow past the largest rule: tested too)


def brute_force(probs: np.ndarray, truth: np.ndarray, rules: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 255, R) kept area and intersection: cv2.connectedComponents (8-connected) at every level."""
    area, inter = np.zeros((len(probs), 255, len(rules)), np.int64), np.zeros((len(probs), 255, len(rules)), np.int64)
    for i, (p, t) in enumerate(zip(probs, truth)):
        for level in range(255):
            count, labels = cv2.connectedComponents((p > level).astype(np.uint8), connectivity=8)
            sizes = np.bincount(labels.ravel(), minlength=count)
            for r, c in enumerate(rules):
                keep = sizes >= c
                keep[0] = False  # background
                mask = keep[labels]
                area[i, level, r], inter[i, level, r] = mask.sum(), (mask & t).sum()
    return area, inter


def smooth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    small = rng.random((max(2, shape[0] // 3), max(2, shape[1] // 3))).astype(np.float32)
    return np.round(cv2.resize(small, shape[::-1], interpolation=cv2.INTER_LINEAR) * 255).astype(np.uint8)


def diagonal_blobs() -> np.ndarray:
    """Blobs touching only at corners (one component with 8-connectivity, several with 4), at
    different values so they join at different levels."""
    p = np.zeros((7, 13), np.uint8)
    p[0:2, 0:2] = 200
    p[2:4, 2:4] = 150  # touches the first blob at a corner
    p[4, 4] = 100  # and a single pixel at the next corner
    p[0, 12], p[6, 0], p[6, 12] = 255, 255, 1  # single pixels in corners of the map
    p[3, 8:11] = [90, 90, 90]
    p[4, 11] = 90  # a diagonal step
    return p


def maps(seed: int) -> np.ndarray:
    """(n, 7, 13) maps of every kind the sweep must get right."""
    rng = np.random.default_rng(seed)
    shape = (7, 13)
    single = np.zeros(shape, np.uint8)
    single[rng.integers(0, 7, 5), rng.integers(0, 13, 5)] = rng.integers(1, 256, 5)
    kinds = [
        smooth(rng, shape),
        smooth(rng, shape),
        rng.integers(0, 256, shape, dtype=np.uint8),  # pure noise
        (rng.integers(0, 4, shape) * 80).astype(np.uint8),  # a few levels, many ties
        np.full(shape, 77, np.uint8),  # constant
        np.zeros(shape, np.uint8),
        np.full(shape, 255, np.uint8),
        single,
        diagonal_blobs(),
    ]
    return np.stack(kinds)


@pytest.mark.parametrize(("seed", "rules"), [(0, RULES), (1, RULES), (2, RULES), (3, (2, 4)), (4, (0, 9))])
def test_sweep_equals_connected_components_at_every_level(seed: int, rules: tuple[int, ...]) -> None:
    probs = maps(seed)
    truth = np.random.default_rng(seed + 10).random(probs.shape) < np.linspace(0, 1, len(probs))[:, None, None]
    area, inter = component_sweep(probs, truth, rules, threads=1 + seed % 2)
    assert area.shape == inter.shape == (len(probs), 255, len(rules)) and area.dtype == np.int32
    expected_area, expected_inter = brute_force(probs, truth, rules)
    np.testing.assert_array_equal(area, expected_area)
    np.testing.assert_array_equal(inter, expected_inter)


def test_sweep_on_odd_shapes_and_rules_in_any_order() -> None:
    rng = np.random.default_rng(4)
    for shape in ((1, 1), (1, 9), (9, 1), (5, 3), (12, 17)):
        probs = np.stack([smooth(rng, shape), rng.integers(0, 256, shape, dtype=np.uint8)])
        truth = rng.random(probs.shape) < 0.5
        rules = (5, 0, 2, 5, 300)  # unsorted, repeated
        area, inter = component_sweep(probs, truth, rules)
        expected_area, expected_inter = brute_force(probs, truth, rules)
        np.testing.assert_array_equal(area, expected_area)
        np.testing.assert_array_equal(inter, expected_inter)


def test_sweep_known_answer_and_edge_inputs() -> None:
    probs = diagonal_blobs()[None]
    area, _ = component_sweep(probs, np.zeros_like(probs, bool), (0, 8))
    # level 149: the 200-blob and the 150-blob touch diagonally: one component of 8, plus 2 pixels of 255
    assert area[0, 149].tolist() == [10, 8]
    assert area[0, 254].tolist() == [2, 0] and area[0, 0, 0] == (probs > 0).sum()
    empty = component_sweep(np.zeros((0, 4, 5), np.uint8), np.zeros((0, 4, 5), bool), (0, 3))
    assert empty[0].shape == (0, 255, 2)
    assert component_sweep(probs, probs > 0, ())[0].shape == (1, 255, 0)
    with pytest.raises(ValueError, match="uint8"):
        component_sweep(probs.astype(np.float32), probs > 0, (3,))


def test_component_levels_of_the_config() -> None:
    assert component_levels("all") == tuple(range(255))
    assert component_levels((0.5, 0.3, 0.5)) == (76, 127)


@pytest.mark.parametrize("seed", [0, 1])
def test_search_over_every_level_equals_reapplying_the_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = np.stack([smooth(rng, (8, 10)) for _ in range(8)])
    probs[0, 0, 0] = 255  # a lone speck on a dark map
    probs[0, 1:, :] //= 4
    truth = np.stack([smooth(rng, (8, 10)) > 140 for _ in range(8)])
    min_areas, min_components = (0, 4, 12), (0, 3, 6, 15)
    result = search(probs, truth, min_areas, min_components, tuple(LEVELS))
    assert len(result.scores) == 255 * 4  # the plain levels, then every level x 3 rules
    rule = ClassRule(result.level, result.min_area, result.min_component)
    reapplied = np.mean([dice(apply_rule(p, rule) != 0, t) for p, t in zip(probs, truth)])
    assert result.score == pytest.approx(reapplied, abs=1e-12)
    # every grid point, brute force, in the documented order (ties: earliest column, smallest min_area)
    area, inter = brute_force(probs, truth, min_components)
    best, where = -1.0, None
    columns = [(level, 0) for level in range(255)] + [(lv, r) for lv in range(255) for r in (1, 2, 3)]
    for k, (level, r) in enumerate(columns):
        for j, a in enumerate(min_areas):
            keep = area[:, level, r] >= a
            score = dice_from_counts(keep * inter[:, level, r], keep * area[:, level, r], truth.sum((1, 2))).mean()
            assert result.scores[k, j] == pytest.approx(score, abs=1e-12)
            if score > best + 1e-12:
                best, where = score, (level, min_components[r], a)
    assert (result.level, result.min_component, result.min_area) == where
