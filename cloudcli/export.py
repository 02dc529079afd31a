"""`cloudcli export-masks`: a Kaggle-format mask CSV -> one label raster per image.

For competitions that score label files rather than RLEs. On Cloud N wants `<chip_id>.tif`,
uint8, 0 clear and 1 cloud, at the chip's full size; a building-footprint task wants a PNG per
tile. A label holds 0 for background and k where class k (classes[k - 1]) is predicted; where the
predicted masks of several classes overlap, the pixel takes the first of them, and the count of
such pixels is reported (independent sigmoids may overlap; one index raster cannot).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.errors import DataError
from cloudcli.io import atomic_path
from cloudcli.rle import decode
from cloudcli.ui import progress

FORMATS = ("tif", "png")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")  # dropped from an id to name its label file


def label_raster(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """(C, H, W) 0/1 masks -> the (H, W) uint8 label (0 background, k where classes[k - 1] is
    predicted, the first class where several are) and the number of pixels where classes overlap."""
    masks = masks.astype(bool)
    label = np.zeros(masks.shape[1:], np.uint8)
    for k in range(len(masks), 0, -1):  # last to first: the first class is written last and wins
        label[masks[k - 1]] = k
    return label, int((masks.sum(axis=0) > 1).sum())


def label_name(image_id: str, fmt: str) -> str:
    stem = next((image_id[: -len(s)] for s in IMAGE_SUFFIXES if image_id.lower().endswith(s)), image_id)
    return f"{stem}.{fmt}"


def export_masks(
    csv: Path, out: Path, classes: tuple[str, ...], score_size: tuple[int, int], size: tuple[int, int], fmt: str
) -> dict:
    """Write one label raster of `size` per image of `csv` (masks at `score_size`) into the folder
    `out`, replaced whole or not at all; returns counts."""
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if len(classes) > 255:
        raise DataError(f"{len(classes)} classes do not fit a uint8 label")
    wide = to_wide(read_labels(csv, score_size, classes), classes)  # checks rows, classes and RLEs
    names = [label_name(i, fmt) for i in wide.index]
    if len(set(names)) != len(names):
        raise DataError(f"{csv}: two image ids give the same label file name; rename them")
    overlap = 0
    with atomic_path(out, is_dir=True) as tmp, progress("export masks", len(names), unit="images") as advance:
        for name, rles in zip(names, wide.to_numpy()):
            label, n = label_raster(np.stack([decode(r, score_size) for r in rles]))
            overlap += n
            if tuple(size) != tuple(score_size):
                label = cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            if fmt == "tif":
                tifffile.imwrite(tmp / name, label)
            elif not cv2.imwrite(str(tmp / name), label):
                raise DataError(f"{out / name}: could not write the PNG")
            advance(1)
    return {"images": len(names), "size": list(size), "overlap_pixels": overlap}
