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

from cloudcli.data.cache import resize_mask
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.sources import IMAGE_EXTS
from cloudcli.errors import DataError
from cloudcli.io import atomic_path
from cloudcli.rle import decode
from cloudcli.ui import progress

FORMATS = ("tif", "png")


def label_raster(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """(C, H, W) 0/1 masks -> the (H, W) uint8 label (0 background, k where classes[k - 1] is
    predicted, the first class where several are) and the number of pixels where classes overlap."""
    masks = masks.astype(bool)
    label = np.zeros(masks.shape[1:], np.uint8)
    for k in range(len(masks), 0, -1):  # last to first: the first class is written last and wins
        label[masks[k - 1]] = k
    return label, int((masks.sum(axis=0) > 1).sum())


def label_name(image_id: str, fmt: str) -> str:
    """The label file of an image: its id without an image suffix (0011165.jpg -> 0011165.tif)."""
    stem = next((image_id[: -len(s)] for s in IMAGE_EXTS if image_id.lower().endswith(s)), image_id)
    return f"{stem}.{fmt}"


def check_out(csv: Path, out: Path, force: bool) -> None:
    """`out` is replaced whole: refuse a folder holding the CSV or the working folder, and any
    existing folder unless `force`."""
    target, here = out.resolve(), Path.cwd().resolve()
    if target == here or target in here.parents or target in csv.resolve().parents:
        raise DataError(f"--out {out}: would replace a folder holding {csv} or the working folder; name a new folder")
    if out.exists() and not force:
        raise DataError(f"--out {out}: already exists; pass --force to replace it (its files are removed)")


def export_masks(
    csv: Path,
    out: Path,
    classes: tuple[str, ...],
    score_size: tuple[int, int],
    size: tuple[int, int],
    fmt: str,
    force: bool = False,
) -> dict:
    """Write one label raster of `size` per image of `csv` (masks at `score_size`, each resized as
    the cache resizes masks) into the folder `out`, replaced whole or not at all; returns counts
    (`overlap_pixels` at `size`)."""
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if len(classes) > 255:
        raise DataError(f"{len(classes)} classes do not fit a uint8 label")
    if not Path(csv).is_file():
        raise DataError(f"{csv}: file not found; give the Kaggle-format CSV of masks (e.g. submission.csv)")
    check_out(Path(csv), Path(out), force)
    wide = to_wide(read_labels(csv, score_size, classes), classes)  # checks rows, classes and RLEs
    bad = [i for i in wide.index if "/" in i or "\\" in i or i.startswith(".")]
    if bad:
        raise DataError(f"{csv}: image id {bad[0]!r} is not a file name (no '/', '\\' or leading '.')")
    names = [label_name(i, fmt) for i in wide.index]
    first = {}
    for image_id, name in zip(wide.index, names):
        if name in first:
            raise DataError(f"{csv}: images {first[name]!r} and {image_id!r} would both be written to {name}")
        first[name] = image_id
    overlap = 0
    with atomic_path(out, is_dir=True) as tmp, progress("export masks", len(names), unit="images") as advance:
        for name, rles in zip(names, wide.to_numpy()):
            masks = np.stack([resize_mask(decode(r, score_size), size) for r in rles])
            label, n = label_raster(masks)
            overlap += n
            if fmt == "tif":
                tifffile.imwrite(tmp / name, label)
            elif not cv2.imwrite(str(tmp / name), label):
                raise DataError(f"{out / name}: could not write the PNG")
            advance(1)
    return {"images": len(names), "size": list(size), "overlap_pixels": overlap}
