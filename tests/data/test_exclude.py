"""data.exclude: the list of images to leave out, and what reads it downstream (the folds table's
`excluded` column): no training batch, no validation row, no OOF row, no score."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import write_cache

from cloudcli import CLASSES
from cloudcli.data.exclude import read_exclude
from cloudcli.data.folds import read_folds, read_split
from cloudcli.engine.loaders import split_indices
from cloudcli.errors import DataError
from cloudcli.stages import cv, infer

IDS = [f"{i:03d}.jpg" for i in range(30)]
FOLDS = np.arange(30) % 3
OUT = np.isin(np.arange(30), [1, 4, 5, 12, 20, 29])  # 1, 5 and 29 of fold 1 and 2; 4 and 12 of 1 and 0; 20 of 2


def folds_csv(path, ids, folds, excluded=None):
    table = pd.DataFrame({"image_id": ids, "fold": folds})
    if excluded is not None:
        table["excluded"] = excluded.astype(int)
    table.to_csv(path, index=False)
    return path


def test_the_list_skips_blank_lines_and_comments(tmp_path) -> None:
    path = tmp_path / "exclude.txt"
    path.write_text("# suspects of round 1\n\n001.jpg\n  004.jpg  # Fish shifted\n\n005.jpg\n012.jpg\n020.jpg\n029.jpg")
    assert np.array_equal(read_exclude(path, IDS), OUT)
    path.write_text("")
    assert not read_exclude(path, IDS).any()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("001.jpg\n\n999.jpg\n", "line 3: '999.jpg' is not a training image"),
        ("# x\n001.jpg\n002.jpg\n001.jpg # again\n", "line 4: '001.jpg' is listed again (first on line 2); delete one"),
    ],
)
def test_a_bad_line_is_named(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "exclude.txt"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_exclude(path, IDS)
    assert str(info.value).startswith(f"{path} {message}")


def test_a_missing_list_says_how_to_fix(tmp_path) -> None:
    with pytest.raises(DataError, match=r"exclude.txt \(data.exclude in params.yaml\): missing; .* data.exclude: null"):
        read_exclude(tmp_path / "exclude.txt", IDS)


def test_excluded_images_keep_their_fold_and_reach_no_training_nor_validation(tmp_path) -> None:
    marked = folds_csv(tmp_path / "marked.csv", IDS, FOLDS, OUT)
    kept = [i for i, out in zip(IDS, OUT) if not out]
    rest = folds_csv(tmp_path / "rest.csv", kept, FOLDS[~OUT])  # the same split of the other images alone
    assert np.array_equal(read_folds(marked, IDS), FOLDS)
    folds, excluded = read_split(marked, IDS)
    assert np.array_equal(folds, FOLDS) and np.array_equal(excluded, OUT)
    for fold in range(3):
        train, valid = split_indices(IDS, marked, fold)
        train_rest, valid_rest = split_indices(kept, rest, fold)
        assert [IDS[i] for i in train] == [kept[i] for i in train_rest]
        assert [IDS[i] for i in valid] == [kept[i] for i in valid_rest]
        assert not OUT[train].any() and not OUT[valid].any()
    no_column = folds_csv(tmp_path / "plain.csv", IDS, FOLDS)  # a table written without data.exclude
    assert not read_split(no_column, IDS)[1].any()


def test_excluded_images_get_no_oof_row(tmp_path) -> None:
    marked = folds_csv(tmp_path / "marked.csv", IDS, FOLDS, OUT)
    kept = [i for i, out in zip(IDS, OUT) if not out]
    rest = folds_csv(tmp_path / "rest.csv", kept, FOLDS[~OUT])
    config = SimpleNamespace(folds=(2, 0, 1))
    folds, rows, out = infer._oof_rows(SimpleNamespace(train=pd.DataFrame({"image_id": IDS})), marked, config)
    folds_rest, rows_rest, none = infer._oof_rows(SimpleNamespace(train=pd.DataFrame({"image_id": kept})), rest, config)
    assert np.array_equal(folds, FOLDS)  # every image keeps its fold
    assert [IDS[i] for i in rows] == [kept[i] for i in rows_rest]
    assert np.array_equal(folds[rows], folds_rest[rows_rest]) and not OUT[rows].any()
    assert out.tolist() == [1, 4, 5, 12, 20, 29] and none.size == 0  # predicted as unseen images, in cache order


def test_cv_scores_the_remaining_images_only(tmp_path) -> None:
    rng = np.random.default_rng(1)
    truth = (rng.random((30, 4, 4, 4)) < 0.1).astype(np.uint8)  # some masks empty, some not
    write_cache(tmp_path / "all", IDS, (), truth)
    kept = [i for i, out in zip(IDS, OUT) if not out]
    write_cache(tmp_path / "rest", kept, (), truth[~OUT])
    marked = folds_csv(tmp_path / "marked.csv", IDS, FOLDS, OUT)
    rest = folds_csv(tmp_path / "rest.csv", kept, FOLDS[~OUT])
    for folds in ((0, 1, 2), (1,)):
        got = cv.all_empty_dice(tmp_path / "all", marked, folds)
        assert got == cv.all_empty_dice(tmp_path / "rest", rest, folds)
        present = truth.any((2, 3))[~OUT & np.isin(FOLDS, folds)]
        assert got == pytest.approx((present == 0).mean(), abs=0) and present.shape[1] == len(CLASSES)
    assert got != cv.all_empty_dice(tmp_path / "all", folds_csv(tmp_path / "p.csv", IDS, FOLDS), (1,))


def test_a_fold_left_without_images_and_bad_marks_are_named(tmp_path) -> None:
    every_fold1 = folds_csv(tmp_path / "f.csv", IDS, FOLDS, FOLDS == 1)
    assert np.array_equal(split_indices(IDS, every_fold1, 0)[1], np.flatnonzero(FOLDS == 0))
    with pytest.raises(DataError, match=r"f.csv: every image of fold 1 is excluded \(data.exclude\)"):
        split_indices(IDS, every_fold1, 1)
    table = pd.read_csv(every_fold1).astype({"excluded": str})
    table.loc[3, "excluded"] = "yes"
    table.to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(DataError, match=r"g.csv line 5: excluded 'yes' is not 0 or 1; rerun `cloudcli fold`"):
        read_folds(tmp_path / "g.csv", IDS)
