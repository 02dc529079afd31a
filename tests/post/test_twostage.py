import numpy as np
import pytest
from helpers import brute_force_grid
from scipy import ndimage

from cloudcli.metrics import dice
from cloudcli.post.rules import ClassRule, apply_rule, postprocess
from cloudcli.post.search import LEVELS, counts
from cloudcli.post.twostage import GATES, at_least_one, fit_class, scores_of, top_pixel
from cloudcli.post.vote import topk_from_histograms

MIN_AREAS = (0, 3, 10, 30)


def random_case(seed: int, n: int = 12, shape: tuple[int, int] = (6, 8)) -> tuple[np.ndarray, ...]:
    """seg1 and shape maps loosely following the truth, with the edge cases of test_search, and
    a few empty truths under noisy maps (what a gate can fix); plus class scores in 0..1."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, *shape)) < rng.random((n, 1, 1))
    truth[rng.random(n) < 0.3] = False
    seg1 = np.clip(truth * rng.integers(40, 120) + rng.integers(0, 170, (n, *shape)), 0, 255).astype(np.uint8)
    seg2 = np.clip(truth * rng.integers(60, 140) + rng.integers(0, 150, (n, *shape)), 0, 255).astype(np.uint8)
    seg1[0], seg2[0], truth[0] = 0, 0, False  # all zeros, empty truth
    seg1[1], seg2[1], truth[1] = 255, 255, True  # all full
    seg1[2], seg2[2], truth[2] = 255, 200, False  # full prediction, empty truth
    seg1[3], seg2[3], truth[3] = 0, 0, True  # empty prediction, full truth
    seg1[4], truth[4] = rng.integers(0, 256, shape), False  # noise on an empty truth
    present = truth.reshape(n, -1).any(1)
    score = np.round(np.where(present, 0.3 + 0.7 * rng.random(n), 0.6 * rng.random(n)), 3)
    score[2] = 0.051  # the classifier knows the full prediction of image 2 is wrong
    return seg1, seg2, truth, score


def first_best(means: np.ndarray) -> tuple[int, ...]:
    """Index of the first maximum in row-major order, near-equal floats (1e-12) counted as ties."""
    flat = means.reshape(-1)
    i = int(np.flatnonzero(flat >= flat.max() - 1e-12)[0])
    return tuple(int(v) for v in np.unravel_index(i, means.shape))


def seg1_rule(probs: np.ndarray, truth: np.ndarray, min_areas: tuple[int, ...]) -> tuple[ClassRule, float]:
    """Brute-force best seg1-alone rule (ties: lowest level, then smallest min_area) and its mean Dice."""
    grid = brute_force_grid(probs, truth, min_areas)
    i, j = first_best(grid)
    return ClassRule(i, min_areas[j]), float(grid[i, j])


def shape_grid(probs: np.ndarray, shape: np.ndarray, truth: np.ndarray, rule: ClassRule) -> np.ndarray:
    """(255,) mean combined Dice: shape > L where seg1's rule leaves a mask, else empty."""
    on = [apply_rule(p, rule).any() for p in probs]
    empty = np.zeros(shape.shape[1:], bool)
    return np.array(
        [np.mean([dice(s > level if o else empty, t) for s, o, t in zip(shape, on, truth)]) for level in LEVELS]
    )


