"""Raw datasets of every kind behind one interface, so the stages do not know the file format.

One class per kind (data.kind), in SOURCES:

    kaggle_clouds  kaggle_clouds.py: RLE labels in CSVs, JPEG images (Fish, Flower, Gravel, Sugar)
    chips          chips.py: a folder of single-band GeoTIFFs per chip and a label GeoTIFF (cloud)
    image_mask     image_mask.py: images and class-index masks of the same stem (data.classes)

base.py holds the interface (Source) and the readers and checks the kinds share.
"""

from __future__ import annotations

from pathlib import Path

from cloudcli.config import DataConfig
from cloudcli.data.sources.base import (
    IMAGE_EXTS,
    MASK_EXTS,
    Source,
    find_file,
    index_to_masks,
    read_tiff,
    scale_bands,
)
from cloudcli.data.sources.chips import ChipsSource
from cloudcli.data.sources.image_mask import ImageMaskSource
from cloudcli.data.sources.kaggle_clouds import KaggleCloudsSource
from cloudcli.errors import ConfigError, DataError

SOURCES: dict[str, type[Source]] = {s.kind: s for s in (KaggleCloudsSource, ChipsSource, ImageMaskSource)}
KINDS = tuple(SOURCES)

__all__ = [
    "IMAGE_EXTS",
    "KINDS",
    "MASK_EXTS",
    "SOURCES",
    "Source",
    "classes_of",
    "default_classes",
    "find_file",
    "index_to_masks",
    "open_source",
    "read_tiff",
    "scale_bands",
]


def default_classes(kind: str) -> tuple[str, ...]:
    """The kind's own classes (empty for image_mask: data.classes names them)."""
    return SOURCES[kind].default_classes if kind in SOURCES else ()


def classes_of(data: DataConfig) -> tuple[str, ...]:
    """The dataset's classes in channel order: data.classes, or the kind's own when null."""
    return tuple(data.classes or default_classes(data.kind))


def open_source(data: DataConfig, labels_only: bool = False) -> Source:
    """Check the raw folder's layout for `data.kind` and list its images; nothing is decoded.
    `labels_only`: what the training labels need (Kaggle: train.csv alone; no test images)."""
    root = Path(data.raw)
    if not root.is_dir():
        raise DataError(f"{root}: raw data folder not found (data.raw in params.yaml)")
    if data.kind not in SOURCES:
        raise ConfigError(f"data.kind: unknown dataset kind {data.kind!r}; choose from {', '.join(SOURCES)}")
    common = {"root": root, "classes": classes_of(data), "raw_size": tuple(data.raw_size)}
    return SOURCES[data.kind].open(data, common, labels_only)
