"""image_mask: train/images/<id>.<ext> with train/masks/<id>.<ext>, test/images/; optional
test/masks/. A mask pixel holds a class index: 0 background, k = classes[k - 1] (a one-class mask
may also use 0/255). Classes come from data.classes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from cloudcli.config import DataConfig
from cloudcli.data.images import imread
from cloudcli.data.sources.base import (
    IMAGE_EXTS,
    MASK_EXTS,
    Source,
    check_size,
    find_file,
    has_file,
    index_to_masks,
    read_tiff,
)
from cloudcli.errors import DataError
from cloudcli.names import image_id_problem


@dataclass(frozen=True)
class ImageMaskSource(Source):
    kind: ClassVar[str] = "image_mask"
    image_dirs: ClassVar[dict[str, str]] = {"train": "train/images", "test": "test/images"}  # ids are stems

    @classmethod
    def open(cls, data: DataConfig, common: dict, labels_only: bool) -> Source:
        root = common["root"]
        ids = {split: _image_ids(root / folder) for split, folder in cls.image_dirs.items()}
        masks = root / "train" / "masks"
        for image_id in ids["train"]:
            find_file(masks, image_id, MASK_EXTS)
        truth = root / "test" / "masks"
        has_truth = truth.is_dir() and all(has_file(truth, i, MASK_EXTS) for i in ids["test"])
        return cls(
            **common, train_ids=ids["train"], test_ids=ids["test"], has_test_truth=has_truth, nodata=data.nodata,
            percentiles=tuple(data.band_percentiles),
        )  # fmt: skip

    @classmethod
    def image_path(cls, folder: Path, image_id: str) -> Path | None:
        return find_file(folder, image_id, IMAGE_EXTS) if has_file(folder, image_id, IMAGE_EXTS) else None

    def raw_image(self, split: str, i: int) -> np.ndarray:
        path = find_file(self.root / self.image_dirs[split], self.ids(split)[i], IMAGE_EXTS)
        if path.suffix.lower() in (".tif", ".tiff"):
            return read_tiff(path, self.raw_size)
        image = imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"{path}: cannot read image (empty or not a valid {path.suffix} file)")
        check_size(path, image.shape, self.raw_size)
        if image.ndim == 2:
            return image[..., None]
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)

    def masks(self, split: str, i: int) -> np.ndarray:
        path = find_file(self.root / split / "masks", self.ids(split)[i], MASK_EXTS)
        mask = imread(path, cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise DataError(f"{path}: cannot read mask (not a PNG/TIFF/BMP image?)")
        if mask.ndim == 3:
            raise DataError(f"{path}: mask has {mask.shape[2]} channels; expected one channel of class indices")
        check_size(path, mask.shape, self.raw_size)
        return index_to_masks(mask, path, len(self.classes))


def _image_ids(folder: Path) -> tuple[str, ...]:
    """The image stems of one split's images/ folder."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; an image_mask dataset has train/images, train/masks, test/images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    for path in files:
        if problem := image_id_problem(path.stem):
            raise DataError(f"{path}: an image id (the file's stem {path.stem!r}) that {problem}; rename or move it")
    ids = tuple(p.stem for p in files)
    if not ids:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTS)})")
    return ids
