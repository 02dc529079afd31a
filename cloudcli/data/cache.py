"""The preprocessed cache: a few large .npy files a training loader memory-maps, in two parts so
that the stages which train depend on the training images only (new test images retrain nothing).

    train/images.npy  (N, h, w, B) uint8 at preprocess.cache_size: RGB, or B scaled bands
    train/masks.npy   (N, h, w)    uint8, bit k set where class classes[k] is present
    train/truth.npy   (N, H, W)    uint8 bits as above, at data.score_size (350x525): scoring truth
    train/index.csv   image_id + one 0/1 presence column per class, in array row order
    train/meta.json   kind, classes, bands, band limits and statistics, sizes, params and library versions
    train/valid.npy   (N, h, w)    uint8 1 where a pixel has data, 0 where not: only with data.nodata
    train/valid_score.npy  (N, H, W) the same at data.score_size; truth.npy has no class where it is 0
    test/images.npy   (M, h, w, B) uint8
    test/truth.npy    (M, H, W)    uint8 bits, only when the raw data has test labels (the demos)
    test/index.csv    image_id, in sample_submission.csv (or file) order
    test/valid.npy, test/valid_score.npy  as the training part's, only with data.nodata
    test/meta.json    kind, classes, bands, sizes, params and versions of the test part

Masks are packed one bit per class, so up to 8 classes cost one byte per pixel. In code an array
is named by part and kind, e.g. `train_images` is train/images.npy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli.errors import DataError
from cloudcli.io import read_json

BITS = (1 << np.arange(8, dtype=np.uint8)).astype(np.uint8)  # [1, 2, 4, ..., 128]: bit k = class k


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(..., C, H, W) 0/1 masks -> (..., H, W) uint8 with bit k = class k."""
    masks = np.asarray(masks)
    return np.tensordot(BITS[: masks.shape[-3]], (masks != 0).astype(np.uint8), axes=(0, -3)).astype(np.uint8)


def unpack_masks(packed: np.ndarray, n_classes: int) -> np.ndarray:
    """(..., H, W) uint8 bits -> (..., C, H, W) uint8 0/1 masks."""
    packed = np.asarray(packed)[..., None, :, :]
    return ((packed & BITS[:n_classes, None, None]) != 0).astype(np.uint8)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, B) image -> (h, w, B) at `size` by pixel-area averaging: what the cache holds."""
    out = cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)
    return out.reshape(*size, image.shape[2])  # cv2 drops a single channel's axis


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a 0/1 (H, W) mask: a pixel is inside if at least half of the area it covers is."""
    if mask.shape == tuple(size):
        return mask
    area = cv2.resize(mask * np.uint8(255), size[::-1], interpolation=cv2.INTER_AREA)
    return (area >= 128).astype(np.uint8)


PARTS = ("train", "test")


def array_path(folder: str | Path, name: str) -> Path:
    """The file of array `name` (`train_images`, `test_truth`, ...) in the cache at `folder`."""
    part, _, kind = name.partition("_")
    if part not in PARTS or not kind:
        raise ValueError(f"no cache array {name!r}: a name is <part>_<kind>, part one of {PARTS}")
    return Path(folder) / part / f"{kind}.npy"


@dataclass(frozen=True)
class Cache:
    """Memory-mapped view of a preprocessed cache folder. The training part is read when the cache
    is opened; the test part only when a stage asks for it (`test`, `test_meta`, a test array)."""

    folder: Path
    train: pd.DataFrame  # image_id + presence columns
    meta: dict  # the training part's meta.json

    @cached_property
    def test(self) -> pd.DataFrame:
        """image_id of every test image, in array row order."""
        return _read_csv(self.folder / "test" / "index.csv")

    @cached_property
    def test_meta(self) -> dict:
        return _read_json(self.folder / "test" / "meta.json")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in channel order, as preprocess recorded them."""
        if "classes" not in self.meta:
            raise DataError(f"{self.folder / 'train/meta.json'}: no classes; rerun `dvc repro preprocess`")
        return tuple(self.meta["classes"])

    @property
    def channels(self) -> int:
        return int(self.meta["arrays"]["train_images"][3])

    @property
    def cache_size(self) -> tuple[int, int]:
        """(h, w) of the cached training images (preprocess.cache_size)."""
        return tuple(self.meta["arrays"]["train_images"][1:3])

    @property
    def test_size(self) -> tuple[int, int]:
        """(h, w) of the cached test images: the training images' size in a cache preprocess wrote."""
        return tuple(self.test_meta["arrays"]["test_images"][1:3])

    @property
    def score_size(self) -> tuple[int, int]:
        """(H, W) of the truth masks (data.score_size)."""
        return tuple(self.meta["arrays"]["train_truth"][1:3])

    @property
    def band_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per band in 0..1 of the cached training images (None in older caches)."""
        if "band_mean" not in self.meta:
            return None
        return tuple(self.meta["band_mean"]), tuple(self.meta["band_std"])

    @property
    def has_valid(self) -> bool:
        """The cache marks the pixels without data (data.nodata set; older caches never do)."""
        return "train_valid" in self.meta["arrays"]

    def valid(self, part: str, score: bool = True) -> np.ndarray | None:
        """(N, H, W) uint8 of `part`: 1 where a pixel has data, at data.score_size (`score`) or at
        the cache size; None when the cache marks none (every pixel has data)."""
        return self.array(f"{part}_valid_score" if score else f"{part}_valid") if self.has_valid else None

    def nodata_record(self, part: str, ids=None) -> dict:
        """{"nodata_pixels": n} for a metrics file: the pixels without data at the scoring size of
        `part`'s images `ids` (all when None), which its scores leave out; {} without data.nodata."""
        valid = self.valid(part)
        if valid is None:
            return {}
        if ids is not None:
            table = self.train if part == "train" else self.test
            valid = valid[np.sort(pd.Index(table["image_id"]).get_indexer(list(ids)))]
        return {"nodata_pixels": int(valid.size - np.count_nonzero(valid))}

    @property
    def has_test_truth(self) -> bool:
        return "test_truth" in self.test_meta["arrays"]

    def path(self, name: str) -> Path:
        return array_path(self.folder, name)

    def array(self, name: str) -> np.ndarray:
        """One of train_images, train_masks, train_truth, test_images, test_truth (train_valid, ...
        with data.nodata), memory-mapped read-only."""
        return np.load(self.path(name), mmap_mode="r")


_RUN_FIRST = "run `cloudcli preprocess` (or `dvc repro preprocess`) first"


def _missing(path: str | Path) -> DataError:
    return DataError(f"{path}: missing; {_RUN_FIRST}")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"image_id": str})
    except FileNotFoundError:
        raise _missing(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: damaged ({' '.join(str(e).split())[:100]}); rerun `dvc repro preprocess`") from None


def _read_json(path: Path) -> dict:
    return read_json(path, "rerun `dvc repro preprocess`", missing=_RUN_FIRST)


def open_cache(folder: str | Path) -> Cache:
    folder = Path(folder)
    if (folder / "train.csv").exists() and not (folder / "train").is_dir():
        raise DataError(f"{folder}: a cache in the layout before train/ and test/ parts; rerun `dvc repro preprocess`")
    return Cache(folder, _read_csv(folder / "train" / "index.csv"), _read_json(folder / "train" / "meta.json"))
