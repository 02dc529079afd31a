"""Raw datasets of every kind behind one interface, so the stages do not know the file format.

    kaggle_clouds  train.csv + sample_submission.csv (RLE labels) and train_images/, test_images/
                   JPEGs; the demo adds test_truth.csv. Classes Fish, Flower, Gravel, Sugar.
    chips          one folder per chip with one single-band GeoTIFF per band (On Cloud N:
                   train_features/<chip_id>/B02.tif ...), one single-band label GeoTIFF per chip
                   (train_labels/<chip_id>.tif, 0 = clear, 1 = cloud), test_features/; optional
                   test_labels/ (the demo's hidden truth) and a metadata CSV.
    image_mask     train/images/<id>.<ext> with train/masks/<id>.<ext>, test/images/; optional
                   test/masks/. A mask pixel holds a class index: 0 background, k = classes[k - 1]
                   (a one-class mask may also use 0/255).

A source gives every image as (H, W, B) uint8 (16-bit bands clipped to percentiles of the
training pixels, then scaled) and its masks as (C, H, W) 0/1. Errors name the file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli import CLASSES
from cloudcli.config import DataConfig
from cloudcli.errors import DataError

KINDS = ("kaggle_clouds", "chips", "image_mask")
CHIPS_DIRS = {"train": "train_features", "test": "test_features"}
CHIPS_LABELS = {"train": "train_labels", "test": "test_labels"}
IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
MASK_EXTS = (".png", ".tif", ".tiff", ".bmp")  # lossless only
SAMPLE_IMAGES = 64  # training images whose pixels give the band percentiles


def default_classes(kind: str) -> tuple[str, ...]:
    return {"kaggle_clouds": CLASSES, "chips": ("cloud",)}.get(kind, ())


def classes_of(data: DataConfig) -> tuple[str, ...]:
    """The dataset's classes in channel order: data.classes, or the kind's own when null."""
    return tuple(data.classes or default_classes(data.kind))


@dataclass(frozen=True)
class Source:
    """A raw dataset: ids, and readers of one image or one image's masks at data.image_size."""

    kind: str
    root: Path
    classes: tuple[str, ...]
    image_size: tuple[int, int]
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    has_test_truth: bool  # the demo's hidden test labels are there
    bands: tuple[str, ...] = ()  # chips: band file stems, in channel order
    nodata: int | None = None  # a pixel equal to this in every band has no data (chips)
    limits: np.ndarray | None = None  # (B, 2) low/high per band, for images that are not uint8
    percentiles: tuple[float, float] = (1.0, 99.0)
    rles: pd.DataFrame | None = None  # kaggle_clouds: wide view of train.csv (and test_truth.csv)

    def ids(self, split: str) -> tuple[str, ...]:
        return self.train_ids if split == "train" else self.test_ids

    def raw_image(self, split: str, i: int) -> np.ndarray:
        """(H, W, B) as stored: uint8 or uint16."""
        image_id = self.ids(split)[i]
        if self.kind == "kaggle_clouds":
            from cloudcli.data.kaggle import IMAGE_DIRS, read_image

            return read_image(self.root / IMAGE_DIRS[split] / image_id, self.image_size)
        if self.kind == "chips":
            folder = self.root / CHIPS_DIRS[split] / image_id
            return np.stack([self._band(folder / f"{b}.tif") for b in self.bands], -1)
        return self._image_file(find_file(self.root / split / "images", image_id, IMAGE_EXTS))

    def image(self, split: str, i: int) -> np.ndarray:
        """(H, W, B) uint8: scaled to 0..255 by the band limits unless stored as uint8."""
        raw = self.raw_image(split, i)
        if raw.dtype == np.uint8:
            return raw
        if self.limits is None:
            raise DataError(
                f"{self.root}: {split} image {self.ids(split)[i]} is {raw.dtype}, the first training image 8-bit; "
                "every image of a dataset needs the same bit depth"
            )
        return scale_bands(raw, self.limits, self.nodata)

    def masks(self, split: str, i: int) -> np.ndarray:
        """(C, H, W) uint8 0/1 masks of one image at data.image_size."""
        image_id = self.ids(split)[i]
        if self.kind == "kaggle_clouds":
            from cloudcli.rle import decode

            return np.stack([decode(r, self.image_size) for r in self.rles.loc[image_id, list(self.classes)]])
        if self.kind == "chips":
            path = self.root / CHIPS_LABELS[split] / f"{image_id}.tif"
            return index_to_masks(read_tiff(path, self.image_size, 1)[..., 0], path, len(self.classes))
        path = find_file(self.root / split / "masks", image_id, MASK_EXTS)
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise DataError(f"{path}: cannot read mask (not a PNG/TIFF/BMP image?)")
        if mask.ndim == 3:
            raise DataError(f"{path}: mask has {mask.shape[2]} channels; expected one channel of class indices")
        _check_size(path, mask.shape, self.image_size)
        return index_to_masks(mask, path, len(self.classes))

    def _band(self, path: Path) -> np.ndarray:
        band = read_tiff(path, self.image_size, 1)[..., 0]
        if band.dtype not in (np.uint8, np.uint16):
            raise DataError(f"{path}: band is {band.dtype}; expected uint8 or uint16")
        return band

    def _image_file(self, path: Path) -> np.ndarray:
        if path.suffix.lower() in (".tif", ".tiff"):
            return read_tiff(path, self.image_size)
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DataError(f"{path}: cannot read image (empty or not a valid {path.suffix} file)")
        _check_size(path, image.shape, self.image_size)
        if image.ndim == 2:
            return image[..., None]
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)

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
        """(N, C) share of each training image that each class covers (reads every label; Kaggle:
        sums the RLE run lengths)."""
        pixels = self.image_size[0] * self.image_size[1]
        if self.kind == "kaggle_clouds":
            from cloudcli.rle import parse

            rles = self.rles.loc[list(self.train_ids), list(self.classes)].to_numpy()
            return np.array([[parse(r, self.image_size)[1].sum() if r else 0 for r in row] for row in rles]) / pixels
        n = len(self.classes)
        return np.stack([self.masks("train", i).reshape(n, -1).sum(1) for i in range(len(self.train_ids))]) / pixels

    def presence(self) -> np.ndarray:
        """(N, C) bool: which classes each training image has."""
        if self.kind == "kaggle_clouds":
            from cloudcli.data.kaggle import presence

            return presence(self.rles.loc[list(self.train_ids)])  # the RLEs alone, nothing decoded
        return self.areas() > 0

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


