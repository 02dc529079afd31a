"""Georeferencing of predictions: an output raster takes its input's CRS and transform (rasterio).

A chip folder's georeferencing is its first band's. An input without a CRS (a plain PNG or JPEG,
or a TIFF without geo tags) gives an output without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudcli.bundle.inputs import TIFF_EXTS, Input
from cloudcli.errors import DataError


@dataclass(frozen=True)
class Georef:
    crs: object  # rasterio.crs.CRS
    transform: object  # affine.Affine


def georef_of(item: Input, bands: list[str] | None) -> Georef | None:
    """The CRS and transform of an input, or None when it has no CRS."""
    path = item.path / f"{bands[0]}.tif" if item.path.is_dir() and bands else item.path
    if path.suffix.lower() not in TIFF_EXTS:
        return None
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return None if src.crs is None else Georef(src.crs, src.transform)
    except RasterioIOError as e:
        raise DataError(f"{path}: not a readable raster ({e})") from None


def open_uint8_tiff(path: Path, shape: tuple[int, int], count: int, georef: Georef | None, nodata: int | None = None):
    """A uint8 GeoTIFF of `count` bands and (H, W) `shape` opened for writing (deflate), with the
    input's CRS and transform when it had them."""
    import rasterio

    profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": count, "dtype": "uint8"}
    profile |= {"compress": "deflate", "nodata": nodata}
    if georef is not None:
        profile |= {"crs": georef.crs, "transform": georef.transform}
    return rasterio.open(path, "w", **profile)


def write_label_tiff(path: Path, label: np.ndarray, georef: Georef | None) -> None:
    """A (H, W) uint8 label GeoTIFF, with the input's CRS and transform when it had them."""
    with open_uint8_tiff(path, label.shape, 1, georef) as dst:
        dst.write(label, 1)
