import numpy as np
import pytest

from cloudcli.data.folds import make_folds
from cloudcli.errors import DataError


def presence(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, 4)) < [0.5, 0.43, 0.53, 0.68]


def test_every_image_in_exactly_one_fold_and_classes_balanced() -> None:
    present = presence(1000)
    folds = make_folds(present, 5, seed=42)
    assert folds.shape == (1000,) and set(folds) == set(range(5))  # complete, one fold each
    sizes = np.bincount(folds)
    assert sizes.min() >= 190 and sizes.max() <= 210
    for k in range(5):  # class shares per fold within 3 points of the overall share
        np.testing.assert_allclose(present[folds == k].mean(0), present.mean(0), atol=0.03)


def test_deterministic_for_a_seed() -> None:
    present = presence(300)
    np.testing.assert_array_equal(make_folds(present, 5, 1), make_folds(present, 5, 1))
    assert (make_folds(present, 5, 1) != make_folds(present, 5, 2)).any()


def test_more_folds_than_images_names_the_parameter() -> None:
    with pytest.raises(DataError, match=r"fold\.n_splits = 5 but there are only 3 images"):
        make_folds(presence(3), 5, seed=0)


def test_as_many_folds_as_images() -> None:
    assert sorted(make_folds(presence(4), 4, seed=0)) == [0, 1, 2, 3]