def open_source(data: DataConfig, labels_only: bool = False) -> Source:
    """Check the raw folder's layout for `data.kind` and list its images; nothing is decoded.
    `labels_only`: what the training labels need (Kaggle: train.csv alone; no test images)."""
    root = Path(data.raw)
    if not root.is_dir():
        raise DataError(f"{root}: raw data folder not found (data.raw in params.yaml)")
    common = {"kind": data.kind, "root": root, "classes": classes_of(data), "image_size": tuple(data.image_size)}
    if data.kind == "kaggle_clouds":
        return _kaggle(data, common, labels_only)
    if data.kind == "chips":
        return _chips(data, common)
    return _image_mask(data, common)


def _kaggle(data: DataConfig, common: dict, labels_only: bool) -> Source:
    from cloudcli.data.kaggle import SUBMISSION_CSV, TEST_TRUTH_CSV, TRAIN_CSV, image_paths, read_labels, to_wide

    root = common["root"]
    wide = to_wide(read_labels(root / TRAIN_CSV, data.image_size))  # validates every RLE first
    if labels_only:
        return Source(**common, train_ids=tuple(wide.index), test_ids=(), has_test_truth=False, rles=wide)
    test_ids = tuple(pd.unique(read_labels(root / SUBMISSION_CSV)["image_id"]))
    image_paths(root, "train", list(wide.index)), image_paths(root, "test", list(test_ids))  # all there
    truth = (root / TEST_TRUTH_CSV).is_file()
    rles = wide
    if truth:  # the demo's hidden test labels: one set per test image, none for a training image
        hidden = to_wide(read_labels(root / TEST_TRUTH_CSV, data.image_size))
        missing, shared = set(test_ids) - set(hidden.index), set(hidden.index) & set(wide.index)
        if missing or shared:
            what = f"no labels for {sorted(missing)[0]}" if missing else f"{sorted(shared)[0]} is a training image"
            raise DataError(f"{root / TEST_TRUTH_CSV}: {what}; it must label exactly the test images")
        rles = pd.concat([wide, hidden])
    return Source(**common, train_ids=tuple(wide.index), test_ids=test_ids, has_test_truth=truth, rles=rles)


