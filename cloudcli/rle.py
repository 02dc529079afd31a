"""Kaggle run-length encoding: pixels numbered top-to-bottom then left-to-right, from 1.

A mask is an (H, W) array, non-zero inside; its RLE is "start length start length ...",
the empty string for an empty mask. Pure numpy: no torch, no file IO.
"""

from __future__ import annotations

import re

import numpy as np

from cloudcli.errors import DataError

_INTEGER = re.compile(r"-?[0-9]+")  # ASCII digits only; a sign is allowed here to say '>= 1'
_INTEGERS = re.compile(r"-?[0-9]+(?: -?[0-9]+)*")


class RleError(DataError, ValueError):
    """A malformed RLE string; the message says what is wrong with it and names the value."""


def encode(mask: np.ndarray) -> str:
    """Encode an (H, W) mask (any non-zero value is inside) as a Kaggle RLE string."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    flat = mask.astype(bool, copy=False).ravel(order="F")  # column-major, as Kaggle counts
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-indexed run starts and ends
    edges[1::2] -= edges[::2]  # ends -> lengths
    return " ".join(map(str, edges.tolist()))


def parse(rle: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate an RLE string for an image of `shape`; return (starts, lengths), 1-indexed."""
    values = _values(rle, shape)
    n_pixels = shape[0] * shape[1]
    small = np.flatnonzero(values < 1)
    if len(small):
        k = int(small[0])
        what = "length" if k % 2 else "start"
        raise RleError(f"run {k // 2 + 1}: {what} {values[k]}; starts and lengths must be >= 1 (pixels count from 1)")
    starts, lengths = values[0::2], values[1::2]  # each in 1..n_pixels: sums cannot overflow
    ends = starts + lengths - 1  # last pixel of each run
    bad = np.flatnonzero(starts[1:] <= ends[:-1])
    if len(bad):
        i = int(bad[0]) + 1
        raise RleError(
            f"run {i + 1} (start {starts[i]}) overlaps or precedes run {i} "
            f"(pixels {starts[i - 1]}..{ends[i - 1]}): runs must be sorted and disjoint"
        )
    if len(ends) and ends[-1] > n_pixels:
        raise RleError(
            f"run ends at pixel {ends[-1]}, beyond the {shape[0]}x{shape[1]} image "
            f"({n_pixels} pixels): wrong image size or corrupt RLE"
        )
    return starts, lengths


def _values(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The RLE's values as int64, each checked against the image's pixel count while still text,
    so that no value, sum or count of values can overflow or allocate more than the image."""
    if not isinstance(rle, str):
        raise RleError(f"expected a string of 'start length' pairs, got {type(rle).__name__}")
    tokens = rle.split()
    if len(tokens) % 2:
        raise RleError(f"odd number of values ({len(tokens)}): expected 'start length' pairs")
    n_pixels = int(shape[0]) * int(shape[1])
    if len(tokens) // 2 > n_pixels:
        raise RleError(f"{len(tokens) // 2} runs, more than the {shape[0]}x{shape[1]} image's {n_pixels} pixels")
    if tokens and not _INTEGERS.fullmatch(" ".join(tokens)):
        bad = next(t for t in tokens if not _INTEGER.fullmatch(t))
        raise RleError(f"non-numeric value {bad[:40]!r}: expected positive integers")
    if tokens and max(map(len, tokens)) > 18:  # beyond any image, and beyond what int64 holds
        bad = next(t for t in tokens if len(t) > 18)
        raise RleError(f"value {bad[:40]} too large: beyond the {shape[0]}x{shape[1]} image ({n_pixels} pixels)")
    values = np.array(tokens, dtype=np.int64)
    big = np.flatnonzero(np.abs(values) > n_pixels)
    if len(big):
        raise RleError(
            f"value {values[big[0]]} beyond the {shape[0]}x{shape[1]} image ({n_pixels} pixels): "
            "wrong image size or corrupt RLE"
        )
    return values


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into an (H, W) uint8 mask of 0/1, C-contiguous."""
    starts, lengths = parse(rle, shape)
    height, width = shape
    ends = starts - 1 + lengths  # 0-indexed, exclusive
    gaps = starts - 1 - np.concatenate(([0], ends[:-1]))
    counts = np.empty(2 * len(starts) + 1, dtype=np.int64)  # gap, run, gap, run, ..., tail
    counts[0:-1:2], counts[1::2] = gaps, lengths
    counts[-1] = height * width - (ends[-1] if len(ends) else 0)
    values = np.zeros(len(counts), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, counts)  # one vectorised pass, no per-run loop
    return np.ascontiguousarray(flat.reshape((height, width), order="F"))
