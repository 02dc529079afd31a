"""What `cloudcli predict` reads: image files (JPEG, PNG, ...), multi-band TIFFs, and chip folders
of one TIFF per band (the chips layout, e.g. On Cloud N's `B02.tif` ... `B08.tif`).

Each input becomes (H, W, B) uint8 exactly as `preprocess` makes a training image: 16-bit bands
clipped to the bundle's band limits and scaled, nodata pixels 0, bands in the bundle's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cloudcli.data.sources import IMAGE_EXTS
from cloudcli.data.sources.base import scale_bands
from cloudcli.errors import DataError

TIFF_EXTS = (".tif", ".tiff")


@dataclass(frozen=True)
class Input:
    """One thing to predict: a file, or a chip folder of band files."""

    path: Path
    id: str  # the name outputs carry, as the dataset kind names images (kaggle_clouds: 0011165.jpg; others: the stem)

    @property
    def stem(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


def find_inputs(paths: list[Path], bands: list[str] | None, kind: str = "kaggle_clouds") -> list[Input]:
    """The inputs named on the command line: files as they are; a chip folder (holding every band
    file) as one input; any other folder as its image files and chip folders, sorted by name.
    Each is named as `kind` names images: Kaggle ids keep the file's suffix, the other kinds not."""

    def named(path: Path) -> Input:
        return Input(path, path.name if kind == "kaggle_clouds" or path.is_dir() else path.stem)

    found: list[Input] = []
    for path in paths:
        if path.is_file() or (path.is_dir() and _is_chip(path, bands)):
            found.append(named(path))
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if _is_image(p) or (p.is_dir() and _is_chip(p, bands)))
            if not inside:
                what = f"image files ({', '.join(IMAGE_EXTS)})" + (" or chip folders of band files" if bands else "")
                raise DataError(f"{path}: holds no {what}")
            found += [named(p) for p in inside]
        else:
            raise DataError(f"{path}: no such file or folder")
    ids = [i.id for i in found]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise DataError(f"{twice[0]}: named by two inputs; outputs are named after their inputs, so give each once")
    return found


def read_input(item: Input, spec: dict) -> np.ndarray:
    """(H, W, B) uint8 of one input, scaled as the bundle's training images were."""
    raw = _read_bands(item.path, spec) if item.path.is_dir() else _read_file(item.path, spec["channels"])
    if raw.shape[2] != spec["channels"]:
        raise DataError(
            f"{item.path}: {raw.shape[2]} bands, the bundle's models take {spec['channels']} "
            f"({', '.join(spec['bands']) if spec['bands'] else 'RGB' if spec['channels'] == 3 else 'bands'})"
        )
    if raw.dtype == np.uint8:
        return raw
    if raw.dtype != np.uint16 or spec["band_limits"] is None:
        trained = "16-bit bands" if spec["band_limits"] is not None else "8-bit images"
        raise DataError(f"{item.path}: {raw.dtype} pixels; the bundle's models were trained on {trained}")
    return scale_bands(raw, np.asarray(spec["band_limits"], np.float64), spec["nodata"])


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTS


def _is_chip(folder: Path, bands: list[str] | None) -> bool:
    return bool(bands) and all((folder / f"{b}.tif").is_file() for b in bands)


def _read_file(path: Path, channels: int) -> np.ndarray:
    if path.suffix.lower() in TIFF_EXTS:
        return _read_tiff(path, channels)
    if path.suffix.lower() not in IMAGE_EXTS:
        raise DataError(f"{path}: not an image file ({', '.join(IMAGE_EXTS)}) nor a chip folder")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot read image (empty, damaged or not a {path.suffix} file)")
    if image.ndim == 2:
        return image[..., None]
    if image.shape[2] == 3 and channels == 3 and image.dtype == np.uint8:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # as preprocess reads RGB (EXIF orientation applied)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)


def _read_tiff(path: Path, channels: int) -> np.ndarray:
    import tifffile

    try:
        array = tifffile.imread(path)
    except Exception as e:  # tifffile raises several types for a damaged file
        raise DataError(f"{path}: not a readable TIFF ({type(e).__name__}: {str(e)[:120]})") from None
    if array.ndim == 2:
        return array[..., None]
    if array.ndim == 3 and array.shape[0] == channels and array.shape[2] != channels:
        return np.moveaxis(array, 0, -1)  # stored band by band (planar)
    if array.ndim != 3:
        raise DataError(f"{path}: expected a (H, W) or (H, W, bands) raster, got shape {array.shape}")
    return array


def _read_bands(folder: Path, spec: dict) -> np.ndarray:
    bands = [_read_tiff(folder / f"{b}.tif", 1) for b in spec["bands"]]
    shapes = {b.shape for b in bands}
    if len(shapes) > 1 or next(iter(shapes))[2] != 1:
        raise DataError(f"{folder}: band files of different sizes or several bands each ({sorted(shapes)})")
    return np.concatenate(bands, axis=-1)
