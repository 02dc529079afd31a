"""What `cloudcli predict` writes: a Kaggle RLE CSV, or one label raster per input (and optionally
its probabilities and polygons).

rle      one CSV, `Image_Label,EncodedPixels`, a row per input and class (`<input>_<class>`), RLE at
         the scoring size: what `submit` writes, for the inputs given, in their order. Inputs of
         the training size only.
png/tif  a folder with `<input stem>.<png|tif>` per input at the input's own size, uint8: 0
         background, k where class k (classes[k - 1]) is predicted (the first where several are),
         255 where the input holds no data. A TIFF takes its input's CRS and transform and
         declares 255 its no-data value; it is written a row of cells at a time.
--probs  `<stem>_probs.tif`: seg1's probabilities, a uint8 band per class (round(p * 255)), at the
         input's size, with the input's georeferencing and its no-data pixels masked.
--vector `<stem>.geojson`: the label raster's polygons, one feature per connected region of a
         class (property `class`, `area_px`), in the input's CRS (pixel coordinates without one),
         regions under `min_area` input pixels left out.

Nothing is written unless every input was predicted: the outputs appear whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli.bundle.geo import Georef, open_uint8_tiff
from cloudcli.bundle.inputs import TIFF_EXTS, Input
from cloudcli.bundle.raster import Raster
from cloudcli.bundle.scene import Strip
from cloudcli.data.cache import resize_mask
from cloudcli.data.images import imread
from cloudcli.errors import DataError
from cloudcli.export import label_raster
from cloudcli.io import atomic_path, write_csv
from cloudcli.rle import encode

FORMATS = ("auto", "rle", "png", "tif")
NODATA = 255  # the label of a pixel without data

Predicted = Iterable[tuple[Input, Raster, Iterable[Strip]]]


def raster_format(item: Input, fmt: str) -> str:
    """png or tif for one input: `auto` keeps TIFF inputs and chip folders TIFF, images PNG."""
    if fmt != "auto":
        return fmt
    return "tif" if item.path.is_dir() or item.path.suffix.lower() in TIFF_EXTS else "png"


def write_rle(out: Path, predicted: Predicted, classes: tuple[str, ...]) -> tuple[int, int]:
    """The RLE CSV of every input's masks; (inputs, non-empty masks)."""
    labels, rles, n = [], [], 0
    for item, _, strips in predicted:
        (strip,) = strips  # an input of the training size: one strip, the whole image
        labels += [f"{item.id}_{c}" for c in classes]
        rles += [encode(mask) for mask in strip.masks]
        n += 1
    with atomic_path(out) as tmp:
        write_csv(tmp, pd.DataFrame({"Image_Label": labels, "EncodedPixels": rles}))
    return n, sum(map(bool, rles))


def write_rasters(
    out: Path,
    predicted: Predicted,
    fmt: str,
    classes: tuple[str, ...],
    probs: bool = False,
    vector: int | None = None,
    seg1: str = "seg1",
) -> dict[str, int]:
    """Each input's label raster (and probabilities, polygons) in the folder `out`; counts of inputs,
    pixels where classes overlap, TIFFs without a CRS, no-data pixels and polygons."""
    counts = dict.fromkeys(("inputs", "overlap", "plain", "nodata", "polygons"), 0)
    with atomic_path(out, is_dir=True) as tmp:
        for item, raster, strips in predicted:
            path = tmp / f"{item.stem}.{raster_format(item, fmt)}"
            if path.exists():
                raise DataError(f"{item.path}: its label file {path.name} is another input's too; rename one")
            with Writer(path, raster, len(classes) if probs else 0, seg1) as writer:
                for strip in strips:
                    writer.write(strip)
            counts["inputs"] += 1
            counts["overlap"] += writer.overlap
            counts["nodata"] += writer.nodata
            counts["plain"] += path.suffix == ".tif" and not raster.has_crs
            if vector is not None:
                counts["polygons"] += write_polygons(path, tmp / f"{item.stem}.geojson", raster, classes, vector)
    return counts


