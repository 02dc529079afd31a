"""Metrics of the other dataset kinds (tune.metric): pooled Jaccard and per-image IoU, known
answers; the threshold search and the two-stage fit for them against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from cloudcli.metrics import iou_from_counts, metric_report, total
from cloudcli.post.rules import apply_rule
from cloudcli.post.search import LEVELS, counts, search
from cloudcli.post.twostage import fit_class


def three_images() -> tuple[np.ndarray, np.ndarray]:
    """pred/truth (3, 2, 3): image 0 overlaps (inter 2, pred 2, truth 3), image 1 is a false
    positive of 1 pixel, image 2 is empty in both."""
    pred, truth = np.zeros((3, 2, 3), bool), np.zeros((3, 2, 3), bool)
    pred[0, 0, :2], truth[0, 0, :3] = True, True
    pred[1, 1, 1] = True
    return pred, truth


def row_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, ...]:
    return (pred & truth).sum((1, 2)), pred.sum((1, 2)), truth.sum((1, 2))


def test_known_answers() -> None:
    inter, area, t = row_counts(*three_images())
    assert total("jaccard", inter, area, t) == pytest.approx(2 / 4)  # (2 + 0 + 0) / (3 + 1 + 0) pooled
    assert total("iou_image", inter, area, t) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert total("dice", inter, area, t) == pytest.approx((4 / 5 + 0 + 1) / 3)
    assert iou_from_counts(0, 0, 0) == 1.0 and total("jaccard", np.zeros(2), np.zeros(2), np.zeros(2)) == 1.0
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        total("f1", inter, area, t)


def test_report_averages_classes_and_gives_the_other_metrics() -> None:
    inter, area, t = row_counts(*three_images())
    two = [np.stack([x, x[::-1] * 0], 1) for x in (inter, area, t)]  # class b: nothing anywhere -> 1
    report = metric_report("jaccard", *two, ("a", "b"))
    assert report["jaccard_a"] == pytest.approx(0.5) and report["jaccard_b"] == 1.0
    assert report["jaccard"] == pytest.approx(0.75) and report["n_rows"] == 6
    assert report["iou_image"] == pytest.approx(((2 / 3 + 0 + 1) / 3 + 1) / 2)
    assert report["dice"] == pytest.approx(((4 / 5 + 0 + 1) / 3 + 1) / 2)
    assert set(metric_report("dice", *two, ("a", "b"))) >= {"dice", "dice_empty", "dice_non_empty", "dice_a"}


def brute_force(probs: np.ndarray, truth: np.ndarray, min_areas: tuple[int, ...], metric: str) -> np.ndarray:
    """(255, A) metric, re-thresholding every map at every (level, min_area)."""
    out = np.zeros((len(LEVELS), len(min_areas)))
    for i, level in enumerate(LEVELS):
        for j, a in enumerate(min_areas):
            masks = probs > level
            masks[masks.reshape(len(masks), -1).sum(1) < a] = False
            inter, area, t = row_counts(masks, truth)
            if metric == "jaccard":
                union = (masks | truth).sum()
                out[i, j] = (masks & truth).sum() / union if union else 1.0
            else:
                out[i, j] = total(metric, inter, area, t)
    return out


def random_case(seed: int, n: int = 9, shape: tuple[int, int] = (5, 7)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, *shape)) < rng.random((n, 1, 1))
    probs = np.clip(truth * rng.integers(30, 120) + rng.integers(0, 180, (n, *shape)), 0, 255).astype(np.uint8)
    probs[0], truth[0] = 0, False
    probs[1], truth[1] = 255, True
    probs[2], truth[2] = 255, False
    return probs, truth


@pytest.mark.parametrize("metric", ["jaccard", "iou_image"])
@pytest.mark.parametrize("seed", [0, 1])
def test_search_equals_brute_force(metric: str, seed: int) -> None:
    probs, truth = random_case(seed)
    min_areas = (0, 3, 10, 30)
    result = search(probs, truth, min_areas, metric=metric)
    expected = brute_force(probs, truth, min_areas, metric)
    np.testing.assert_allclose(result.scores, expected, rtol=0, atol=1e-12)
    assert result.score == pytest.approx(expected.max(), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_stage_fit_for_jaccard_equals_applying_its_rule(seed: int) -> None:
    probs, truth = random_case(seed, n=12)
    shape = np.clip(probs.astype(int) + 20, 0, 255).astype(np.uint8)
    score = np.random.default_rng(seed).random(12)
    fit = fit_class(counts(probs, truth), counts(shape, truth), score, (0, 3, 10), "jaccard")
    masks = []
    for p, s, c in zip(probs, shape, score):  # the rule, applied map by map
        on = apply_rule(p, fit.rule).any() and (fit.rule.gate_threshold is None or c > fit.rule.gate_threshold)
        masks.append(s > fit.shape_level if on else np.zeros_like(s, bool))
    masks = np.stack(masks)
    assert (masks & truth).sum((1, 2)).tolist() == fit.inter.tolist()
    assert masks.sum((1, 2)).tolist() == fit.area.tolist()
    ungated = fit_class(counts(probs, truth), counts(shape, truth), None, (0, 3, 10), "jaccard")
    assert (
        total("jaccard", fit.inter, fit.area, truth.sum((1, 2)))
        >= total("jaccard", ungated.inter, ungated.area, truth.sum((1, 2))) - 1e-12
    )  # the gate is kept only when it helps
