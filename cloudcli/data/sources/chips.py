"""chips: one folder per chip with one single-band GeoTIFF per band (On Cloud N:
train_features/<chip_id>/B02.tif ...), one single-band label GeoTIFF per chip
(train_labels/<chip_id>.tif, 0 = clear, 1 = cloud), test_features/; optional test_labels/ (the
demo's hidden truth) and a metadata CSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cloudcli.config import DataConfig
from cloudcli.data.sources.base import Source, index_to_masks, read_tiff
from cloudcli.errors import DataError
from cloudcli.names import image_id_problem

CHIPS_DIRS = {"train": "train_features", "test": "test_features"}
CHIPS_LABELS = {"train": "train_labels", "test": "test_labels"}


@dataclass(frozen=True)
class ChipsSource(Source):
    kind: ClassVar[str] = "chips"
    default_classes: ClassVar[tuple[str, ...]] = ("cloud",)
    image_dirs: ClassVar[dict[str, str]] = CHIPS_DIRS

    @classmethod
    def open(cls, data: DataConfig, common: dict, labels_only: bool) -> Source:
        root = common["root"]
        ids = {split: _chip_ids(root / name, data.bands) for split, name in CHIPS_DIRS.items()}
        labels = root / CHIPS_LABELS["train"]
        missing = [c for c in ids["train"] if not (labels / f"{c}.tif").is_file()]
        if missing:
            raise DataError(
                f"{labels / (missing[0] + '.tif')}: label missing ({len(missing)} training chips without one)"
            )
        truth = root / CHIPS_LABELS["test"]
        has_truth = truth.is_dir() and all((truth / f"{c}.tif").is_file() for c in ids["test"])
        return cls(
            **common, train_ids=ids["train"], test_ids=ids["test"], has_test_truth=has_truth,
            bands=tuple(data.bands), nodata=data.nodata, percentiles=tuple(data.band_percentiles),
        )  # fmt: skip

    @classmethod
    def image_path(cls, folder: Path, image_id: str) -> Path | None:
        path = folder / image_id
        return path if path.is_dir() else None

    def raw_image(self, split: str, i: int) -> np.ndarray:
        folder = self.root / CHIPS_DIRS[split] / self.ids(split)[i]
        return np.stack([self._band(folder / f"{b}.tif") for b in self.bands], -1)

    def masks(self, split: str, i: int) -> np.ndarray:
        path = self.root / CHIPS_LABELS[split] / f"{self.ids(split)[i]}.tif"
        return index_to_masks(read_tiff(path, self.raw_size, 1)[..., 0], path, len(self.classes))

    def _band(self, path: Path) -> np.ndarray:
        band = read_tiff(path, self.raw_size, 1)[..., 0]
        if band.dtype not in (np.uint8, np.uint16):
            raise DataError(f"{path}: band is {band.dtype}; expected uint8 or uint16")
        return band


def _chip_ids(folder: Path, bands: tuple[str, ...]) -> tuple[str, ...]:
    """The chip folders of one split, each checked to hold every band file."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; a chips dataset has {' and '.join(CHIPS_DIRS.values())}/")
    ids = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    if not ids:
        raise DataError(f"{folder}: no chip folders")
    for chip in ids:
        if problem := image_id_problem(chip):
            raise DataError(f"{folder / chip}: a chip id (its folder's name) that {problem}; rename or move it")
        missing = [b for b in bands if not (folder / chip / f"{b}.tif").is_file()]
        if missing:
            raise DataError(
                f"{folder / chip / (missing[0] + '.tif')}: band file missing (data.bands: {', '.join(bands)})"
            )
    return ids
