"""The preprocessed cache: a few large .npy files a training loader memory-maps.

    train_images.npy  (N, h, w, B) uint8 at preprocess.cache_size: RGB, or B scaled bands
    train_masks.npy   (N, h, w)    uint8, bit k set where class classes[k] is present
    train_truth.npy   (N, H, W)    uint8 bits as above, at data.score_size (350x525): scoring truth
    test_images.npy   (M, h, w, B) uint8
    test_truth.npy    (M, H, W)    uint8 bits, only when the raw data has test labels (the demos)
    train.csv         image_id + one 0/1 presence column per class, in array row order
    test.csv          image_id, in sample_submission.csv (or file) order
    meta.json         kind, classes, bands, sizes, params and library versions that made the cache

Masks are packed one bit per class, so up to 8 classes cost one byte per pixel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli.errors import DataError

BITS = (1 << np.arange(8, dtype=np.uint8)).astype(np.uint8)  # [1, 2, 4, ..., 128]: bit k = class k


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(..., C, H, W) 0/1 masks -> (..., H, W) uint8 with bit k = class k."""
    masks = np.asarray(masks)
    return np.tensordot(BITS[: masks.shape[-3]], (masks != 0).astype(np.uint8), axes=(0, -3)).astype(np.uint8)


def unpack_masks(packed: np.ndarray, n_classes: int) -> np.ndarray:
    """(..., H, W) uint8 bits -> (..., C, H, W) uint8 0/1 masks."""
    packed = np.asarray(packed)[..., None, :, :]
    return ((packed & BITS[:n_classes, None, None]) != 0).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 0/1 (H, W) mask: a pixel is inside if at least half of the area it covers is."""
    if mask.shape == tuple(size):
        return mask
    area = cv2.resize(mask * np.uint8(255), size[::-1], interpolation=cv2.INTER_AREA)
    return (area >= 128).astype(np.uint8)


@dataclass(frozen=True)
class Cache:
    """Memory-mapped view of a preprocessed cache folder."""

    folder: Path
    train: pd.DataFrame  # image_id + presence columns
    test: pd.DataFrame  # image_id
    meta: dict

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in channel order, as preprocess recorded them."""
        if "classes" not in self.meta:
            raise DataError(f"{self.folder / 'meta.json'}: no classes; rerun `dvc repro preprocess`")
        return tuple(self.meta["classes"])

    @property
    def channels(self) -> int:
        return int(self.meta["arrays"]["train_images"][3])

    @property
    def band_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per band in 0..1 of the cached training images (None in older caches)."""
        if "band_mean" not in self.meta:
            return None
        return tuple(self.meta["band_mean"]), tuple(self.meta["band_std"])

    @property
    def has_test_truth(self) -> bool:
        return "test_truth" in self.meta["arrays"]

    def array(self, name: str) -> np.ndarray:
        """One of train_images, train_masks, train_truth, test_images, memory-mapped read-only."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")


def open_cache(folder: str | Path) -> Cache:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        train = pd.read_csv(folder / "train.csv", dtype={"image_id": str})
        test = pd.read_csv(folder / "test.csv", dtype={"image_id": str})
    except FileNotFoundError as e:
        raise DataError(f"{e.filename}: missing; run `cloudcli preprocess` (or `dvc repro preprocess`) first") from None
    return Cache(folder, train, test, meta)
