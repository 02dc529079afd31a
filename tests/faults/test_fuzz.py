"""Fuzzing: the RLE parser and decoder, `submit --check`, the Kaggle label reader and the params
loader on random and adversarial inputs. Each either gives the right answer (checked against a
brute-force reference written here) or raises cloudcli's own error; never another exception, and
never slowly (a deadline per input). Derandomized: CI sees the same inputs every run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tiny_params
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloudcli import CLASSES
from cloudcli.config import load_params
from cloudcli.data.kaggle import read_labels
from cloudcli.errors import CloudcliError
from cloudcli.rle import RleError, decode, encode
from cloudcli.stages.submit import check

FUZZ = settings(
    max_examples=150, deadline=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)
SIZE = (4, 6)  # the images of these tests: 24 pixels

# ---------------------------------------------------------------------------- brute-force references


def brute_decode(rle: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The mask of a Kaggle RLE, one pixel at a time with Python integers; None if it is malformed."""
    tokens = rle.split()
    if len(tokens) % 2 or not all(t.isascii() and t.isdigit() for t in tokens):
        return None
    n = shape[0] * shape[1]
    flat, last = [0] * n, 0  # `last`: the last pixel of the previous run (1-indexed)
    for start, length in zip(map(int, tokens[0::2]), map(int, tokens[1::2])):
        if start < 1 or length < 1 or start <= last or start + length - 1 > n:
            return None
        for pixel in range(start, start + length):
            flat[pixel - 1] = 1
        last = start + length - 1
    return np.array(flat, np.uint8).reshape(shape, order="F")


# ------------------------------------------------------------------------------------ strategies

HUGE = [2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**63 - 1, 2**63, 2**64 + 1, 10**30, -(2**63), -1, 0]
WORDS = ["1e30", "1.5", "-0", "+1", "0x10", "nan", "inf", "1_0", "٣", "²", "１", "-", "", "00", "007"]
whitespace = st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u2003"])
token = st.one_of(
    st.integers(-3, 30).map(str),  # around the 24 pixels: the edges of every check
    st.sampled_from(HUGE).map(str),
    st.sampled_from(WORDS),
    st.text(max_size=4),
)


@st.composite
def rle_texts(draw) -> str:
    """Adversarial RLE strings: pairs of small, huge and malformed values, any whitespace."""
    tokens = draw(st.lists(token, max_size=12))
    seps = draw(st.lists(whitespace, min_size=len(tokens), max_size=len(tokens)))
    return "".join(t + s for t, s in zip(tokens, seps))


@st.composite
def sorted_runs(draw) -> str:
    """Valid-looking RLEs: increasing starts with random lengths (some overflow the image)."""
    starts = sorted(draw(st.sets(st.integers(1, 26), max_size=6)))
    lengths = draw(st.lists(st.integers(1, 6), min_size=len(starts), max_size=len(starts)))
    return " ".join(f"{s} {n}" for s, n in zip(starts, lengths))


@st.composite
def int_pairs(draw) -> str:
    """Well-formed integers that may overflow int64, wrap on a cast to int32, or be out of range."""
    value = st.one_of(st.integers(-3, 30), st.sampled_from(HUGE), st.integers(-(2**66), 2**66))
    return " ".join(str(v) for _ in range(draw(st.integers(0, 4))) for v in (draw(value), draw(value)))


any_rle = st.one_of(rle_texts(), sorted_runs(), int_pairs(), st.text(max_size=30))
KNOWN = ["2 9223372036854775807", "1 4294967297", "4294967297 1", "1 18446744073709551617", "1 2 3 -1", "1 1e30"]


def masks(shape: tuple[int, int] = SIZE):
    return st.lists(st.booleans(), min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]).map(
        lambda bits: np.array(bits, np.uint8).reshape(shape)
    )


# ------------------------------------------------------------------------------------------ RLE


@FUZZ
@given(any_rle, st.tuples(st.integers(1, 6), st.integers(1, 6)))
@example(KNOWN[0], SIZE)
@example(KNOWN[1], SIZE)
@example(KNOWN[2], SIZE)
@example(KNOWN[3], SIZE)
@example(KNOWN[4], SIZE)
@example(KNOWN[5], SIZE)
def test_decode_is_right_or_raises_rle_error(rle: str, shape: tuple[int, int]) -> None:
    want = brute_decode(rle, shape)
    if want is None:
        with pytest.raises(RleError):
            decode(rle, shape)
    else:
        np.testing.assert_array_equal(decode(rle, shape), want)


@FUZZ
@given(masks())
def test_encode_decode_round_trip(mask: np.ndarray) -> None:
    rle = encode(mask)
    np.testing.assert_array_equal(brute_decode(rle, SIZE), mask)
    np.testing.assert_array_equal(decode(rle, SIZE), mask)


def test_rle_error_is_cloudcli_error() -> None:
    assert issubclass(RleError, CloudcliError)  # the CLI prints it as one line