def applied(fit, seg1: np.ndarray, truth: np.ndarray, shape=None, score=None) -> tuple[np.ndarray, np.ndarray]:
    """(N,) Dice and presence of postprocess.postprocess with the fitted rule, image by image."""
    out, present = [], []
    for i in range(len(seg1)):
        mask = postprocess(
            seg1[i][None],
            [fit.rule],
            None if score is None else score[i : i + 1],
            shape=None if shape is None else shape[i][None],
            shape_levels=None if shape is None else [fit.shape_level],
        )[0]
        out.append(dice(mask, truth[i]))
        present.append(bool(mask.any()))
    return np.array(out), np.array(present)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_seg1_alone_equals_brute_force(seed: int) -> None:
    seg1, _, truth, _ = random_case(seed)
    fit = fit_class(counts(seg1, truth), None, None, MIN_AREAS)
    assert fit.shape_level is None and fit.rule.gate_threshold is None and fit.rule.min_component == 0
    per_map = [dice(apply_rule(p, fit.rule), t) for p, t in zip(seg1, truth)]
    np.testing.assert_allclose(fit.dice, per_map, rtol=0, atol=1e-12)
    assert fit.present.tolist() == [bool(apply_rule(p, fit.rule).any()) for p in seg1]
    np.testing.assert_allclose(fit.plain, [dice(p > fit.rule.level, t) for p, t in zip(seg1, truth)], atol=1e-12)
    rule, score = seg1_rule(seg1, truth, MIN_AREAS)
    assert fit.dice.mean() == pytest.approx(score, abs=1e-12)
    assert fit.rule == rule


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_two_stage_equals_brute_force(seed: int) -> None:
    seg1, seg2, truth, _ = random_case(seed)
    fit = fit_class(counts(seg1, truth), counts(seg2, truth), None, MIN_AREAS)
    rule, _ = seg1_rule(seg1, truth, MIN_AREAS)
    assert fit.rule == rule  # stage 1 is seg1's own best rule
    combined = shape_grid(seg1, seg2, truth, rule)
    (level,) = first_best(combined)
    assert fit.shape_level == level
    assert fit.dice.mean() == pytest.approx(combined.max(), abs=1e-12)
    expected, present = applied(fit, seg1, truth, shape=seg2)
    np.testing.assert_allclose(fit.dice, expected, rtol=0, atol=1e-12)
    assert fit.present.tolist() == present.tolist()
    np.testing.assert_allclose(fit.plain, [dice(s > level, t) for s, t in zip(seg2, truth)], atol=1e-12)


def test_two_stage_known_answer() -> None:
    """seg1 only tells presence; the shape map draws the mask."""
    truth = np.zeros((3, 4, 4), bool)
    truth[0, :2] = True  # 8 px
    truth[2, :, :1] = True  # 4 px
    seg1 = np.zeros((3, 4, 4), np.uint8)
    seg1[0, 0, 0] = 200  # present, but a poor shape
    seg1[2] = 0  # absent: the truth in image 2 is missed either way
    shape = np.zeros((3, 4, 4), np.uint8)
    shape[0, :2] = 150  # the exact truth above level 149
    shape[0, 3, 3] = 100
    shape[1] = 180  # image 1 has an empty truth: seg1 says absent, so this never shows
    fit = fit_class(counts(seg1, truth), counts(shape, truth), None, (0,))
    assert fit.rule == ClassRule(0, 0) and fit.shape_level == 100
    assert fit.dice.tolist() == [1.0, 1.0, 0.0] and fit.present.tolist() == [True, False, False]
    assert fit.plain.tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("two_stage", [False, True])
@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gate_equals_postprocess_with_scores(seed: int, rounded: bool, two_stage: bool) -> None:
    seg1, seg2, truth, score = random_case(seed)
    if rounded:
        score = np.round(score, 2)  # scores on the gate grid: emptied at score == threshold
    shape = seg2 if two_stage else None
    c1, c2 = counts(seg1, truth), None if shape is None else counts(shape, truth)
    fit = fit_class(c1, c2, score, MIN_AREAS)
    expected, present = applied(fit, seg1, truth, shape=shape, score=score)
    np.testing.assert_allclose(fit.dice, expected, rtol=0, atol=1e-12)
    assert fit.present.tolist() == present.tolist()
    # the gate: first threshold maximising the mean Dice of the ungated fit once maps with score <= t are emptied
    plain = fit_class(c1, c2, None, MIN_AREAS)
    empty = ~truth.reshape(len(truth), -1).any(1)
    swept = np.array([np.where(score <= t, empty, plain.dice).mean() for t in GATES])
    gate = fit.rule.gate_threshold
    assert gate is not None  # these scores flag image 2's false full mask, so a gate helps
    assert gate == GATES[first_best(swept)[0]] and (score > gate).any()
    assert not rounded or (score == gate).any()
    kept = score > gate
    rule, best_kept = seg1_rule(seg1[kept], truth[kept], MIN_AREAS)  # refitted on the maps the gate keeps
    assert (fit.rule.level, fit.rule.min_area) == (rule.level, rule.min_area)
    if two_stage:
        combined = shape_grid(seg1[kept], seg2[kept], truth[kept], rule)
        assert fit.shape_level == first_best(combined)[0]
    else:  # the refit rule is the best on the kept maps, so the gate can only help
        assert fit.dice[kept].mean() == pytest.approx(best_kept, abs=1e-12)
        assert fit.dice.mean() > plain.dice.mean()


