"""The pseudo-labelled set that `cloudcli pseudo` writes and `cloudcli train --pseudo` reads.

images.csv  image_id, test_row (row of the cache's test/images.npy), one 0/1 presence column
            per class, confidence (what the selection rule measured)
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


@dataclass(frozen=True)
class PseudoSet:
    folder: Path
    images: pd.DataFrame  # image_id, test_row, presence columns, confidence
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


def read_pseudo(
    folder: str | Path, test_ids: list[str], mask_size: tuple[int, int], classes: tuple[str, ...]
) -> PseudoSet:
    """Read and check a pseudo-labelled set against the cache it will train with."""
    folder = Path(folder)
    rerun = "rerun `dvc repro pseudo`"
    meta = read_json(folder / "meta.json", rerun, missing="run `dvc repro pseudo` (or `cloudcli pseudo`) first")
    if "soft" in meta:  # absent: hard labels
        need_keys(meta, {"soft": bool}, folder / "meta.json", rerun)
    try:
        meta_bytes = (folder / "meta.json").read_bytes()
        images = pd.read_csv(folder / "images.csv", dtype={"image_id": str, "test_row": np.int64})
        masks = np.load(folder / "masks.npy", mmap_mode="r")
    except FileNotFoundError as e:
        raise DataError(f"{e.filename}: missing; run `dvc repro pseudo` (or `cloudcli pseudo`) first") from None
    except (ValueError, TypeError) as e:
        raise DataError(f"{folder / 'images.csv'}: unreadable ({e}); rerun `dvc repro pseudo`") from None
    missing = [c for c in ("image_id", "test_row", *classes) if c not in images.columns]
    if missing:
        raise DataError(f"{folder / 'images.csv'}: no column {missing[0]}; rerun `dvc repro pseudo`")
    if masks.shape != (len(images), *mask_size):
        raise DataError(
            f"{folder / 'masks.npy'}: shape {masks.shape}, expected ({len(images)}, {mask_size[0]}, {mask_size[1]}) "
            "(one mask per row of images.csv at preprocess.cache_size); rerun `dvc repro pseudo`"
        )
    rows = images["test_row"].to_numpy()
    known = np.asarray(test_ids, dtype=object)
    bad = (rows < 0) | (rows >= len(known))
    if bad.any() or (known[rows[~bad]] != images["image_id"].to_numpy()[~bad]).any():
        raise DataError(
            f"{folder / 'images.csv'}: test_row does not match the cache's test images; "
            "the cache changed since the labels were made: rerun `dvc repro pseudo`"
        )
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
