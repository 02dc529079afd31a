import numpy as np
import pytest

from cloudcli import CLASSES
from cloudcli.metrics import dice, dice_from_counts, kaggle_dice

E = np.zeros((2, 2), np.uint8)
A = np.array([[1, 1], [0, 0]], np.uint8)  # 2 px
B = np.array([[1, 0], [1, 0]], np.uint8)  # 2 px, 1 shared with A
C = np.array([[1, 1], [1, 0]], np.uint8)  # 3 px, contains A

KNOWN = [
    (E, E, 1.0),  # both empty
    (A, E, 0.0),  # exactly one empty
    (E, A, 0.0),
    (A, A, 1.0),
    (A, B, 0.5),  # 2*1 / (2+2)
    (A, C, 0.8),  # 2*2 / (2+3)
    (B, C, 0.8),
]


@pytest.mark.parametrize(("pred", "truth", "expected"), KNOWN)
def test_dice_known_answers(pred: np.ndarray, truth: np.ndarray, expected: float) -> None:
    assert dice(pred, truth) == pytest.approx(expected)


def test_dice_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_dice_from_counts() -> None:
    np.testing.assert_allclose(
        dice_from_counts(np.array([0, 0, 1, 2]), np.array([0, 3, 2, 2]), np.array([0, 0, 2, 3])), [1.0, 0.0, 0.5, 0.8]
    )


def test_kaggle_dice_mean_and_breakdowns() -> None:
    # 2 images x 4 classes; row scores per class:
    #   image 0: Fish A/B=0.5, Flower E/E=1, Gravel A/E=0, Sugar A/C=0.8
    #   image 1: Fish E/E=1,  Flower A/A=1, Gravel E/A=0, Sugar E/E=1
    preds = np.array([[A, E, A, A], [E, A, E, E]])
    truths = np.array([[B, E, E, C], [E, A, A, E]])
    report = kaggle_dice(preds, truths, CLASSES)
    assert report.mean == pytest.approx((0.5 + 1 + 0 + 0.8 + 1 + 1 + 0 + 1) / 8)
    assert report.per_class == pytest.approx({"Fish": 0.75, "Flower": 1.0, "Gravel": 0.0, "Sugar": 0.9})
    assert report.empty == pytest.approx((1 + 0 + 1 + 1) / 4)  # truth empty: F0, G0, Fi1, S1
    assert report.non_empty == pytest.approx((0.5 + 0.8 + 1 + 0) / 4)
    assert report.n_rows == 8
    assert report.as_dict()["dice_Sugar"] == pytest.approx(0.9)


def test_kaggle_dice_matches_per_pair_loop() -> None:
    rng = np.random.default_rng(0)
    preds = (rng.random((70, 4, 9, 13)) < rng.random((70, 4, 1, 1)) * 0.3).astype(np.uint8)
    truths = (rng.random((70, 4, 9, 13)) < rng.random((70, 4, 1, 1)) * 0.3).astype(np.uint8)
    expected = np.mean([dice(p, t) for pi, ti in zip(preds, truths) for p, t in zip(pi, ti)])
    assert kaggle_dice(preds, truths, CLASSES).mean == pytest.approx(expected)


def test_kaggle_dice_empty_group_is_none() -> None:
    report = kaggle_dice(np.zeros((1, 4, 2, 2)), np.zeros((1, 4, 2, 2)), CLASSES)
    assert report.mean == 1.0 and report.non_empty is None and report.empty == 1.0


def test_kaggle_dice_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        kaggle_dice(np.zeros((4, 2, 2)), np.zeros((4, 2, 2)), CLASSES)