def _gate_refit_case() -> tuple[np.ndarray, ...]:
    seg1 = np.array(
        [
            [[0, 50, 200], [255, 200, 50]],
            [[50, 0, 50], [100, 0, 50]],
            [[200, 100, 255], [200, 100, 200]],
            [[150, 200, 150], [0, 0, 0]],
        ],
        np.uint8,
    )
    shape = np.array(
        [
            [[150, 255, 0], [100, 100, 150]],
            [[100, 150, 200], [0, 50, 200]],
            [[200, 255, 100], [50, 100, 150]],
            [[255, 0, 150], [50, 100, 200]],
        ],
        np.uint8,
    )
    truth = np.array(
        [[[0, 0, 0], [0, 0, 0]], [[0, 1, 0], [0, 0, 0]], [[0, 1, 0], [0, 1, 1]], [[0, 1, 0], [0, 0, 1]]], bool
    )
    return seg1, shape, truth, np.array([0.5, 0.9, 0.5, 0.9])


def test_two_stage_gate_never_worse_than_no_gate() -> None:
    """Without scores: rule (0, 0), shape level 100, mean 0.392. The gate 0.5 with that rule gives
    0.475; the greedy refit on the kept maps (seg1 level 150, shape level 150) would give 0.375, so
    the fit keeps the rule it had, gated."""
    seg1, shape, truth, score = _gate_refit_case()
    c1, c2 = counts(seg1, truth), counts(shape, truth)
    plain = fit_class(c1, c2, None, (0,))
    gated = fit_class(c1, c2, score, (0,))
    np.testing.assert_allclose(gated.dice, applied(gated, seg1, truth, shape=shape, score=score)[0])  # honest Dice
    assert gated.dice.mean() >= plain.dice.mean()


