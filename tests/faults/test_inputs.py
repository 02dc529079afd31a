"""Numbers out of range and other malformed inputs: RLE values beyond the image or beyond int64 in
label CSVs and submissions, damaged submissions given to `submit --check` and `show`, and damaged
folds tables, each end in one line naming the file, the row and the value, with nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import cloudcli_here

from cloudcli.data.folds import read_folds
from cloudcli.errors import DataError

# ------------------------------------------------------------------------------ numbers out of range

BAD_RLES = {  # RLE -> words of the error (the tiny data: 64x96 raw images, 32x48 scored masks)
    "beyond int64": ("2 9223372036854775807", ["9223372036854775807", "too large"]),
    "beyond uint64": ("1 18446744073709551617", ["18446744073709551617", "too large"]),
    "wraps int32": ("4294967297 1", ["4294967297", "beyond the"]),
    "negative": ("1 -5", ["length -5", ">= 1"]),
    "zero length": ("5 0", ["length 0", ">= 1"]),
    "zero start": ("0 3", ["start 0", ">= 1"]),
    "start beyond": ("99999 1", ["99999", "beyond the"]),
    "float": ("1e30 1", ["'1e30'"]),
    "decimal": ("1.5 2", ["'1.5'"]),
    "unicode digit": ("\u0663 1", ["'\u0663'"]),
    "too many pairs": ("1 1 " * 7000, ["7000 runs"]),
    "unsorted": ("9 1 3 1", ["overlaps or precedes"]),
}


def set_first_rle(csv: Path, rle: str) -> None:
    """Give line 2 of a Kaggle label CSV the RLE `rle`."""
    lines = csv.read_text().splitlines()
    lines[1] = f"{lines[1].split(',')[0]},{rle}"
    csv.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("case", list(BAD_RLES))
@pytest.mark.parametrize("command", [["fold"], ["preprocess"]])
def test_rle_out_of_range_in_train_csv(case: str, command: list[str], tiny_project: Path, fails_cleanly) -> None:
    rle, words = BAD_RLES[case]
    set_first_rle(tiny_project / "data" / "train.csv", rle)
    fails_cleanly(tiny_project, lambda: cloudcli_here(*command, cwd=tiny_project), "train.csv line 2", *words)


@pytest.fixture
def sub(tiny_project: Path) -> Path:
    """A submission with empty masks, as sub.csv in the project."""
    shutil.copy(tiny_project / "data" / "sample_submission.csv", tiny_project / "sub.csv")
    return tiny_project / "sub.csv"


@pytest.mark.parametrize("case", list(BAD_RLES))
@pytest.mark.parametrize("command", [["submit", "--check", "sub.csv"], ["export-masks", "sub.csv", "--out", "masks"]])
def test_rle_out_of_range_in_a_submission(case: str, command: list[str], sub: Path, fails_cleanly) -> None:
    rle, words = BAD_RLES[case]
    set_first_rle(sub, rle)
    fails_cleanly(sub.parent, lambda: cloudcli_here(*command, cwd=sub.parent), "sub.csv line 2", *words)


def test_a_valid_submission_passes_the_check(sub: Path) -> None:
    result = cloudcli_here("submit", "--check", "sub.csv", cwd=sub.parent, check=True)
    assert result.stdout.strip().endswith("valid submission, 24 rows")


# -------------------------------------------------------------------------- damaged submissions

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256))
BAD_FILES = {  # content of sub.csv (None: a folder) -> words of the error
    "folder": (None, ["sub.csv", "is a folder"]),
    "empty": (b"", ["sub.csv", "empty file"]),
    "binary": (JPEG, ["sub.csv", "not a readable CSV"]),
    "header only": (b"Image_Label,EncodedPixels\n", ["sub.csv", "no label rows"]),
    "wrong header": (b"id,rle\na.jpg_Fish,1 1\n", ["sub.csv", "expected header"]),
    "extra field": (b"Image_Label,EncodedPixels\na.jpg_Fish,1 1,7\n", ["sub.csv line 2", "more fields"]),
    "ragged": (b"Image_Label,EncodedPixels\na.jpg_Fish,1 1\nb,1,2,3\n", ["sub.csv", "not a readable CSV"]),
}


def write_file(path: Path, content: bytes | None) -> None:
    if path.exists():
        path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_check_a_damaged_submission(case: str, sub: Path, fails_cleanly) -> None:
    content, words = BAD_FILES[case]
    write_file(sub, content)
    fails_cleanly(sub.parent, lambda: cloudcli_here("submit", "--check", "sub.csv", cwd=sub.parent), *words)


def test_check_a_missing_submission(tiny_project: Path, fails_cleanly) -> None:
    run = lambda: cloudcli_here("submit", "--check", "none.csv", cwd=tiny_project)  # noqa: E731
    line = fails_cleanly(tiny_project, run, "none.csv", "file not found")
    assert "data.raw" not in line  # the hint about the raw data is for its own CSVs only


def first_id(tiny_project: Path, csv: str) -> str:
    return (tiny_project / "data" / csv).read_text().splitlines()[1].split(",")[0].rsplit("_", 1)[0]


@pytest.mark.parametrize("case", [*BAD_FILES, "bad RLE"])
def test_show_a_damaged_prediction_file(case: str, sub: Path, fails_cleanly) -> None:
    content, words = BAD_FILES.get(case, (None, ["sub.csv line 2", "9223372036854775807"]))
    if case == "bad RLE":
        set_first_rle(sub, "2 9223372036854775807")
    else:
        write_file(sub, content)
    image_id = first_id(sub.parent, "sample_submission.csv")
    run = lambda: cloudcli_here("show", image_id, "--pred", "sub.csv", cwd=sub.parent)  # noqa: E731
    fails_cleanly(sub.parent, run, *words)


@pytest.mark.parametrize("content", [JPEG, b"Image_Label\nx\n", b"Image_Label,EncodedPixels\nx.jpg_Fish,1 1,2\n"])
def test_show_a_damaged_default_submission(content: bytes, tiny_project: Path, fails_cleanly) -> None:
    (tiny_project / "submission.csv").write_bytes(content)
    image_id = first_id(tiny_project, "sample_submission.csv")
    fails_cleanly(tiny_project, lambda: cloudcli_here("show", image_id, cwd=tiny_project), "submission.csv")


# --------------------------------------------------------------------------------- damaged folds


def folds_text(tiny_project: Path) -> tuple[list[str], str]:
    """(training ids, a valid folds table of 3 folds)."""
    labels = (tiny_project / "data" / "train.csv").read_text().splitlines()[1:]
    ids = list(dict.fromkeys(line.split(",")[0].rsplit("_", 1)[0] for line in labels))
    return ids, "image_id,fold\n" + "".join(f"{i},{k % 3}\n" for k, i in enumerate(ids))


def damage(text: str, case: str) -> bytes | None:
    lines = text.splitlines()
    first = lines[1].split(",")[0]
    edits = {
        "no fold column": lambda: [line.split(",")[0] for line in lines],
        "renamed column": lambda: ["image_id,split", *lines[1:]],
        "non-integer": lambda: [lines[0], f"{first},x", *lines[2:]],
        "decimal": lambda: [lines[0], f"{first},1.5", *lines[2:]],
        "negative": lambda: [lines[0], f"{first},-1", *lines[2:]],
        "huge": lambda: [lines[0], f"{first},99999999999999999999", *lines[2:]],
        "out of range": lambda: [lines[0], f"{first},7", *lines[2:]],
        "duplicate": lambda: [*lines, lines[1]],
        "unknown id": lambda: [*lines, "zzz.jpg,0"],
        "missing id": lambda: lines[:-1],
        "header only": lambda: lines[:1],
        "empty": lambda: [],
        "folder": lambda: None,
    }
    edited = edits[case]()
    return None if edited is None else "".join(f"{line}\n" for line in edited).encode()


FOLD_CASES = {  # case -> words of the error
    "no fold column": ["no column 'fold'"],
    "renamed column": ["no column 'fold'", "split"],
    "non-integer": ["line 2", "fold 'x' is not a fold number"],
    "decimal": ["line 2", "'1.5'"],
    "negative": ["line 2", "'-1'"],
    "huge": ["line 2", "'99999999999999999999'"],
    "out of range": ["fold 7 but no image in fold"],
    "duplicate": ["line 26", "has a second row"],
    "unknown id": ["'zzz.jpg'", "not training images"],
    "missing id": ["no fold for 1 training images"],
    "header only": ["no rows"],
    "empty": ["empty file"],
    "folder": ["is a folder"],
}


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_damaged_folds_table(case: str, tiny_project: Path, fails_cleanly) -> None:
    _, text = folds_text(tiny_project)
    write_file(tiny_project / "folds.csv", damage(text, case))
    run = lambda: cloudcli_here("report", "data", "--folds", "folds.csv", cwd=tiny_project)  # noqa: E731
    fails_cleanly(tiny_project, run, "folds.csv", *FOLD_CASES[case], "cloudcli fold")


@pytest.mark.parametrize("case", ["out of range", "unknown id", "non-integer"])
def test_train_on_a_damaged_folds_table(case: str, tiny_cache: Path, tmp_path: Path, fails_cleanly) -> None:
    ids = [line.split(",")[0] for line in (tiny_cache / "artifacts" / "folds.csv").read_text().splitlines()[1:]]
    text = "image_id,fold\n" + "".join(f"{i},{k % 3}\n" for k, i in enumerate(ids))
    write_file(tmp_path / "folds.csv", damage(text, case))
    args = ["train", "--model", "classifier", "--fold", "0", "--folds", str(tmp_path / "folds.csv")]
    args += ["--out", str(tmp_path / "m"), "--live", str(tmp_path / "l")]
    fails_cleanly(tmp_path, lambda: cloudcli_here(*args, cwd=tiny_cache), *FOLD_CASES[case], "dvc repro fold")


def test_folds_read_in_the_order_asked(tmp_path: Path) -> None:
    (tmp_path / "folds.csv").write_text("image_id,fold\na,1\nb,0\nc,2\nd,0\n")
    np.testing.assert_array_equal(read_folds(tmp_path / "folds.csv", ["d", "c", "b", "a"]), [0, 2, 0, 1])
    with pytest.raises(DataError, match="fold 3 has no images"):
        read_folds(tmp_path / "folds.csv", ["a", "b", "c", "d"], need=(0, 3))


# ------------------------------------------------------------------------- damaged JSON and tables


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[1, 2]"])
def test_damaged_prediction_meta(content: bytes, tmp_path: Path) -> None:
    from cloudcli.data.predictions import classes_of, read_thresholds

    (tmp_path / "meta.json").write_bytes(content)
    with pytest.raises(DataError, match=r"meta.json: not (valid JSON|a JSON object|UTF-8 text).*dvc repro infer"):
        classes_of(tmp_path)
    (tmp_path / "thresholds.json").write_bytes(content)
    with pytest.raises(DataError, match=r"thresholds.json: not (valid JSON|a JSON object|UTF-8 text).*dvc repro tune"):
        read_thresholds(tmp_path / "thresholds.json")


@pytest.mark.parametrize(("name", "content"), [("meta.json", b"{"), ("index.csv", b""), ("index.csv", b"\xff\xd8")])
def test_damaged_cache_tables(name: str, content: bytes, tiny_cache: Path, tmp_path: Path) -> None:
    from cloudcli.data.cache import open_cache

    shutil.copytree(
        tiny_cache / "artifacts" / "preprocessed" / "train",
        tmp_path / "train",
        ignore=lambda *_: ["images.npy", "masks.npy", "truth.npy"],
    )
    (tmp_path / "train" / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"train/{name}: (not valid JSON|damaged).*dvc repro preprocess"):
        open_cache(tmp_path)
