"""Kaggle "Understanding Clouds" files: train.csv, sample_submission.csv and the JPEG folders.

Long view: one row per (image, class) label: `image_id, cls, rle, line` (line = CSV line number).
Wide view: one row per image, one RLE column per class in `classes` order.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli.data.images import imread
from cloudcli.errors import DataError
from cloudcli.names import image_id_problem
from cloudcli.rle import RleError, parse

HEADER = ["Image_Label", "EncodedPixels"]
TRAIN_CSV, SUBMISSION_CSV, TEST_TRUTH_CSV = "train.csv", "sample_submission.csv", "test_truth.csv"
RAW_CSVS = (TRAIN_CSV, SUBMISSION_CSV, TEST_TRUTH_CSV)
IMAGE_DIRS = {"train": "train_images", "test": "test_images"}


def read_labels(path: str | Path, raw_size: tuple[int, int] | None, classes: tuple[str, ...]) -> pd.DataFrame:
    """Read and validate a label CSV into the long view (one row per image and class of `classes`);
    check RLEs when `raw_size` is given."""
    path = Path(path)
    frame = _read_csv(path)
    if list(frame.columns) != HEADER:
        got = _one_line(",".join(map(str, frame.columns)))
        raise DataError(f"{path}: expected header {','.join(HEADER)!r}, got {got!r}")
    if frame.empty:
        raise DataError(f"{path}: no label rows")
    split = frame["Image_Label"].str.rsplit("_", n=1, expand=True).reindex(columns=[0, 1])
    long = pd.DataFrame(
        {
            "image_id": split[0],
            "cls": split[1],
            "rle": frame["EncodedPixels"].str.strip(),
            "line": frame.index,
        }
    )
    unknown = long[~long["cls"].isin(classes)]
    if len(unknown):
        row = unknown.iloc[0]
        label = frame["Image_Label"].loc[row.line]
        raise DataError(
            f"{path} line {row.line}: unknown class in {label!r}; expected '<image_id>_<Class>' "
            f"with Class one of {', '.join(classes)}"
        )
    _check_ids(path, long)
    _check_four_rows(path, long, classes)
    if raw_size is not None:
        for row in long[long["rle"] != ""].itertuples():
            try:
                parse(row.rle, raw_size)
            except RleError as e:
                raise DataError(f"{path} line {row.line} ({row.image_id}_{row.cls}): malformed RLE: {e}") from None
    return long


def _read_csv(path: Path) -> pd.DataFrame:
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a Kaggle-format CSV ({','.join(HEADER)})")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except FileNotFoundError:
        hint = "; is the raw data folder (data.raw in params.yaml) right?" if path.name in RAW_CSVS else ""
        raise DataError(f"{path}: file not found{hint}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; expected the header {','.join(HEADER)!r} and a row per label") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV ({_one_line(e)})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the extra first field as an index
        if len(frame.columns) < len(HEADER):  # a short header: the caller's header check names it
            return frame.reset_index(drop=True)
        raise DataError(f"{path} line 2: more fields than the header's {len(frame.columns)}; remove the extra commas")
    frame.index = np.arange(len(frame)) + 2  # CSV line numbers: line 1 is the header
    return frame[(frame != "").any(axis=1)]  # drop blank lines, keep the numbering


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 120 else text[:117] + "..."


def _check_ids(path: Path, long: pd.DataFrame) -> None:
    """Every image id a plain file name: nothing is read from outside the image folders."""
    problems = long["image_id"].map(image_id_problem)
    bad = problems[problems.notna()]
    if len(bad):
        row = long.loc[bad.index[0]]
        raise DataError(
            f"{path} line {row.line}: image id {row.image_id!r} {bad.iloc[0]}; fix or delete the row "
            f"({len(bad)} row(s) affected)"
        )


def _check_four_rows(path: Path, long: pd.DataFrame, classes: tuple[str, ...]) -> None:
    dup = long[long.duplicated(["image_id", "cls"])]
    if len(dup):
        row = dup.iloc[0]
        raise DataError(f"{path} line {row.line}: duplicate label {row.image_id}_{row.cls}")
    counts = long.groupby("image_id", sort=False)["cls"].agg(set)
    incomplete = counts[counts.map(len) != len(classes)]
    if len(incomplete):
        image_id, present = incomplete.index[0], incomplete.iloc[0]
        missing = [c for c in classes if c not in present]
        raise DataError(
            f"{path}: image {image_id} has no row for {', '.join(missing)}; "
            f"every image needs one row per class ({len(incomplete)} image(s) affected)"
        )


def to_wide(long: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """One row per image (first-appearance order), one RLE column per class in `classes` order."""
    order = pd.unique(long["image_id"])
    return long.pivot(index="image_id", columns="cls", values="rle").reindex(index=order, columns=list(classes))


def presence(wide: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray:
    """(N, C) bool: which classes have a non-empty mask, per image of the wide view."""
    return (wide[list(classes)] != "").to_numpy()


def image_paths(raw: str | Path, split: str, image_ids: list[str]) -> list[Path]:
    """Paths of the JPEGs of `split` ('train' or 'test'); fails listing the first missing file."""
    folder = Path(raw) / IMAGE_DIRS[split]
    paths = [folder / image_id for image_id in image_ids]
    missing = [p for p in paths if not p.is_file()]
    if missing and missing[0].exists():
        raise DataError(f"{missing[0]}: is a folder or special file, not an image; replace it with the image")
    if missing:
        raise DataError(
            f"{missing[0]}: image not found ({len(missing)} of {len(paths)} {split} images missing); "
            f"check that {folder} holds every image listed in the CSV"
        )
    return paths


def read_image(path: str | Path, raw_size: tuple[int, int]) -> np.ndarray:
    """Read a JPEG as (H, W, 3) uint8 RGB; fail naming the file if unreadable or of the wrong size."""
    image = imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot read image (missing, empty or not a valid JPEG)")
    if image.shape[:2] != tuple(raw_size):
        h, w = image.shape[:2]
        raise DataError(
            f"{path}: image is {h}x{w} (HxW), expected {raw_size[0]}x{raw_size[1]} (data.raw_size in params.yaml)"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