# --------------------------------------------------------------------- label CSVs and submissions

IDS = ["a.jpg", "b.jpg"]
WANT = [f"{i}_{c}" for i in IDS for c in CLASSES]


@st.composite
def label_csvs(draw) -> tuple[str, list[tuple[str, str]] | None]:
    """(CSV text, the (label, rle) rows if the file is a valid submission of WANT, else None):
    WANT's rows with random RLEs, maybe with one row dropped, doubled, renamed or swapped."""
    rles = [one_field(draw(st.one_of(masks().map(encode), any_rle))) for _ in WANT]
    rows = list(zip(WANT, rles))
    change = draw(st.sampled_from(["none", "none", "drop", "double", "rename", "swap"]))
    k = draw(st.integers(0, len(rows) - 2))
    if change == "drop":
        del rows[k]
    elif change == "double":
        rows.insert(k, rows[k])
    elif change == "rename":
        rows[k] = (draw(st.sampled_from(["a.jpg_Fog", "c.jpg_Fish", "a.jpg", "_Fish", "../a.jpg_Fish"])), rows[k][1])
    elif change == "swap":
        rows[k], rows[k + 1] = rows[k + 1], rows[k]
    text = "Image_Label,EncodedPixels\n" + "".join(f"{label},{rle}\n" for label, rle in rows)
    ok = change == "none" and all(brute_decode(r, SIZE) is not None for _, r in rows)
    return text, rows if ok else None


def one_field(rle: str) -> str:
    """`rle` as one unquoted CSV field: line breaks become spaces; no comma, quote or NUL."""
    return " ".join(rle.splitlines()).translate({ord(c): None for c in ',"\x00'})


csv_noise = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.text(alphabet=st.sampled_from(list('Image_Label,EncodedPixels\n"ab.jpg_Fish 12 -\r\x00')), max_size=200),
)


def write(text: str | bytes, folder: str) -> Path:
    path = Path(folder) / "sub.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


@FUZZ
@given(label_csvs())
def test_check_accepts_exactly_the_valid_submissions(case) -> None:
    text, rows = case
    with tempfile.TemporaryDirectory() as folder:
        path = write(text, folder)
        if rows is None:
            with pytest.raises(CloudcliError):
                check(path, WANT, SIZE, CLASSES, "sample_submission.csv")
        else:
            assert check(path, WANT, SIZE, CLASSES, "sample_submission.csv") == len(WANT)


@FUZZ
@given(csv_noise)
def test_check_on_random_text_raises_only_cloudcli_errors(text) -> None:
    with tempfile.TemporaryDirectory() as folder:
        try:
            check(write(text, folder), WANT, SIZE, CLASSES, "sample_submission.csv")
        except CloudcliError as e:
            assert "\n" not in str(e).strip(), str(e)


@FUZZ
@given(label_csvs())
def test_label_reader_reads_the_rows_it_accepts(case) -> None:
    text, rows = case
    with tempfile.TemporaryDirectory() as folder:
        try:
            long = read_labels(write(text, folder), SIZE, CLASSES)
        except CloudcliError:
            assert rows is None  # every valid file is read
            return
    got = list(zip(long["image_id"] + "_" + long["cls"], long["rle"]))
    assert got == [(label, rle.strip()) for label, rle in text_rows(text)]
    for rle in long["rle"]:
        assert brute_decode(rle, SIZE) is not None  # every RLE it returns decodes


def text_rows(text: str) -> list[tuple[str, str]]:
    return [tuple(line.split(",", 1)) for line in text.splitlines()[1:]]


@FUZZ
@given(csv_noise)
def test_label_reader_on_random_text_raises_only_cloudcli_errors(text) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for size in (SIZE, None):
            try:
                read_labels(write(text, folder), size, CLASSES)
            except CloudcliError as e:
                assert "\n" not in str(e).strip(), str(e)


# ---------------------------------------------------------------------------------- params loader

yaml_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        st.text(max_size=10),
        st.sampled_from(["5e-4", "seg1", "dice", "Fish", "../x", ""]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8,
)


def _paths(tree, prefix=()) -> list[tuple]:
    """Every key path of a nested mapping, to the sections, their keys and nested keys."""
    out = []
    for key, value in tree.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


VALID = tiny_params()
PATHS = _paths(VALID)


def load_text(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write(text, folder)
        try:
            load_params(path)
        except CloudcliError as e:
            assert "\n" not in str(e).strip(), str(e)


@FUZZ
@given(st.sampled_from(PATHS), yaml_values)
def test_params_loader_on_random_values(path: tuple, value) -> None:
    params = yaml.safe_load(yaml.safe_dump(VALID))  # a deep copy
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    load_text(yaml.safe_dump(params, sort_keys=False))


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=100), yaml_values.map(yaml.safe_dump)))
def test_params_loader_on_random_text(text) -> None:
    load_text(text)
