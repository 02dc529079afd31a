"""The interface every dataset kind implements, and the readers and checks the kinds share.

A source gives every image as (H, W, B) uint8 (16-bit bands clipped to percentiles of the
training pixels, then scaled) and its masks as (C, H, W) 0/1. Errors name the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from cloudcli.config import DataConfig
from cloudcli.errors import DataError

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")  # lossless only
SAMPLE_IMAGES = 64  # training images whose pixels give the band percentiles


@dataclass(frozen=True)
class Source:
    """A raw dataset: ids, and readers of one image or one image's masks at data.raw_size.

    One subclass per kind implements `open`, `raw_image` and `masks`; the rest is shared."""

    kind: ClassVar[str]  # the data.kind that selects the subclass
    default_classes: ClassVar[tuple[str, ...]] = ()  # the classes when data.classes is null
    image_dirs: ClassVar[dict[str, str]]  # split -> the folder in data.raw holding its images

    root: Path
    classes: tuple[str, ...]
    raw_size: tuple[int, int]
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    has_test_truth: bool  # the demo's hidden test labels are there
    bands: tuple[str, ...] = ()  # chips: band file stems, in channel order
    nodata: int | None = None  # a pixel equal to this in every band has no data (chips)
    limits: np.ndarray | None = None  # (B, 2) low/high per band, for images that are not uint8
    percentiles: tuple[float, float] = (1.0, 99.0)

    @classmethod
    def open(cls, data: DataConfig, common: dict, labels_only: bool) -> Source:
        """Check the raw folder's layout and list its images; nothing is decoded. `common`: the
        fields every kind shares (root, classes, raw_size)."""
        raise NotImplementedError

    def raw_image(self, split: str, i: int) -> np.ndarray:
        """(H, W, B) as stored: uint8 or uint16."""
        raise NotImplementedError

    def masks(self, split: str, i: int) -> np.ndarray:
        """(C, H, W) uint8 0/1 masks of one image at data.raw_size."""
        raise NotImplementedError

    @classmethod
    def image_path(cls, folder: Path, image_id: str) -> Path | None:
        """The file of an image in a folder of images (chips: its folder of band files); None if absent."""
        path = folder / image_id
        return path if path.is_file() else None

    def ids(self, split: str) -> tuple[str, ...]:
        return self.train_ids if split == "train" else self.test_ids

    def image(self, split: str, i: int) -> np.ndarray:
        """(H, W, B) uint8: scaled to 0..255 by the band limits unless stored as uint8."""
        return self.image_and_valid(split, i)[0]

    def image_and_valid(self, split: str, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image as `image` gives it, (H, W) uint8 1 where the pixel has data, 0 where every band
        holds data.nodata); the second is None when data.nodata is null. One read of the raw image."""
        raw = self.raw_image(split, i)
        valid = None if self.nodata is None else (~_nodata(raw, self.nodata)).astype(np.uint8)
        return self._scaled(raw, split, i), valid

    def _scaled(self, raw: np.ndarray, split: str, i: int) -> np.ndarray:
        if raw.dtype == np.uint8:
            return raw
        if self.limits is None:
            raise DataError(
                f"{self.root}: {split} image {self.ids(split)[i]} is {raw.dtype}, the first training image 8-bit; "
                "every image of a dataset needs the same bit depth"
            )
        return scale_bands(raw, self.limits, self.nodata)

    def fit_limits(self) -> Source:
        """The source with (B, 2) band limits: percentiles of up to SAMPLE_IMAGES training images'
        pixels (nodata pixels left out). uint8 images need none."""
        n = len(self.train_ids)
        picks = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_IMAGES)).round().astype(int))
        first = self.raw_image("train", int(picks[0]))
        if first.dtype == np.uint8:
            return self
        pixels = []
        for i in picks:
            raw = self.raw_image("train", int(i)).reshape(-1, first.shape[-1])[::7]  # a stride keeps it small
            pixels.append(raw[~_nodata(raw, self.nodata)])
        pixels = np.concatenate(pixels)
        if not len(pixels):
            raise DataError(f"{self.root}: every sampled training pixel is nodata ({self.nodata}); check data.nodata")
        limits = np.percentile(pixels, self.percentiles, axis=0).T.astype(np.float64)  # (B, 2)
        limits[:, 1] = np.maximum(limits[:, 1], limits[:, 0] + 1)
        return replace(self, limits=limits)

    def areas(self) -> np.ndarray:
        """(N, C) share of each training image that each class covers (reads every label)."""
        pixels = self.raw_size[0] * self.raw_size[1]
        n = len(self.classes)
        return np.stack([self.masks("train", i).reshape(n, -1).sum(1) for i in range(len(self.train_ids))]) / pixels

    def presence(self) -> np.ndarray:
        """(N, C) bool: which classes each training image has."""
        return self.areas() > 0

    def presence_and_areas(self, need_areas: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """((N, C) presence, (N, C) areas or None): the areas come along where presence reads them
        anyway; otherwise only when `need_areas`."""
        areas = self.areas()
        return areas > 0, areas

    def find(self, image_id: str) -> tuple[str, int] | None:
        """(split, row) of an image id (Kaggle: with or without .jpg); None if unknown."""
        for split in ("train", "test"):
            ids = self.ids(split)
            for candidate in (image_id, f"{image_id}.jpg"):
                if candidate in ids:
                    return split, ids.index(candidate)
        return None

    def rgb(self, split: str, i: int) -> np.ndarray:
        """(H, W, 3) uint8 for display: RGB; chips: B04, B03, B02 when there (else the first three
        bands); a single band as grey."""
        image = self.image(split, i)
        if image.shape[2] < 3:  # one band as grey; two: the first again as blue
            return np.concatenate([image, image[..., :1], image[..., :1]], 2)[..., :3]
        names = list(self.bands)
        if {"B04", "B03", "B02"} <= set(names):
            return image[..., [names.index(b) for b in ("B04", "B03", "B02")]]
        return np.ascontiguousarray(image[..., :3])

    def with_limits(self, limits: list | None) -> Source:
        """The source with band limits as preprocess fitted them (cache meta.json band_limits)."""
        return self if limits is None else replace(self, limits=np.asarray(limits, np.float64))


def has_file(folder: Path, stem: str, exts: tuple[str, ...]) -> bool:
    return any((folder / f"{stem}{e}").is_file() for e in exts)


def find_file(folder: Path, stem: str, exts: tuple[str, ...]) -> Path:
    for ext in exts:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    raise DataError(f"{folder / stem}.*: file missing (looked for {', '.join(exts)}); every image needs one")


def read_tiff(path: Path, size: tuple[int, int], bands: int | None = None) -> np.ndarray:
    """(H, W, B) array of a TIFF; fails naming the file if unreadable or of the wrong size or band count."""
    import tifffile

    try:
        array = tifffile.imread(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as e:  # tifffile raises several types for a damaged file
        raise DataError(f"{path}: not a readable TIFF ({type(e).__name__}: {str(e)[:120]})") from None
    array = array[..., None] if array.ndim == 2 else array
    if array.ndim != 3:
        raise DataError(f"{path}: expected a (H, W) or (H, W, bands) raster, got shape {array.shape}")
    check_size(path, array.shape, size)
    if bands is not None and array.shape[2] != bands:
        raise DataError(f"{path}: has {array.shape[2]} bands, expected {bands}")
    return array


def check_size(path: Path, shape: tuple[int, ...], size: tuple[int, int]) -> None:
    if tuple(shape[:2]) != tuple(size):
        raise DataError(
            f"{path}: raster is {shape[0]}x{shape[1]} (HxW), expected {size[0]}x{size[1]} "
            "(data.raw_size in params.yaml; every band and label of a dataset has one size)"
        )


def index_to_masks(mask: np.ndarray, path: Path, n_classes: int) -> np.ndarray:
    """(H, W) class-index mask -> (C, H, W) 0/1; values outside 0..C (or 0/255 for one class) fail."""
    values = np.unique(mask)
    if n_classes == 1 and set(values.tolist()) <= {0, 255}:
        mask = (mask == 255).astype(np.uint8)
    elif values.min() < 0 or values.max() > n_classes:
        bad = [int(v) for v in values if not 0 <= v <= n_classes][:5]
        allowed = "{0, 1} (or {0, 255})" if n_classes == 1 else f"0..{n_classes} (0 = background)"
        raise DataError(f"{path}: label values {bad} outside {allowed} for {n_classes} class(es) (data.classes)")
    return np.stack([(mask == k + 1) for k in range(n_classes)]).astype(np.uint8)


def scale_bands(raw: np.ndarray, limits: np.ndarray, nodata: int | None) -> np.ndarray:
    """(H, W, B) raw values -> uint8: each band clipped to its (low, high) and mapped to 0..255;
    nodata pixels become 0."""
    low, high = limits[:, 0], limits[:, 1]
    scaled = (raw.astype(np.float64) - low) * 255.0 / (high - low)
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    out[_nodata(raw, nodata).reshape(raw.shape[:2])] = 0
    return out


def _nodata(pixels: np.ndarray, nodata: int | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(pixels.shape[:-1], bool)
    return (pixels == nodata).all(-1)