def test_component_rule_known_answer() -> None:
    """A speck beside a true blob: min_component 3 at component level 100 removes it."""
    probs = np.zeros((1, 6, 8), np.uint8)
    probs[0, :3, :3] = 200
    probs[0, 5, 7] = 200
    truth = probs > 0
    truth[0, 5, 7] = False
    fit = fit_class(counts(probs, truth, min_components=(0, 3), component_levels=(100, 150)), None, None, (0,))
    assert fit.rule == ClassRule(100, 0, 3) and fit.dice.tolist() == [1.0]
    assert fit.plain == pytest.approx([18 / 19])  # thresholded only: the speck stays


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_component_rule_equals_apply_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = ndimage.uniform_filter(rng.random((10, 6, 8)), size=(1, 3, 3))
    probs = ((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)
    truth = ndimage.uniform_filter(rng.random((10, 6, 8)), size=(1, 3, 3)) > 0.5
    probs[0], truth[0] = 0, False
    probs[1, 2, 2] = 255  # a lone speck
    c = counts(probs, truth, min_components=(0, 3), component_levels=(100, 150))
    for score in (None, np.round(rng.random(10), 2)):
        fit = fit_class(c, None, score, (0, 5))
        expected, present = applied(fit, probs, truth, score=score)
        np.testing.assert_allclose(fit.dice, expected, rtol=0, atol=1e-12)
        assert fit.present.tolist() == present.tolist()
        np.testing.assert_allclose(fit.plain, [dice(p > fit.rule.level, t) for p, t in zip(probs, truth)], atol=1e-12)


def at_least_one_case() -> tuple[np.ndarray, np.ndarray]:
    """3 images x 4 classes of 6x8. Image 2 ends with no mask: its only prediction (class 1, 3 px
    inside a 4 px truth) falls below the min_area 4 that the 3 px false specks of image 1 call for."""
    probs, truth = np.zeros((3, 4, 6, 8), np.uint8), np.zeros((3, 4, 6, 8), bool)
    for k in range(3):  # classes 0..2: a true 12 px blob in image 0
        probs[0, k, :3, :4], truth[0, k, :3, :4] = 200, True
    probs[1, 0, 5, 5:], probs[1, 1, 5, 5:] = 200, 200  # false specks
    probs[1, 2, 3:, 4:], truth[1, 2, 3:, 4:] = 200, True  # image 1 keeps class 2
    probs[2, 1, 3, :3], truth[2, 1, 3, :4] = 200, True
    return probs, truth


def test_at_least_one_crafted() -> None:
    probs, truth = at_least_one_case()
    fits = [fit_class(counts(probs[:, k], truth[:, k]), None, None, (0, 4)) for k in range(4)]
    assert [f.rule.min_area for f in fits[:3]] == [4, 4, 0]
    present = np.stack([f.present for f in fits], 1)
    assert present.any(1).tolist() == [True, True, False]
    classifier_scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.2, 0.3, 0.9, 0.1], [0.2, 0.7, 0.1, 0.3]])
    fallback = np.stack([top_pixel(counts(probs[:, k], truth[:, k])) for k in range(4)], 1)
    # fits without gates: scores only pick the class kept; postprocess falls back to the max pixel
    for scores, given in ((classifier_scores, classifier_scores), (fallback, None)):
        got = at_least_one(fits, scores)
        for i in range(3):
            masks = postprocess(
                probs[i], [f.rule for f in fits], None if given is None else given[i], at_least_one=True
            )
            np.testing.assert_allclose(got[i], [dice(m, t) for m, t in zip(masks, truth[i])], atol=1e-12)
        assert got[2].tolist() == [1.0, pytest.approx(6 / 7), 1.0, 1.0]  # class 1 kept, thresholded only
        assert np.array_equal(got[:2], np.stack([f.dice for f in fits], 1)[:2])  # others unchanged


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_least_one_two_stage_with_gates(seed: int) -> None:
    """Random two-stage fits with gates over 4 classes: equal to postprocess(..., at_least_one=True)."""
    cases = [random_case(10 * seed + k, n=10) for k in range(4)]
    seg1, seg2, truth, score = (np.stack(parts, 1) for parts in zip(*cases))  # (N, C, ...)
    score[5] = np.minimum(score[5], 0.01)  # image 5: every class gated off
    fits = [
        fit_class(counts(seg1[:, k], truth[:, k]), counts(seg2[:, k], truth[:, k]), score[:, k], MIN_AREAS)
        for k in range(4)
    ]
    got = at_least_one(fits, score)
    rules, levels = [f.rule for f in fits], [f.shape_level for f in fits]
    empty_images = 0
    for i in range(len(seg1)):
        masks = postprocess(seg1[i], rules, score[i], shape=seg2[i], shape_levels=levels)
        empty_images += not masks.any()
        masks = postprocess(seg1[i], rules, score[i], at_least_one=True, shape=seg2[i], shape_levels=levels)
        np.testing.assert_allclose(got[i], [dice(m, t) for m, t in zip(masks, truth[i])], rtol=0, atol=1e-12)
    assert empty_images >= 1


def test_top_pixel_and_scores_of() -> None:
    probs = np.zeros((4, 2, 3), np.uint8)
    probs[1, 0, 1] = 200
    probs[2] = 255
    probs[3] = [[3, 17, 9], [1, 0, 16]]
    c = counts(probs, np.zeros(probs.shape, bool))
    np.testing.assert_allclose(top_pixel(c), [0, 200 / 255, 1, 17 / 255])
    classifier_probs = np.array([0.1, 0.2, 0.3, 0.4])
    top2 = topk_from_histograms(c.hist, 2)
    np.testing.assert_allclose(top2, [0, 100 / 255, 1, 33 / 2 / 255])
    assert np.array_equal(scores_of("classifier", c, classifier_probs, 2), classifier_probs)
    np.testing.assert_allclose(scores_of("topk", c, None, 2), top2)
    np.testing.assert_allclose(scores_of("mean", c, classifier_probs, 2), (classifier_probs + top2) / 2)