class Writer:
    """One input's label raster (and probabilities), written a strip at a time."""

    def __init__(self, path: Path, raster: Raster, probs: int, seg1: str = "seg1") -> None:
        """`probs`: the number of classes whose probabilities to write beside the label (0: none)."""
        self.path, self.raster, self.seg1 = path, raster, seg1
        self.height, self.width = raster.shape
        self.overlap = self.nodata = 0
        self.label = np.zeros(raster.shape, np.uint8) if path.suffix == ".png" else None
        self.files = {}
        if path.suffix == ".tif":
            self.files["label"] = _open_tiff(path, raster, 1, NODATA if raster.nodata is not None else None)
        if probs:
            self.files["probs"] = _open_tiff(path.with_name(f"{path.stem}_probs.tif"), raster, probs, None)

    def write(self, strip: Strip) -> None:
        from rasterio.windows import Window

        (y0, y1), size = strip.rows, (strip.rows[1] - strip.rows[0], self.width)
        label, clash = label_raster(np.stack([resize_mask(m, size) for m in strip.masks]))
        self.overlap += clash
        valid = self.raster.valid(y0, y1) if self.raster.nodata is not None else None
        if valid is not None:
            label[~valid] = NODATA
            self.nodata += int((~valid).sum())
        window = Window(0, y0, self.width, y1 - y0)
        if self.label is not None:
            self.label[y0:y1] = label
        else:
            self.files["label"].write(label, 1, window=window)
        if "probs" in self.files:
            probs = self.files["probs"]
            maps = np.stack([cv2.resize(p, size[::-1], interpolation=cv2.INTER_LINEAR) for p in strip.maps[self.seg1]])
            probs.write(maps, window=window)
            if valid is not None:
                probs.write_mask(valid.astype(np.uint8) * 255, window=window)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.files.values():
            f.close()
        if exc[0] is None and self.label is not None and not cv2.imwrite(str(self.path), self.label):
            raise DataError(f"{self.path}: could not be written")


def _open_tiff(path: Path, raster: Raster, count: int, nodata: int | None):
    """A uint8 GeoTIFF of `count` bands the size of `raster`, with its CRS and transform when it has them."""
    georef = Georef(raster.crs, raster.transform) if raster.has_crs else None
    return open_uint8_tiff(path, raster.shape, count, georef, nodata)


def write_polygons(label_path: Path, out: Path, raster: Raster, classes: tuple[str, ...], min_area: int) -> int:
    """The label raster's regions as GeoJSON polygons in the input's CRS; how many were written."""
    import rasterio
    from affine import Affine
    from rasterio.features import shapes

    if label_path.suffix == ".png":
        label = imread(label_path, cv2.IMREAD_UNCHANGED)
    else:
        with rasterio.open(label_path) as src:
            label = src.read(1)
    transform = raster.transform if raster.has_crs else Affine.identity()
    features = []
    for geometry, value in shapes(
        label, mask=(label > 0) & (label != NODATA), connectivity=8, transform=Affine.identity()
    ):
        area = _area(geometry["coordinates"])
        if area >= min_area:
            rings = [[list(transform @ tuple(p)) for p in ring] for ring in geometry["coordinates"]]
            properties = {"class": classes[int(value) - 1], "area_px": round(area)}
            features.append(
                {"type": "Feature", "properties": properties, "geometry": {"type": "Polygon", "coordinates": rings}}
            )
    collection = {"type": "FeatureCollection", "features": features}
    if raster.has_crs:
        collection["crs"] = {"type": "name", "properties": {"name": raster.crs.to_string()}}
    out.write_text(json.dumps(collection))
    return len(features)


def _area(rings: list) -> float:
    """Area of a polygon (exterior ring, then holes) by the shoelace formula."""

    def shoelace(ring: list) -> float:
        xy = np.asarray(ring, np.float64)
        return 0.5 * abs(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))

    return shoelace(rings[0]) - sum(shoelace(r) for r in rings[1:])
