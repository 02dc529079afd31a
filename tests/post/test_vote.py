import numpy as np
import pytest

from cloudcli.post.vote import (
    ON,
    class_score,
    confident_by_classifier,
    confident_share,
    default_min_votes,
    majority,
    mean,
    topk,
    topk_from_histograms,
    vote,
)

# three members, one row of six pixels; member m is on where p > LEVELS3[m]
MEMBERS3 = np.array(
    [
        [[101, 100, 0, 255, 150, 201]],
        [[51, 50, 60, 0, 255, 201]],
        [[201, 200, 0, 255, 0, 201]],
    ],
    dtype=np.uint8,
)
LEVELS3 = [100, 50, 200]  # pixel 1 sits exactly at every member's level: off for all
# on: [1, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 1], [1, 0, 0, 1, 0, 1] -> votes [3, 0, 1, 2, 2, 3]


def test_majority_default_is_more_than_half() -> None:
    out = majority(MEMBERS3, LEVELS3)
    assert out.dtype == np.uint8 and out.shape == (1, 6)
    assert out.tolist() == [[255, 0, 0, 255, 255, 255]]
    assert ON == 255 and set(np.unique(out).tolist()) <= {0, 255}
    assert [default_min_votes(m) for m in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_majority_union_and_intersection() -> None:
    assert majority(MEMBERS3, LEVELS3, min_votes=1).tolist() == [[255, 0, 255, 255, 255, 255]]
    assert majority(MEMBERS3, LEVELS3, min_votes=2).tolist() == [[255, 0, 0, 255, 255, 255]]
    assert majority(MEMBERS3, LEVELS3, min_votes=3).tolist() == [[255, 0, 0, 0, 0, 255]]


def test_majority_ties_at_the_level_are_off() -> None:
    probs = np.full((3, 2, 2), 127, np.uint8)
    assert not majority(probs, [127, 127, 127], min_votes=1).any()
    assert majority(probs, [126, 126, 126], min_votes=3).tolist() == [[255, 255], [255, 255]]


def test_majority_two_and_four_members() -> None:
    two = np.array([[[200, 200, 0]], [[200, 0, 0]]], np.uint8)
    assert majority(two, [100, 100]).tolist() == [[255, 0, 0]]  # default 2 of 2
    four = np.array([[[200, 200, 200, 0]], [[200, 200, 0, 0]], [[200, 200, 0, 0]], [[200, 0, 0, 0]]], np.uint8)
    # votes per pixel: 4, 3, 1, 0; default needs 3 of 4
    assert majority(four, [100] * 4).tolist() == [[255, 255, 0, 0]]
    assert majority(four, [100] * 4, min_votes=1).tolist() == [[255, 255, 255, 0]]


def test_majority_keeps_extra_axes() -> None:
    """(M, N, H, W) members: levels apply along the member axis only."""
    probs = np.stack([MEMBERS3, MEMBERS3[::-1]], axis=1)  # (3, 2, 1, 6)
    out = majority(probs, LEVELS3)
    assert out.shape == (2, 1, 6)
    assert out[0].tolist() == [[255, 0, 0, 255, 255, 255]]
    # second image: member maps reversed, so member 0 holds MEMBERS3[2] at level 100, etc.
    on = probs[:, 1] > np.array(LEVELS3).reshape(3, 1, 1)
    assert out[1].tolist() == np.where(on.sum(0) >= 2, 255, 0).tolist()


@pytest.mark.parametrize("min_votes", [0, 4, -1])
def test_majority_bad_min_votes(min_votes: int) -> None:
    with pytest.raises(ValueError, match="min_votes"):
        majority(MEMBERS3, LEVELS3, min_votes=min_votes)


def test_mean_equal_weights_rounds_half_up() -> None:
    probs = np.array([[[0, 100, 255, 10, 7]], [[255, 101, 255, 20, 8]]], np.uint8)
    out = mean(probs)
    assert out.dtype == np.uint8
    assert out.tolist() == [[128, 101, 255, 15, 8]]  # 127.5 -> 128, 100.5 -> 101, 7.5 -> 8


def test_mean_weights() -> None:
    probs = np.array([[[0, 100, 10, 255]], [[255, 104, 12, 255]]], np.uint8)
    # 3/4 and 1/4: 63.75 -> 64, 101, 10.5 -> 11, 255
    assert mean(probs, [3, 1]).tolist() == [[64, 101, 11, 255]]
    assert mean(probs, [0.75, 0.25]).tolist() == [[64, 101, 11, 255]]  # only the ratios count
    assert mean(probs, [1, 2]).tolist() == [[170, 103, 11, 255]]  # 170, 102.67, 11.33
    assert mean(probs, [1, 0]).tolist() == probs[0].tolist()
    three = np.array([[[0, 1]], [[0, 1]], [[1, 2]]], np.uint8)
    assert mean(three).tolist() == [[0, 1]]  # 1/3 -> 0, 4/3 -> 1


@pytest.mark.parametrize("weights", [[1.0], [1, 1, 1], [0, 0], [1, -1], []])
def test_mean_bad_weights(weights: list[float]) -> None:
    probs = np.zeros((2, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="weights"):
        mean(probs, weights)


def test_vote_dispatch() -> None:
    assert np.array_equal(vote(MEMBERS3, "majority", levels=LEVELS3), majority(MEMBERS3, LEVELS3))
    assert np.array_equal(vote(MEMBERS3, "majority", levels=LEVELS3, min_votes=3), majority(MEMBERS3, LEVELS3, 3))
    assert np.array_equal(vote(MEMBERS3, "mean"), mean(MEMBERS3))
    assert np.array_equal(vote(MEMBERS3, "mean", weights=[1, 2, 3]), mean(MEMBERS3, [1, 2, 3]))
    with pytest.raises(ValueError, match="level"):
        vote(MEMBERS3, "majority")
    with pytest.raises(ValueError, match="unknown vote"):
        vote(MEMBERS3, "median", levels=LEVELS3)


def topk_brute(probs: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest levels of each map / 255, with np.sort."""
    flat = np.sort(probs.reshape(len(probs), -1).astype(np.float64), axis=1)[:, ::-1]
    return flat[:, :k].mean(1) / 255


def topk_maps(seed: int) -> np.ndarray:
    """(10, 6, 8) maps: random, few distinct levels (ties at the k-th value), all zeros, all 255."""
    rng = np.random.default_rng(seed)
    probs = rng.integers(0, 256, (10, 6, 8), dtype=np.uint8)
    probs[3:6] = rng.choice(np.array([0, 3, 128, 200, 255], np.uint8), (3, 6, 8))
    probs[6] = 0
    probs[7] = 255
    probs[8] = 0
    probs[8, 2, 3] = 7  # a single non-zero pixel
    return probs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 5, 17, 47, 48, 49, 1000])
def test_topk_equals_brute_force(seed: int, k: int) -> None:
    probs = topk_maps(seed)
    hist = np.stack([np.bincount(p.ravel(), minlength=256) for p in probs])
    expected = topk_brute(probs, k)
    np.testing.assert_allclose(topk_from_histograms(hist, k), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(topk(probs, k), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(topk(probs.reshape(2, 5, 6, 8), k), expected.reshape(2, 5), rtol=0, atol=1e-12)


def test_topk_known_answers() -> None:
    probs = np.array([[[0, 10], [255, 10]], [[0, 0], [0, 0]]], np.uint8)
    hist = np.stack([np.bincount(p.ravel(), minlength=256) for p in probs])
    assert topk_from_histograms(hist, 1).tolist() == [1.0, 0.0]
    np.testing.assert_allclose(topk_from_histograms(hist, 2), [265 / 2 / 255, 0.0])
    np.testing.assert_allclose(topk_from_histograms(hist, 3), [275 / 3 / 255, 0.0])
    np.testing.assert_allclose(topk_from_histograms(hist, 10), [275 / 4 / 255, 0.0])  # k > pixels: all pixels
    np.testing.assert_allclose(topk(probs, 10), [275 / 4 / 255, 0.0])


def test_class_score() -> None:
    classifier_probs, topk_scores = np.array([0.2, 0.9, 0.5]), np.array([0.4, 0.1, 0.5])
    assert np.array_equal(class_score("classifier", classifier_probs, topk_scores), classifier_probs)
    assert np.array_equal(class_score("classifier", classifier_probs, None), classifier_probs)
    assert np.array_equal(class_score("topk", None, topk_scores), topk_scores)
    np.testing.assert_allclose(class_score("mean", classifier_probs, topk_scores), [0.3, 0.5, 0.5])
    with pytest.raises(ValueError, match="unknown class score"):
        class_score("max", classifier_probs, topk_scores)


def test_confident_by_classifier_strict() -> None:
    classifier_probs = np.array(
        [
            [0.3, 0.9],  # 0.3 is not < 0.3
            [0.29, 0.81],
            [0.1, 0.8],  # 0.8 is not > 0.8
            [0.1, 0.5],
            [0.0, 1.0],
            [0.95, 0.9],
        ]
    )
    assert confident_by_classifier(classifier_probs, low=0.3, high=0.8).tolist() == [
        False,
        True,
        False,
        False,
        True,
        True,
    ]


def test_confident_share_known_answer() -> None:
    probs = np.zeros((3, 2, 1, 4), np.uint8)
    # low 0.2 -> level 51, high 0.8 -> level 204; both bounds are strict
    probs[0] = np.array([[[0, 50, 51, 204]], [[205, 255, 100, 128]]])  # 0, 50, 205, 255 sure: 4 of 8
    probs[1] = 0  # all sure
    probs[2] = 128  # none sure
    np.testing.assert_allclose(confident_share(probs, low=0.2, high=0.8), [0.5, 1.0, 0.0])
    probs[2, 1, 0, 3] = 76  # 76/255 = 0.298 < 0.3
    assert confident_share(probs, low=0.3, high=0.8)[2] == 1 / 8
