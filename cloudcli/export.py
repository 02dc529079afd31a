"""`cloudcli export-masks`: a Kaggle-format mask CSV -> one label raster per image.

For competitions that score label files rather than RLEs. On Cloud N wants `<chip_id>.tif`,
uint8, 0 clear and 1 cloud, at the chip's full size; a building-footprint task wants a PNG per
tile. A label holds 0 for background and k where class k (classes[k - 1]) is predicted; where the
predicted masks of several classes overlap, the pixel takes the first of them, and the count of
such pixels is reported (independent sigmoids may overlap; one index raster cannot).

A label TIFF takes its image's CRS and transform, as `cloudcli predict` writes them
(cloudcli.bundle.geo), scaled when the label's size differs so that it covers the same ground.
Labels whose image is not found, or has no CRS (JPEG, PNG, a TIFF without geo tags), are written
without geo tags and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile

from cloudcli.bundle.geo import Georef, georef_of, write_label_tiff
from cloudcli.bundle.inputs import Input
from cloudcli.data.cache import resize_mask
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.sources import IMAGE_EXTS, SOURCES
from cloudcli.errors import DataError
from cloudcli.io import atomic_path
from cloudcli.names import image_id_problem
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


@dataclass(frozen=True)
class Images:
    """The images behind a CSV's ids, whose CRS and transform their label TIFFs take."""

    folder: Path
    kind: str  # data.kind: how an id names its image in `folder` (cloudcli.data.sources)
    bands: tuple[str, ...] | None = None  # chips: the band files; a chip's georeferencing is the first's

    def georef(self, image_id: str, size: tuple[int, int]) -> Georef | str:
        """The georeferencing of the image's label at `size` (H, W), or why there is none
        (`not_found`, `no_crs`)."""
        path = SOURCES[self.kind].image_path(self.folder, image_id)
        if path is None:
            return "not_found"
        georef = georef_of(Input(path, image_id), list(self.bands or ()))
        return "no_crs" if georef is None else scaled(georef, path, self.bands, size)


def scaled(georef: Georef, path: Path, bands: tuple[str, ...] | None, size: tuple[int, int]) -> Georef:
    """`georef` of the raster at `path` for a label of `size` (H, W) covering the same ground."""
    import rasterio

    with rasterio.open(path / f"{bands[0]}.tif" if path.is_dir() and bands else path) as src:
        h, w = src.height, src.width  # as georef_of, a chip folder's first band
    if (h, w) == tuple(size):
        return georef
    return replace(georef, transform=georef.transform @ rasterio.Affine.scale(w / size[1], h / size[0]))


def label_names(csv: Path, image_ids: pd.Index, fmt: str) -> list[str]:
    """The label file of each image id; ids that are not file names or share a label file fail."""
    for image_id in image_ids:  # read_labels checked them; kept for ids from elsewhere
        if problem := image_id_problem(image_id):
            raise DataError(f"{csv}: image id {image_id!r} {problem}")
    names, first = [label_name(i, fmt) for i in image_ids], {}
    for image_id, name in zip(image_ids, names):
        if name in first:
            raise DataError(f"{csv}: images {first[name]!r} and {image_id!r} would both be written to {name}")
        first[name] = image_id
    return names


def export_masks(
    csv: Path,
    out: Path,
    classes: tuple[str, ...],
    score_size: tuple[int, int],
    size: tuple[int, int],
    fmt: str,
    force: bool = False,
    images: Images | None = None,
) -> dict:
    """Write one label raster of `size` per image of `csv` (masks at `score_size`, each resized as
    the cache resizes masks) into the folder `out`, replaced whole or not at all; a TIFF takes the
    CRS and transform of its image in `images`. Returns counts (`overlap_pixels` at `size`; TIFFs
    without geo tags as `not_found` and `no_crs`)."""
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if len(classes) > 255:
        raise DataError(f"{len(classes)} classes do not fit a uint8 label")
    if not Path(csv).is_file():
        raise DataError(f"{csv}: file not found; give the Kaggle-format CSV of masks (e.g. submission.csv)")
    if images is not None and not Path(images.folder).is_dir():
        raise DataError(f"--images {images.folder}: folder not found; give the folder of the CSV's images")
    check_out(Path(csv), Path(out), force)
    wide = to_wide(read_labels(csv, score_size, classes), classes)  # checks rows, classes and RLEs
    names = label_names(Path(csv), wide.index, fmt)
    counts = {"overlap_pixels": 0, "not_found": 0, "no_crs": 0}
    with atomic_path(out, is_dir=True) as tmp, progress("export masks", len(names), unit="images") as advance:
        for image_id, name, rles in zip(wide.index, names, wide.to_numpy()):
            label, n = label_raster(np.stack([resize_mask(decode(r, score_size), size) for r in rles]))
            counts["overlap_pixels"] += n
            if fmt == "tif":
                georef = "not_found" if images is None else images.georef(image_id, size)
                if isinstance(georef, str):  # no geo tags: tifffile, as export-masks always wrote them
                    counts[georef] += 1
                    tifffile.imwrite(tmp / name, label)
                else:
                    write_label_tiff(tmp / name, label, georef)
            elif not cv2.imwrite(str(tmp / name), label):
                raise DataError(f"{out / name}: could not write the PNG")
            advance(1)
    return {"images": len(names), "size": list(size), **counts}


def geo_note(done: dict, images: Path) -> str:
    """The summary's note on label TIFFs without geo tags, and why; '' when every one has them."""
    lost, plain = done["not_found"], done["no_crs"]
    if not lost + plain:
        return ""
    if not (lost and plain):
        why = f"not found under {images}" if lost else "their images have no CRS"
        return f"; {lost + plain} without geo tags: {why}"
    return f"; {lost + plain} without geo tags: {lost} not found under {images}, {plain} whose images have no CRS"
