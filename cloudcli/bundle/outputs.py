"""What `cloudcli predict` writes: a Kaggle RLE CSV, or one label raster per input.

rle      one CSV, `Image_Label,EncodedPixels`, a row per input and class (`<input>_<class>`), RLE at
         the scoring size: what `submit` writes, for the inputs given, in their order.
png/tif  a folder with `<input stem>.<png|tif>` per input at the input's own size, uint8: 0
         background, k where class k (classes[k - 1]) is predicted (the first where several are);
         a TIFF takes its input's CRS and transform (cloudcli.bundle.geo).

Nothing is written unless every input was predicted: the outputs appear whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli.bundle.geo import georef_of, write_label_tiff
from cloudcli.bundle.inputs import TIFF_EXTS, Input
from cloudcli.data.cache import resize_mask
from cloudcli.errors import DataError
from cloudcli.export import label_raster
from cloudcli.io import atomic_path, write_csv
from cloudcli.rle import encode

FORMATS = ("auto", "rle", "png", "tif")


def raster_format(item: Input, fmt: str) -> str:
    """png or tif for one input: `auto` keeps TIFF inputs and chip folders TIFF, images PNG."""
    if fmt != "auto":
        return fmt
    return "tif" if item.path.is_dir() or item.path.suffix.lower() in TIFF_EXTS else "png"


Predicted = Iterable[tuple[Input, np.ndarray, tuple[int, int]]]  # (input, (C, H, W) masks, input's (H, W))


def write_rle(out: Path, predicted: Predicted, classes: tuple[str, ...]) -> tuple[int, int]:
    """The RLE CSV of every input's masks; (inputs, non-empty masks)."""
    labels, rles, n = [], [], 0
    for item, masks, _ in predicted:
        labels += [f"{item.id}_{c}" for c in classes]
        rles += [encode(mask) for mask in masks]
        n += 1
    with atomic_path(out) as tmp:
        write_csv(tmp, pd.DataFrame({"Image_Label": labels, "EncodedPixels": rles}))
    return n, sum(map(bool, rles))


def write_rasters(out: Path, predicted: Predicted, fmt: str, bands: list[str] | None = None) -> tuple[int, int, int]:
    """One label raster per input at its own size, a TIFF with the input's CRS and transform when
    it has them; (inputs, pixels where classes overlap, TIFFs written without a CRS)."""
    overlap, n, plain = 0, 0, 0
    with atomic_path(out, is_dir=True) as tmp:
        for item, masks, size in predicted:
            label, clash = label_raster(np.stack([resize_mask(m, tuple(size)) for m in masks]))
            overlap, n = overlap + clash, n + 1
            path = tmp / f"{item.stem}.{raster_format(item, fmt)}"
            if path.exists():
                raise DataError(f"{item.path}: its label file {path.name} is another input's too; rename one")
            if path.suffix == ".tif":
                georef = georef_of(item, bands)
                plain += georef is None
                write_label_tiff(path, label, georef)
            elif not cv2.imwrite(str(path), label):
                raise DataError(f"{path}: could not be written")
    return n, overlap, plain
