"""Reading what `infer` and `tune` wrote, with errors that say which stage to run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli import CLASSES
from cloudcli.errors import DataError


def _missing(path: Path, stage: str) -> DataError:
    return DataError(f"{path}: missing; run `dvc repro {stage}` (or `cloudcli {stage}`) first")


def read_masks(folder: Path, split: str) -> tuple[list[str], np.ndarray]:
    """(image ids, (N, 4, H, W) uint8 memory map) of a segmentation model's `split` ('oof' or 'test')."""
    try:
        ids = list(pd.read_csv(folder / f"{split}.csv", dtype={"image_id": str})["image_id"])
        return ids, np.load(folder / f"{split}.npy", mmap_mode="r")
    except FileNotFoundError as e:
        raise _missing(Path(e.filename), "infer") from None


def read_classifier(folder: Path, split: str, ids: list[str]) -> np.ndarray:
    """(N, 4) classifier probabilities of `split` for `ids`, in that order."""
    path = folder / f"{split}.csv"
    try:
        table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    except FileNotFoundError:
        raise _missing(path, "infer") from None
    missing = set(ids) - set(table.index)
    if missing:
        raise DataError(f"{path}: no prediction for {len(missing)} images, e.g. {sorted(missing)[0]}; rerun infer")
    return table.loc[ids, list(CLASSES)].to_numpy()


def read_thresholds(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise _missing(path, "tune") from None
