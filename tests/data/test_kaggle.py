"""cloudcli.data.kaggle: label CSVs (long and wide views), image paths and JPEG reading."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cloudcli import CLASSES
from cloudcli.data.kaggle import image_paths, presence, read_image, read_labels, to_wide
from cloudcli.errors import DataError

SHAPE = (4, 6)  # (H, W) of the images the RLEs below refer to: 24 pixels


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "Image_Label,EncodedPixels") -> Path:
    path.write_text("\n".join([header, *(f"{label},{rle}" for label, rle in rows)]) + "\n")
    return path


def image_rows(image_id: str, rles: dict[str, str] | None = None, order: tuple[str, ...] = CLASSES) -> list:
    rles = rles or {}
    return [(f"{image_id}_{c}", rles.get(c, "")) for c in order]


def raises_naming(path: Path, *words: str):
    """pytest.raises(DataError) whose message names `path` and contains every word."""
    pattern = "".join(f"(?=.*{re.escape(w)})" for w in (str(path), *words))
    return pytest.raises(DataError, match=re.compile(pattern, re.S))


# ---------------------------------------------------------------------------------------- read_labels


def test_long_view_columns_and_line_numbers(tmp_path: Path) -> None:
    rows = image_rows("b.jpg", {"Fish": "1 2", "Sugar": " 5 3 "}) + image_rows("a.jpg", {"Gravel": "24 1"})
    long = read_labels(write_csv(tmp_path / "train.csv", rows), SHAPE, CLASSES)
    assert list(long.columns) == ["image_id", "cls", "rle", "line"]
    assert list(long["image_id"]) == ["b.jpg"] * 4 + ["a.jpg"] * 4
    assert list(long["cls"]) == list(CLASSES) * 2
    assert list(long["rle"]) == ["1 2", "", "", "5 3", "", "", "24 1", ""]  # stripped; '' = no mask
    assert list(long["line"]) == list(range(2, 10))  # line 1 is the header


def test_image_ids_may_contain_underscores(tmp_path: Path) -> None:
    long = read_labels(write_csv(tmp_path / "train.csv", image_rows("sat_01_b.jpg")), None, CLASSES)
    assert set(long["image_id"]) == {"sat_01_b.jpg"}
    assert list(long["cls"]) == list(CLASSES)


def test_na_like_values_stay_strings(tmp_path: Path) -> None:
    long = read_labels(write_csv(tmp_path / "train.csv", image_rows("NA")), None, CLASSES)
    assert list(long["image_id"]) == ["NA"] * 4
    assert list(long["rle"]) == [""] * 4


@pytest.mark.parametrize(
    ("rle", "words"),
    [
        ("1 2 3", ["odd"]),
        ("1 x", ["non-numeric", "'x'"]),
        ("20 6", ["beyond", "24 pixels"]),
        ("25 1", ["beyond"]),
        ("0 2", [">= 1"]),
        ("1 5 3 2", ["overlaps"]),
        ("10 2 1 2", ["sorted"]),
    ],
    ids=["odd", "non-numeric", "run-beyond", "start-beyond", "zero", "overlap", "unsorted"],
)
def test_malformed_rle_names_file_line_and_label(tmp_path: Path, rle: str, words: list[str]) -> None:
    rows = image_rows("a.jpg") + image_rows("b.jpg", {"Flower": rle})
    path = write_csv(tmp_path / "train.csv", rows)
    with raises_naming(path, "line 7", "b.jpg_Flower", "malformed RLE", *words):
        read_labels(path, SHAPE, CLASSES)


def test_rles_are_checked_only_with_a_raw_size(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", image_rows("a.jpg", {"Fish": "1 2 3"}))
    assert read_labels(path, None, CLASSES)["rle"].iloc[0] == "1 2 3"


def test_an_rle_fitting_exactly_is_valid(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", image_rows("a.jpg", {"Fish": "1 24", "Sugar": "1 1 3 2 24 1"}))
    assert len(read_labels(path, SHAPE, CLASSES)) == 4


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with raises_naming(path, "not found"):
        read_labels(path, None, CLASSES)


@pytest.mark.parametrize("header", ["Image_Label,Pixels", "ImageId,EncodedPixels", "Image_Label"])
def test_wrong_header(tmp_path: Path, header: str) -> None:
    path = write_csv(tmp_path / "train.csv", image_rows("a.jpg"), header=header)
    with raises_naming(path, "Image_Label,EncodedPixels", header):
        read_labels(path, None, CLASSES)


def test_header_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", [])
    with raises_naming(path, "no label rows"):
        read_labels(path, None, CLASSES)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("")
    with raises_naming(path):
        read_labels(path, None, CLASSES)


def test_not_text(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with raises_naming(path):
        read_labels(path, None, CLASSES)


def test_row_with_too_many_fields(tmp_path: Path) -> None:
    rows = image_rows("a.jpg")
    rows[2] = (rows[2][0], "1 2,3 4")  # line 4
    path = write_csv(tmp_path / "train.csv", rows)
    with raises_naming(path, "line 4"):
        read_labels(path, None, CLASSES)


@pytest.mark.parametrize("label", ["a.jpg_Fsh", "a.jpg_fish", "a.jpg", "a.jpg_"])
def test_unknown_class(tmp_path: Path, label: str) -> None:
    rows = image_rows("z.jpg") + image_rows("a.jpg")
    rows[4] = (label, "")  # line 6
    path = write_csv(tmp_path / "train.csv", rows)
    with raises_naming(path, "line 6", repr(label), "Fish, Flower, Gravel, Sugar"):
        read_labels(path, None, CLASSES)


def test_image_missing_a_class_row(tmp_path: Path) -> None:
    rows = image_rows("a.jpg") + [r for r in image_rows("b.jpg") if not r[0].endswith(("_Flower", "_Sugar"))]
    path = write_csv(tmp_path / "train.csv", rows)
    with raises_naming(path, "b.jpg", "Flower, Sugar"):
        read_labels(path, None, CLASSES)


def test_duplicated_row(tmp_path: Path) -> None:
    rows = image_rows("a.jpg") + image_rows("b.jpg")
    rows.insert(6, rows[1])  # a.jpg_Flower again on line 8
    path = write_csv(tmp_path / "train.csv", rows)
    with raises_naming(path, "line 8", "duplicate", "a.jpg_Flower"):
        read_labels(path, None, CLASSES)


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    lines = ["Image_Label,EncodedPixels", "a.jpg_Fish,", "", "a.jpg_Flower,1 2 3", "a.jpg_Gravel,", "a.jpg_Sugar,"]
    path.write_text("\n".join(lines) + "\n")
    with raises_naming(path, "line 4", "a.jpg_Flower"):  # the bad RLE is on line 4 of the file
        read_labels(path, SHAPE, CLASSES)


# ------------------------------------------------------------------------------------ wide view, presence


def test_to_wide_keeps_first_appearance_order_and_class_columns(tmp_path: Path) -> None:
    rows = (
        image_rows("c.jpg", {"Sugar": "1 1"}, order=CLASSES[::-1])  # classes in reverse order in the file
        + image_rows("a.jpg", {"Fish": "2 2", "Gravel": "3 3"})
        + image_rows("b.jpg", {"Flower": "4 4"}, order=("Gravel", "Fish", "Sugar", "Flower"))
    )
    wide = to_wide(read_labels(write_csv(tmp_path / "train.csv", rows), None, CLASSES), CLASSES)
    assert list(wide.index) == ["c.jpg", "a.jpg", "b.jpg"]  # not sorted
    assert list(wide.columns) == list(CLASSES)
    assert wide.loc["c.jpg"].tolist() == ["", "", "", "1 1"]
    assert wide.loc["a.jpg"].tolist() == ["2 2", "", "3 3", ""]
    assert wide.loc["b.jpg"].tolist() == ["", "4 4", "", ""]
    expected = np.array([[0, 0, 0, 1], [1, 0, 1, 0], [0, 1, 0, 0]], dtype=bool)
    got = presence(wide, CLASSES)
    assert got.dtype == bool and got.shape == (3, 4)
    np.testing.assert_array_equal(got, expected)


def test_presence_ignores_extra_columns() -> None:
    wide = pd.DataFrame(
        {"Fish": ["1 1", ""], "Flower": ["", ""], "Gravel": ["", "2 2"], "Sugar": ["", ""], "other": ["x", "y"]},
        index=["a.jpg", "b.jpg"],
    )
    np.testing.assert_array_equal(presence(wide, CLASSES), [[True, False, False, False], [False, False, True, False]])


# ----------------------------------------------------------------------------------------------- images


def test_image_paths(tmp_path: Path) -> None:
    folder = tmp_path / "test_images"
    folder.mkdir()
    for name in ("b.jpg", "a.jpg"):
        (folder / name).write_bytes(b"")
    assert image_paths(tmp_path, "test", ["b.jpg", "a.jpg"]) == [folder / "b.jpg", folder / "a.jpg"]


def test_image_paths_names_the_first_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "train_images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "c.jpg").mkdir()  # a folder is not an image: c.jpg counts as missing too
    with raises_naming(folder / "b.jpg", "not found", "3 of 4 train images missing", str(folder)):
        image_paths(tmp_path, "train", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])


def write_jpeg_rgb(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])


def test_read_image_returns_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :32] = (255, 0, 0)  # red
    rgb[:, 32:64] = (0, 255, 0)  # green
    rgb[:, 64:] = (0, 0, 255)  # blue
    path = tmp_path / "a.jpg"
    write_jpeg_rgb(path, rgb)
    bgr = cv2.imread(str(path))
    assert bgr[32, 10, 2] > 200 and bgr[32, 10, 0] < 50  # on disk, OpenCV order: red is channel 2

    image = read_image(path, (64, 96))
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    for x, channel in ((10, 0), (48, 1), (85, 2)):
        pixel = image[32, x].astype(int)
        assert pixel[channel] > 200, (x, pixel)
        assert np.delete(pixel, channel).max() < 50, (x, pixel)


def test_read_image_of_greyscale_jpeg_has_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "g.jpg"
    assert cv2.imwrite(str(path), np.full((8, 12), 100, np.uint8))
    image = read_image(path, (8, 12))
    assert image.shape == (8, 12, 3)
    assert abs(int(image.mean()) - 100) <= 2


@pytest.mark.parametrize("size", [(96, 64), (64, 95), (32, 48)])
def test_read_image_checks_the_size(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "a.jpg"
    write_jpeg_rgb(path, np.zeros((*size, 3), np.uint8))
    with raises_naming(path, f"{size[0]}x{size[1]}", "expected 64x96", "data.raw_size"):
        read_image(path, (64, 96))


@pytest.mark.parametrize("content", [b"", b"not a jpeg at all" * 10, None], ids=["empty", "garbage", "missing"])
def test_read_image_unreadable(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "a.jpg"
    if content is not None:
        path.write_bytes(content)
    with raises_naming(path, "cannot read image" if content is not None else "file not found"):
        read_image(path, (64, 96))


def test_read_image_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    write_jpeg_rgb(path, np.full((64, 96, 3), 128, np.uint8))
    path.write_bytes(path.read_bytes()[:40])  # header only
    with raises_naming(path, "truncated JPEG"):
        read_image(path, (64, 96))