def _chips(data: DataConfig, common: dict) -> Source:
    root = common["root"]
    ids = {}
    for split, name in CHIPS_DIRS.items():
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found; a chips dataset has {' and '.join(CHIPS_DIRS.values())}/")
        ids[split] = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
        if not ids[split]:
            raise DataError(f"{folder}: no chip folders")
        for chip in ids[split]:
            missing = [b for b in data.bands if not (folder / chip / f"{b}.tif").is_file()]
            if missing:
                raise DataError(
                    f"{folder / chip / (missing[0] + '.tif')}: band file missing (data.bands: {', '.join(data.bands)})"
                )
    labels = root / CHIPS_LABELS["train"]
    missing = [c for c in ids["train"] if not (labels / f"{c}.tif").is_file()]
    if missing:
        raise DataError(f"{labels / (missing[0] + '.tif')}: label missing ({len(missing)} training chips without one)")
    truth = root / CHIPS_LABELS["test"]
    has_truth = truth.is_dir() and all((truth / f"{c}.tif").is_file() for c in ids["test"])
    return Source(
        **common, train_ids=ids["train"], test_ids=ids["test"], has_test_truth=has_truth, bands=tuple(data.bands),
        nodata=data.nodata, percentiles=tuple(data.band_percentiles),
    )  # fmt: skip


def _image_mask(data: DataConfig, common: dict) -> Source:
    root = common["root"]
    ids = {}
    for split in ("train", "test"):
        folder = root / split / "images"
        if not folder.is_dir():
            raise DataError(
                f"{folder}: folder not found; an image_mask dataset has train/images, train/masks, test/images"
            )
        ids[split] = tuple(sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS))
        if not ids[split]:
            raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTS)})")
    masks = root / "train" / "masks"
    for image_id in ids["train"]:
        find_file(masks, image_id, MASK_EXTS)
    truth = root / "test" / "masks"
    has_truth = truth.is_dir() and all(_has_file(truth, i, MASK_EXTS) for i in ids["test"])
    return Source(
        **common, train_ids=ids["train"], test_ids=ids["test"], has_test_truth=has_truth, nodata=data.nodata,
        percentiles=tuple(data.band_percentiles),
    )  # fmt: skip


def _has_file(folder: Path, stem: str, exts: tuple[str, ...]) -> bool:
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
    _check_size(path, array.shape, size)
    if bands is not None and array.shape[2] != bands:
        raise DataError(f"{path}: has {array.shape[2]} bands, expected {bands}")
    return array


def _check_size(path: Path, shape: tuple[int, ...], size: tuple[int, int]) -> None:
    if tuple(shape[:2]) != tuple(size):
        raise DataError(
            f"{path}: raster is {shape[0]}x{shape[1]} (HxW), expected {size[0]}x{size[1]} "
            "(data.image_size in params.yaml; every band and label of a dataset has one size)"
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
