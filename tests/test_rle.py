import itertools

import numpy as np
import pytest

from cloudcli.rle import RleError, decode, encode, parse

# (mask as rows, rle): Kaggle numbering is column-major and starts at 1
KNOWN = [
    ([[0, 0], [0, 0]], ""),
    ([[1, 1], [1, 1]], "1 4"),
    ([[1, 0], [0, 0]], "1 1"),
    ([[0, 0], [0, 1]], "4 1"),
    ([[1, 0], [1, 0]], "1 2"),  # first column
    ([[1, 1], [0, 0]], "1 1 3 1"),  # first row: pixels 1 and 3
    ([[0, 1, 1], [0, 1, 0]], "3 3"),  # columns 2 (pixels 3, 4) and 3 (pixel 5)
    ([[1, 0, 1], [1, 0, 1]], "1 2 5 2"),
]


@pytest.mark.parametrize(("rows", "rle"), KNOWN)
def test_known_answers(rows: list, rle: str) -> None:
    mask = np.array(rows, dtype=np.uint8)
    assert encode(mask) == rle
    decoded = decode(rle, mask.shape)
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, mask)


def test_encode_treats_any_nonzero_as_inside() -> None:
    assert encode(np.array([[0, 255], [True, 0]])) == "2 2"


def reference_encode(mask: np.ndarray) -> str:
    """Straightforward run-length encoding: walk the column-major pixels one by one."""
    runs, pos = [], 1
    for value, group in itertools.groupby(mask.T.reshape(-1).tolist()):
        n = len(list(group))
        if value:
            runs += [pos, n]
        pos += n
    return " ".join(map(str, runs))


def reference_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    values = list(map(int, rle.split()))
    for start, length in zip(values[0::2], values[1::2]):
        flat[start - 1 : start - 1 + length] = 1
    return flat.reshape(shape[1], shape[0]).T


def random_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Blocky random masks: long runs, touching the borders, like real labels."""
    small = rng.random((shape[0] // 50 + 1, shape[1] // 50 + 1)) < rng.uniform(0.1, 0.9)
    big = small.repeat(50, 0).repeat(50, 1)[: shape[0], : shape[1]]
    return (big ^ (rng.random(shape) < 0.001)).astype(np.uint8)  # plus isolated pixels


@pytest.mark.parametrize("shape", [(1400, 2100), (350, 525)])
def test_matches_reference_on_random_masks(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for _ in range(2):
        mask = random_mask(rng, shape)
        rle = encode(mask)
        assert rle == reference_encode(mask)
        np.testing.assert_array_equal(decode(rle, shape), reference_decode(rle, shape))
        np.testing.assert_array_equal(decode(rle, shape), mask)


def test_round_trip_small_random_masks() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        shape = tuple(rng.integers(1, 12, 2))
        mask = (rng.random(shape) < rng.random()).astype(np.uint8)
        np.testing.assert_array_equal(decode(encode(mask), shape), mask)


def test_run_ending_on_last_pixel_is_valid() -> None:
    np.testing.assert_array_equal(decode("5 2", (2, 3)), [[0, 0, 1], [0, 0, 1]])


def test_touching_runs_are_valid() -> None:
    np.testing.assert_array_equal(decode("1 1 2 1", (2, 1)), [[1], [1]])


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "odd number"),
        ("1 x", "non-numeric value 'x'"),
        ("1.5 2", "non-numeric value '1.5'"),
        ("0 2", ">= 1"),
        ("-1 2", ">= 1"),
        ("3 0", ">= 1"),
        ("5 3", "ends at pixel 7, beyond the 2x3 image"),
        ("1 3 2 2", "overlaps"),
        ("4 1 1 1", "overlaps or precedes"),
        ("99999999999999999999 1", "too large"),
    ],
)
def test_malformed(rle: str, message: str) -> None:
    with pytest.raises(RleError, match=message):
        parse(rle, (2, 3))


def test_encode_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        encode(np.zeros((2, 2, 2)))
