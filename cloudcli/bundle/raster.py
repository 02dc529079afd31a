"""An input opened for reading by windows: its size, bands, georeferencing and no-data value.

TIFFs and chip folders are read through rasterio (GDAL), a window at a time, so a scene of any size
costs the memory of a window; plain images (JPEG, PNG, ...) are decoded whole by OpenCV, as
`preprocess` reads them. A window comes out as `preprocess` makes a training image: (h, w, B)
uint8, 16-bit bands clipped to the bundle's band limits and scaled, no-data pixels 0; with the
mask of the pixels that hold data. No-data is the input's own no-data value where its file has
one, else the bundle's (data.nodata), and a pixel is no-data when every band holds it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from cloudcli.bundle.inputs import TIFF_EXTS, Input
from cloudcli.data.images import imread
from cloudcli.data.sources import IMAGE_EXTS
from cloudcli.data.sources.base import scale_bands
from cloudcli.errors import DataError

GDAL_CACHE_MB = 64  # GDAL's block cache (default: 5% of the RAM) would hold a scene's blocks
COLUMNS = 1024  # columns of a full-width strip read at once


class Raster:
    """One input: `read(y0, y1, x0, x1)` any window, zero-padded (and masked) outside the input."""

    def __init__(self, item: Input, spec: dict) -> None:
        self.item, self.spec = item, spec
        self.crs, self.transform, self.nodata = None, None, spec["nodata"]
        self._array: np.ndarray | None = None
        self._files: list = []
        if item.path.is_dir():
            self._open([item.path / f"{b}.tif" for b in spec["bands"]])
        elif item.path.suffix.lower() in TIFF_EXTS:
            self._open([item.path])
        else:
            self._array = _read_image(item.path, spec["channels"])
            self.shape, self.bands, self.dtype = self._array.shape[:2], self._array.shape[2], self._array.dtype
        self._check()

    @property
    def has_crs(self) -> bool:
        return self.crs is not None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        """((y1-y0, x1-x0, B) uint8 scaled pixels, (y1-y0, x1-x0) bool: holds data) of a window."""
        h, w = self.shape
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
        image = np.zeros((y1 - y0, x1 - x0, self.spec["channels"]), np.uint8)
        valid = np.zeros((y1 - y0, x1 - x0), bool)
        if cy1 > cy0 and cx1 > cx0:
            raw = self._raw(cy0, cy1, cx0, cx1)
            inside = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
            image[inside] = self._scale(raw)
            valid[inside] = True if self.nodata is None else ~(raw == self.nodata).all(-1)
        return image, valid

    def valid(self, y0: int, y1: int) -> np.ndarray:
        """(y1-y0, W) bool: the pixels of rows [y0, y1) that hold data, read a band and a block of
        columns at a time (a scene's full width, without scaling it)."""
        width = self.shape[1]
        out = np.ones((y1 - y0, width), bool)
        if self.nodata is None:
            return out
        for x in range(0, width, COLUMNS):
            raw = self._raw(y0, y1, x, min(x + COLUMNS, width))
            out[:, x : x + COLUMNS] = ~(raw == self.nodata).all(-1)
        return out

    def read_all(self) -> np.ndarray:
        """The whole input, (H, W, B) uint8."""
        return self.read(0, self.shape[0], 0, self.shape[1])[0]

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self) -> Raster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, paths: list[Path]) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        for path in paths:
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    self._files.append(rasterio.open(path))
            except RasterioIOError as e:
                self.close()
                raise DataError(f"{path}: not a readable raster ({str(e)[:160]})") from None
        first = self._files[0]
        shapes = {(f.height, f.width) for f in self._files}
        if len(shapes) > 1:
            raise DataError(f"{self.item.path}: band files of different sizes ({sorted(shapes)})")
        dtypes = {d for f in self._files for d in f.dtypes}
        if len(dtypes) > 1:
            raise DataError(f"{self.item.path}: bands of different types ({sorted(dtypes)})")
        if len(self._files) > 1 and any(f.count != 1 for f in self._files):
            raise DataError(f"{self.item.path}: a chip folder holds one band per file; some hold several")
        self.shape, self.dtype = (first.height, first.width), np.dtype(first.dtypes[0])
        self.bands = sum(f.count for f in self._files)
        self.crs, self.transform = first.crs, first.transform
        if first.nodata is not None:
            self.nodata = first.nodata

    def _check(self) -> None:
        spec, path = self.spec, self.item.path
        if self.bands != spec["channels"]:
            names = ", ".join(spec["bands"]) if spec["bands"] else "RGB" if spec["channels"] == 3 else "bands"
            raise DataError(f"{path}: {self.bands} bands, the bundle's models take {spec['channels']} ({names})")
        if self.dtype != np.uint8 and (self.dtype != np.uint16 or spec["band_limits"] is None):
            trained = "16-bit bands" if spec["band_limits"] is not None else "8-bit images"
            raise DataError(f"{path}: {self.dtype} pixels; the bundle's models were trained on {trained}")
        if min(self.shape) < 1:
            raise DataError(f"{path}: an empty raster ({self.shape[0]}x{self.shape[1]})")

    def _raw(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        if self._array is not None:
            return self._array[y0:y1, x0:x1]
        import rasterio
        from rasterio.errors import RasterioIOError
        from rasterio.windows import Window

        window = Window(x0, y0, x1 - x0, y1 - y0)
        try:
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20):
                parts = [f.read(window=window) for f in self._files]  # (bands, h, w) each
        except RasterioIOError as e:
            raise DataError(f"{self.item.path}: cannot read rows {y0}..{y1} ({str(e)[:160]})") from None
        return np.moveaxis(np.concatenate(parts), 0, -1)

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        if raw.dtype == np.uint8:
            return raw
        return scale_bands(raw, np.asarray(self.spec["band_limits"], np.float64), self.nodata)


class ArrayRaster(Raster):
    """An (H, W, B) uint8 image already in memory and scaled (read_input's output), as a Raster."""

    def __init__(self, image: np.ndarray, spec: dict) -> None:
        self.item, self.spec = Input(Path("<array>"), "<array>"), spec
        self.crs, self.transform, self.nodata, self._files = None, None, None, []
        self._array, self.shape, self.bands, self.dtype = image, image.shape[:2], image.shape[2], image.dtype
        self._check()


def read_input(item: Input, spec: dict) -> np.ndarray:
    """(H, W, B) uint8 of one whole input, scaled as the bundle's training images were."""
    with Raster(item, spec) as raster:
        return raster.read_all()


def _read_image(path: Path, channels: int) -> np.ndarray:
    if path.suffix.lower() not in IMAGE_EXTS:
        raise DataError(f"{path}: not an image file ({', '.join(IMAGE_EXTS)}) nor a chip folder")
    image = imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot read image (empty, damaged or not a {path.suffix} file)")
    if image.ndim == 2:
        return image[..., None]
    if image.shape[2] == 3 and channels == 3 and image.dtype == np.uint8:
        image = imread(path, cv2.IMREAD_COLOR)  # as preprocess reads RGB (EXIF orientation applied)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
