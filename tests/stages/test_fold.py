"""`cloudcli fold` on the demo chips with fold.group: location, end to end in this process."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import cloudcli_here

from cloudcli.config.presets import preset_params


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    """40 demo chips of 32x32 in data_chips/ (six locations at most, in train_metadata.csv)."""
    root = tmp_path_factory.mktemp("fold_chips")
    cloudcli_here("demo-data", "data_chips", "--kind", "chips", "--n-train", "40", "--n-test", "2", "--height",
                  "32", "--width", "32", "--workers", "1", cwd=root, check=True)  # fmt: skip
    return root


def write_params(folder: Path, **fold) -> None:
    params = preset_params("chips")
    params["data"].update(raw_size=[32, 32], score_size=[32, 32])
    params["fold"].update({"n_splits": 3, "stratify": [], **fold})  # the preset stratifies by location
    params["cv"].update(folds=[0, 1, 2])
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_no_location_in_two_folds(chips: Path) -> None:
    write_params(chips, group="location", stratify=["coverage"])
    result = cloudcli_here("fold", cwd=chips, check=True)
    meta = pd.read_csv(chips / "data_chips/train_metadata.csv", dtype=str)
    folds = pd.read_csv(chips / "artifacts/folds.csv", dtype={"image_id": str}).merge(
        meta, left_on="image_id", right_on="chip_id"
    )
    assert len(folds) == 40 and folds["fold"].nunique() == 3
    assert (folds.groupby("location")["fold"].nunique() == 1).all()
    per_fold = folds.groupby("fold")["location"].nunique()
    report = json.loads((chips / "metrics/folds.json").read_text())
    assert report["group"] == {
        "column": "location",
        "groups": meta["location"].nunique(),
        "groups_per_fold": {str(k): int(v) for k, v in per_fold.items()},
        "groups_in_two_folds": 0,
    }
    assert set(report["max_stratum_share_gap"]) == {"coverage"}
    assert sum(report["images_per_fold"].values()) == 40
    assert f"{meta['location'].nunique()} location groups each in one fold" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("fold", "needles"),
    [
        ({"group": "site"}, ["fold.group: no column 'site'", "train_metadata.csv", "columns: location, datetime"]),
        (
            {"group": "location", "n_splits": 7},
            ["distinct 'location' values", "fold.n_splits = 7", "lower fold.n_splits"],
        ),
        ({"group": "location", "stratify": ["location"]}, ["fold.stratify lists 'location', which is fold.group"]),
    ],
)
def test_errors_name_the_parameter_and_write_nothing(chips: Path, tmp_path: Path, fold: dict, needles: list) -> None:
    (tmp_path / "data_chips").symlink_to(chips / "data_chips")
    write_params(tmp_path, **fold)
    result = cloudcli_here("fold", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert not (tmp_path / "artifacts").exists() or not list((tmp_path / "artifacts").iterdir())
