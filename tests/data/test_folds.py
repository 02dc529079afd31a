import numpy as np
import pandas as pd
import pytest

from cloudcli.data.folds import make_folds, read_metadata, strata, strata_balance
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


def test_metadata_groups_are_balanced_across_folds() -> None:
    """6 locations of 25 images each, one location far cloudier: every fold gets 5 +- 1 of each."""
    rng = np.random.default_rng(3)
    locations = np.repeat(["a", "b", "c", "d", "e", "f"], 25)
    present = rng.random((150, 1)) < np.where(locations == "a", 0.95, 0.3)[:, None]
    groups = pd.DataFrame({"location": locations})
    folds = make_folds(present, 5, seed=0, stratified=groups)
    table = pd.crosstab(folds, locations)
    assert table.to_numpy().min() >= 4 and table.to_numpy().max() <= 6, table
    gaps = strata_balance(groups, folds)
    assert set(gaps) == {"location"} and gaps["location"] <= 0.05  # share 1/6, give or take an image
    plain = make_folds(present, 5, seed=0)  # without the groups nothing keeps the locations apart...
    assert pd.crosstab(plain, locations).to_numpy().max() >= pd.crosstab(folds, locations).to_numpy().max()


def test_strata_known_answers(tmp_path) -> None:
    path = tmp_path / "meta.csv"
    path.write_text(
        "chip_id,location,datetime,elevation\n"
        "x,Lagos,2019-03-01T10:00:00,10\ny,Lagos,2019-07-09T12:00:00,20\nz,Andes,2020-03-30T09:00:00,30\n"
    )
    meta = read_metadata(path, ("z", "x", "y"))
    assert list(meta.index) == ["z", "x", "y"]  # in the order of the training images
    areas = np.array([[0.0], [0.1], [0.5]])
    table = strata(("location", "month", "coverage", "elevation"), meta, areas, bins=2, where=str(path))
    assert table["location"].tolist() == ["Andes", "Lagos", "Lagos"]
    assert table["month"].tolist() == [3, 3, 7]
    assert table["coverage"].tolist() == [0, 1, 2]  # empty, then the quantile bins of the non-empty
    assert table["elevation"].tolist() == [1, 0, 0]  # 30, 10, 20: more values than bins, cut at the median


def test_metadata_errors_name_the_file_and_column(tmp_path) -> None:
    path = tmp_path / "meta.csv"
    path.write_text("chip_id,location\nx,Lagos\nx,Andes\n")
    with pytest.raises(DataError, match=r"meta\.csv: image x has more than one row"):
        read_metadata(path, ("x",))
    path.write_text("chip_id,location\nx,Lagos\n")
    with pytest.raises(DataError, match=r"meta\.csv: no row for 1 training images, e\.g\. y"):
        read_metadata(path, ("x", "y"))
    meta = read_metadata(path, ("x",))
    with pytest.raises(DataError, match=r"no column 'site' in .*meta\.csv \(columns: location"):
        strata(("site",), meta, np.zeros((1, 1)), 2, str(path))
    with pytest.raises(DataError, match="month needs a month or datetime column"):
        strata(("month",), meta, np.zeros((1, 1)), 2, str(path))
    with pytest.raises(DataError, match=r"needs data\.metadata"):
        strata(("location",), None, np.zeros((1, 1)), 2, "")
    with pytest.raises(DataError, match="metadata file not found"):
        read_metadata(tmp_path / "none.csv", ("x",))


def test_one_class_datasets_split_stratified() -> None:
    present = np.random.default_rng(1).random((100, 1)) < 0.3  # chips: cloud or not
    folds = make_folds(present, 5, seed=0)
    assert np.bincount(folds).tolist() == [20] * 5
    shares = [present[folds == k].mean() for k in range(5)]
    assert max(shares) - min(shares) <= 0.05 + 1e-9  # 30% +- one image of 20 in every fold


def test_coverage_of_equal_non_empty_images_is_one_bin() -> None:
    table = strata(("coverage",), None, np.array([[0.0], [1.0], [1.0]]), 4, "")
    assert table["coverage"].tolist() == [0, 1, 1]
