"""The pseudo-labelled set that `cloudcli pseudo` writes and `cloudcli train --pseudo` reads.

images.csv  image_id, test_row (row of the cache's test/images.npy), one 0/1 presence column
            per class, confidence (what the selection rule measured). With pseudo.sources listing
            excluded: image_id, source (test: a test image; excluded: a training image data.exclude
            leaves out, relabelled), cache_row (its row of the cache's test/ or train/images.npy),
            the presence columns, confidence
masks.npy   (K, h, w) uint8 packed masks (bit k = class k) at preprocess.cache_size
soft.npy    (K, C, h, w) uint8 soft targets p * 255, with pseudo.soft (what training then reads)
labels.csv  the same masks in the Kaggle format (Image_Label, EncodedPixels at 350x525)
meta.json   the rule, its thresholds, the models that made the labels, counts, versions
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.errors import DataError
from cloudcli.io import need_keys, read_json

SOURCES = ("test", "excluded")  # where a pseudo-labelled image comes from, and the cache part it lies in
PART = {"test": "test", "excluded": "train"}


@dataclass(frozen=True)
class PseudoSet:
    folder: Path
    images: pd.DataFrame  # image_id, test_row (or source, cache_row), presence columns, confidence
    masks: np.ndarray  # (K, h, w) packed, memory-mapped
    sha1: str  # of meta.json, images.csv and masks.npy: identifies the set in a training's settings
    classes: tuple[str, ...]
    soft: bool = False  # train on soft.npy (probabilities) rather than the packed masks

    @property
    def targets(self) -> Path:
        """The file training reads its targets from."""
        return self.folder / ("soft.npy" if self.soft else "masks.npy")

    @property
    def labels(self) -> np.ndarray:
        """(K, C) 0/1 presence of each class."""
        return self.images[list(self.classes)].to_numpy(np.uint8)

    def of_source(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the set, rows of the cache's images: test/ for test, train/ for excluded)
        of the set's images from `source`, in the set's order."""
        return _of_source(self.images, source)


def _of_source(images: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    if "source" not in images.columns:  # test images only
        every = np.arange(len(images))
        return (every, images["test_row"].to_numpy()) if source == "test" else (every[:0], every[:0])
    at = np.flatnonzero(images["source"].to_numpy() == source)
    return at, images["cache_row"].to_numpy()[at]


def read_pseudo(
    folder: str | Path,
    test_ids: list[str],
    mask_size: tuple[int, int],
    classes: tuple[str, ...],
    train_ids: list[str] = (),
) -> PseudoSet:
    """Read and check a pseudo-labelled set against the cache it will train with (its test and
    training image ids in row order)."""
    folder = Path(folder)
    rerun = "rerun `dvc repro pseudo`"
    meta = read_json(folder / "meta.json", rerun, missing="run `dvc repro pseudo` (or `cloudcli pseudo`) first")
    if "soft" in meta:  # absent: hard labels
        need_keys(meta, {"soft": bool}, folder / "meta.json", rerun)
    try:
        meta_bytes = (folder / "meta.json").read_bytes()
        kinds = {"image_id": str, "test_row": np.int64, "source": str, "cache_row": np.int64}
        images = pd.read_csv(folder / "images.csv", dtype=kinds)
        masks = np.load(folder / "masks.npy", mmap_mode="r")
    except FileNotFoundError as e:
        raise DataError(f"{e.filename}: missing; run `dvc repro pseudo` (or `cloudcli pseudo`) first") from None
    except (ValueError, TypeError) as e:
        raise DataError(f"{folder / 'images.csv'}: unreadable ({e}); rerun `dvc repro pseudo`") from None
    rows = ("source", "cache_row") if "source" in images.columns else ("test_row",)
    missing = [c for c in ("image_id", *rows, *classes) if c not in images.columns]
    if missing:
        raise DataError(f"{folder / 'images.csv'}: no column {missing[0]}; rerun `dvc repro pseudo`")
    if masks.shape != (len(images), *mask_size):
        raise DataError(
            f"{folder / 'masks.npy'}: shape {masks.shape}, expected ({len(images)}, {mask_size[0]}, {mask_size[1]}) "
            "(one mask per row of images.csv at preprocess.cache_size); rerun `dvc repro pseudo`"
        )
    _check_rows(folder / "images.csv", images, {"test": test_ids, "excluded": train_ids})
    soft = meta.get("soft", False)
    if soft:
        try:
            shape = np.load(folder / "soft.npy", mmap_mode="r").shape
        except FileNotFoundError:
            raise DataError(
                f"{folder / 'soft.npy'}: missing (meta.json says soft labels); rerun `dvc repro pseudo`"
            ) from None
        if shape != (len(images), len(classes), *mask_size):
            raise DataError(f"{folder / 'soft.npy'}: shape {shape}, expected {(len(images), len(classes), *mask_size)}")
    digest = hashlib.sha1(meta_bytes + (folder / "images.csv").read_bytes())
    for name in ("masks.npy", "soft.npy") if soft else ("masks.npy",):
        with open(folder / name, "rb") as f:  # the labels themselves
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return PseudoSet(folder, images, masks, digest.hexdigest(), tuple(classes), soft)


def _check_rows(path: Path, images: pd.DataFrame, ids: dict[str, list[str]]) -> None:
    """Every image of the set at its row of the cache part its source names (`ids`: each source's
    image ids in cache order)."""
    if "source" in images.columns:
        odd = images.loc[~images["source"].isin(SOURCES), "source"]
        if len(odd):
            raise DataError(f"{path}: source {odd.iloc[0]!r} is not test or excluded; rerun `dvc repro pseudo`")
    for source in SOURCES:
        at, rows = _of_source(images, source)
        known = np.asarray(ids[source], dtype=object)
        bad = (rows < 0) | (rows >= len(known))
        if bad.any() or (known[rows[~bad]] != images["image_id"].to_numpy()[at][~bad]).any():
            column = "test_row" if "source" not in images.columns else "cache_row"
            what = "test images" if source == "test" else "training images (source excluded)"
            raise DataError(
                f"{path}: {column} does not match the cache's {what}; "
                "the cache changed since the labels were made: rerun `dvc repro pseudo`"
            )
