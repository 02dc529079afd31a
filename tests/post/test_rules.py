import numpy as np
import pytest

from cloudcli.post.rules import ClassRule, apply_rule, drop_small_components, level_of, postprocess


def test_level_of_float_thresholds() -> None:
    assert level_of(0.5) == 127 and level_of(0.0) == 0 and level_of(1.0) == 254
    probs = np.array([127, 128, 129], dtype=np.uint8)  # 0.498, 0.502, 0.506
    assert (probs > level_of(0.5)).tolist() == [False, True, True]
    for prob in (0.3, 0.45, 0.5, 0.7):  # stored levels round(prob * 255) just above / below the threshold
        above, below = round((prob + 0.002) * 255), round((prob - 0.002) * 255)
        assert above > level_of(prob) >= below


def test_threshold_and_min_area() -> None:
    probs = np.array([[200, 200, 10], [10, 130, 10]], dtype=np.uint8)
    assert apply_rule(probs, ClassRule(level=127)).tolist() == [[1, 1, 0], [0, 1, 0]]
    assert apply_rule(probs, ClassRule(level=150)).tolist() == [[1, 1, 0], [0, 0, 0]]
    assert not apply_rule(probs, ClassRule(level=127, min_area=4)).any()  # 3 pixels < 4: emptied
    assert apply_rule(probs, ClassRule(level=127, min_area=3)).sum() == 3


def test_small_components_are_dropped() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[0:3, 0:3] = 1  # 9 px
    mask[5, 5] = 1  # 1 px
    mask[4, 4] = 1  # diagonal neighbour: 8-connected with (5, 5) -> a 2 px component
    assert drop_small_components(mask, 3).sum() == 9
    assert drop_small_components(mask, 2).sum() == 11
    assert drop_small_components(mask, 10).sum() == 0


def test_classifier_gate() -> None:
    probs = np.full((2, 2), 255, np.uint8)
    assert not apply_rule(probs, ClassRule(gate_threshold=0.4), score=0.4).any()  # <= threshold: gated
    assert apply_rule(probs, ClassRule(gate_threshold=0.4), score=0.41).all()


@pytest.mark.parametrize(("classifier_probs", "kept"), [(None, 2), (np.array([0.9, 0.1, 0.2, 0.3]), 0)])
def test_at_least_one_class(classifier_probs, kept: int) -> None:
    probs = np.zeros((4, 2, 2), np.uint8)
    probs[2] = 120  # below every level 127
    probs[0, 0, 0] = 110  # one pixel above class 0's level
    rules = [ClassRule(level=100 if k == kept else 127, min_area=10) for k in range(4)]
    out = postprocess(probs, rules, classifier_probs, at_least_one=True)
    assert out.sum(axis=(1, 2)).nonzero()[0].tolist() == [kept]  # classifier's choice, else the max pixel
    assert postprocess(probs, rules, classifier_probs).sum() == 0  # without the rule everything is empty
