"""The data, network and training sections of params.yaml: typed, frozen, checked.

Every key must be present and of the declared type (cloudcli.config.loader builds them strictly);
`__post_init__` checks what one section can check alone. Checks across sections: checks.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from cloudcli import CLASSES
from cloudcli.errors import ConfigError
from cloudcli.names import class_name_problem

Size = tuple[int, int]  # (height, width) in pixels
SEG_LOSSES = ("bce", "kl", "dice", "dice_pos", "focal", "lovasz", "class_head")  # names in cloudcli.models.losses
CLASS_HEAD = "class_head"  # a segmentation loss term that also gives the network a class-presence head
CLASSIFIER_LOSSES = ("bce", "bce_balanced")


SEED_MAX = 2**32 - 1  # numpy's and the samplers' seeds are unsigned 32-bit


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


def _check_range(value: float, key: str, low: float, high: float, closed: str = "[]") -> None:
    """`value` within low..high, each end included ("[") or not ("("); the message names the range."""
    above = low <= value if closed[0] == "[" else low < value
    below = value <= high if closed[1] == "]" else value < high
    _check(above and below, key, f"must be in {closed[0]}{low}, {high}{closed[1]}, got {value}")


def _check_distinct(values: tuple, key: str, example: str) -> None:
    """A non-empty list without repeats (a stage loops over it, dvc.yaml makes a stage of each)."""
    _check(
        len(values) >= 1 and len(set(values)) == len(values),
        key,
        f"must list at least one value, each once, e.g. {example}; got {list(values)}",
    )


@dataclass(frozen=True)
class DataConfig:
    kind: Literal["kaggle_clouds", "chips", "image_mask"]  # raw format (cloudcli.data.sources)
    raw: str  # raw data folder, laid out as its kind says
    raw_size: Size  # (H, W) of every raw image; any other size is an error
    score_size: Size  # (H, W) at which masks are scored and submitted
    classes: tuple[str, ...] | None  # null: the kind's own; image_mask: mask value k is classes[k - 1];
    # dvc.yaml's plots take their series from this list, so params files name the classes
    bands: tuple[str, ...] | None  # chips: band file stems in channel order, e.g. [B02, B03, B04, B08]
    band_percentiles: tuple[float, float]  # 16-bit bands: clipped to these percentiles of training pixels
    nodata: int | None  # a pixel with this value in every band has no data (kept 0); null = none
    metadata: str | None  # CSV in `raw`, one row per training image, read by fold.stratify and fold.group; null = none
    exclude: str | None = None  # labels/<file>: training image ids left out of training, validation and scores

    def __post_init__(self) -> None:
        for key in ("raw_size", "score_size"):
            _check(min(getattr(self, key)) >= 1, f"data.{key}", "must be positive")
        if self.kind == "kaggle_clouds":
            _check(
                self.classes in (None, CLASSES),
                "data.classes",
                f"must be {list(CLASSES)} (or null) for kaggle_clouds, got {list(self.classes or ())}",
            )
        if self.kind == "image_mask":
            _check(
                bool(self.classes), "data.classes", "must name the classes of an image_mask dataset, e.g. [building]"
            )
        if self.classes is not None:
            n = len(self.classes)
            _check(
                1 <= n <= 8 and len(set(self.classes)) == n and all(c and "_" not in c for c in self.classes),
                "data.classes",
                f"must list 1 to 8 distinct names without '_', got {list(self.classes)}",
            )
            for c in self.classes:
                _check(class_name_problem(c) is None, "data.classes", f"{class_name_problem(c)}")
        _check(
            self.kind != "chips" or bool(self.bands),
            "data.bands",
            "must list the band files of a chip, e.g. [B02, B03, B04, B08]",
        )
        low, high = self.band_percentiles
        _check(
            0.0 <= low < high <= 100.0,
            "data.band_percentiles",
            f"must be [low, high] with 0 <= low < high <= 100, got {[low, high]}",
        )
        _check(
            self.metadata is None or _plain_file(self.metadata),
            "data.metadata",
            f"must name a CSV file in data.raw (no folder part, not hidden), e.g. metadata.csv; got {self.metadata!r}",
        )
        if self.nodata is not None:
            _check_range(self.nodata, "data.nodata", 0, 65535)  # a uint8 or uint16 band value
        parts = PurePosixPath(self.exclude or "x").parts
        _check(
            self.exclude is None or (len(parts) == 2 and parts[0] == "labels" and _plain_file(parts[1])),
            "data.exclude",
            f"must name a file in the labels/ folder (dvc.yaml's fold stage depends on that folder, so DVC sees "
            f"an edit), e.g. labels/exclude.txt; got {self.exclude!r}",
        )


@dataclass(frozen=True)
class PreprocessConfig:
    cache_size: Size  # (H, W) the cache stores for training; smp encoders need multiples of 32
    workers: int  # processes decoding JPEGs and RLEs

    def __post_init__(self) -> None:
        h, w = self.cache_size
        _check(
            h % 32 == 0 and w % 32 == 0 and h > 0 and w > 0,
            "preprocess.cache_size",
            f"must be positive multiples of 32 (encoders downsample 32x), got [{h}, {w}]; "
            "e.g. [192, 288] or [384, 576]",
        )
        _check(self.workers >= 1, "preprocess.workers", f"must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class FoldConfig:
    n_splits: int  # K of K-fold cross-validation
    seed: int  # shuffles images (or groups) before the split
    stratify: tuple[str, ...]  # also balanced across folds: data.metadata columns, month, coverage
    group: str | None  # data.metadata column whose groups (e.g. location) each stay in one fold; null = none
    bins: int  # quantile bins of coverage and of numeric metadata columns

    def __post_init__(self) -> None:
        _check(self.n_splits >= 2, "fold.n_splits", f"must be >= 2, got {self.n_splits}")
        _check(self.bins >= 2, "fold.bins", f"must be >= 2, got {self.bins}")
        _check_range(self.seed, "fold.seed", 0, SEED_MAX)
        _check(
            len(set(self.stratify)) == len(self.stratify),
            "fold.stratify",
            f"must list distinct columns, got {list(self.stratify)}",
        )
        _check(
            self.group is None or self.group not in self.stratify,
            "fold.stratify",
            f"lists {self.group!r}, which is fold.group: a group sits whole in one fold, so its share cannot "
            f"be balanced across folds; remove it from fold.stratify",
        )


@dataclass(frozen=True)
class NetworkConfig:
    arch: str  # smp architecture (Unet, FPN, UnetPlusPlus, DeepLabV3Plus, ...); unused by classifiers
    encoder: str  # smp encoder name, or a timm one as "tu-<name>"
    encoder_weights: str | None  # null: random init (offline); "imagenet": downloaded on first use
    freeze_encoder_stages: int  # freeze the first N encoder stages (0 = train everything)

    def __post_init__(self) -> None:
        _check(
            self.freeze_encoder_stages >= 0,
            "network.freeze_encoder_stages",
            f"must be >= 0 (0 = train every stage), got {self.freeze_encoder_stages}",
        )


@dataclass(frozen=True)
class SwaConfig:
    """Checkpoint averaging: exactly one of `epochs` (the last K epochs) and `best` (the K best)."""

    epochs: int | None = None  # average the weights at the end of each of the last K epochs
    best: int | None = None  # average the weights of the K best epochs by the monitored metric

    def __post_init__(self) -> None:
        _check(
            (self.epochs is None) != (self.best is None),
            "train.swa",
            "must set exactly one of epochs (the last K epochs) and best (the K best epochs), e.g. {epochs: 5} "
            "(or null: off)",
        )
        _check(self.k >= 1, f"train.swa.{self.mode}", f"must be >= 1 (epochs averaged), got {self.k}")

    @property
    def mode(self) -> str:
        return "epochs" if self.epochs is not None else "best"

    @property
    def k(self) -> int:
        return self.epochs if self.epochs is not None else self.best


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    input_size: Size | None  # (H, W) fed to the network; null = the cache's preprocess.cache_size
    optimizer: Literal["adam", "adamw", "radam", "sgd"]
    lr: float  # decoder / head learning rate
    encoder_lr_mult: float  # encoder lr = lr * encoder_lr_mult
    weight_decay: float
    momentum: float  # SGD only
    scheduler: Literal["none", "plateau", "cosine", "cosine_restarts", "onecycle"]
    restart_epochs: int  # cosine_restarts: epochs of the first cycle
    plateau_patience: int  # plateau: epochs without improvement before lowering the lr
    plateau_factor: float  # plateau: lr multiplier
    accumulate: int  # gradient accumulation steps
    clip_grad: float  # max gradient norm; 0 = off
    ema: float | None  # EMA decay of the weights (e.g. 0.99); null = off
    swa: SwaConfig | None  # average the weights of K epochs into best.pt; null = off
    precision: Literal["fp32", "bf16", "fp16"]  # autocast dtype on CUDA; CPU always runs fp32
    channels_last: bool
    compile: bool  # torch.compile the model
    device: Literal["auto", "cpu", "cuda", "mps"]
    processes: int  # processes (GPUs) training one model: > 1 runs `cloudcli train` under torchrun (DDP)
    workers: int  # DataLoader worker processes
    seed: int

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "accumulate", "restart_epochs", "processes"):
            _check(getattr(self, key) >= 1, f"train.{key}", f"must be >= 1, got {getattr(self, key)}")
        _check(0 < self.lr < math.inf, "train.lr", f"must be > 0 (and finite), got {self.lr}")
        _check(self.workers >= 0, "train.workers", f"must be >= 0, got {self.workers}")
        for key in ("encoder_lr_mult", "weight_decay", "clip_grad"):
            _check_range(getattr(self, key), f"train.{key}", 0.0, math.inf, "[)")
        _check_range(self.momentum, "train.momentum", 0.0, 1.0, "[)")
        _check_range(self.plateau_factor, "train.plateau_factor", 0.0, 1.0, "()")
        _check(self.plateau_patience >= 0, "train.plateau_patience", f"must be >= 0, got {self.plateau_patience}")
        _check_range(self.seed, "train.seed", 0, SEED_MAX)
        _check(self.ema is None or 0 < self.ema < 1, "train.ema", f"must be in (0, 1) or null, got {self.ema}")
        if self.swa is not None:
            _check(
                self.swa.k <= self.epochs,
                f"train.swa.{self.swa.mode}",
                f"must be <= train.epochs ({self.epochs}): it averages that many epochs, got {self.swa.k}",
            )
        if self.input_size is not None:
            h, w = self.input_size
            _check(
                h % 32 == 0 and w % 32 == 0 and h > 0 < w,
                "train.input_size",
                f"must be positive multiples of 32, got [{h}, {w}]",
            )


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float  # probability of each transform
    vflip: float
    shift_scale_rotate: float
    shift_limit: float  # fraction of the image size
    scale_limit: float  # e.g. 0.1 = zoom in 0.9..1.1
    rotate_limit: float  # degrees
    grid_distortion: float
    brightness_contrast: float
    transpose: float = 0.0  # swap H and W (square inputs only)
    rotate90: float = 0.0  # rotate by 0, 90, 180 or 270 degrees (square inputs only)

    def __post_init__(self) -> None:
        for key in PROBABILITIES:
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, f"augment.{key}", f"must be a probability in [0, 1], got {value}")
        _check_range(self.shift_limit, "augment.shift_limit", 0.0, 1.0)
        _check_range(self.scale_limit, "augment.scale_limit", 0.0, 1.0, "[)")
        _check_range(self.rotate_limit, "augment.rotate_limit", 0.0, 180.0)


PROBABILITIES = (  # the keys of AugmentConfig that are probabilities
    "hflip", "vflip", "shift_scale_rotate", "grid_distortion", "brightness_contrast", "transpose", "rotate90",
)  # fmt: skip


@dataclass(frozen=True)
class ModelEntry:
    role: Literal[
        "seg1", "seg2", "classifier"
    ]  # seg1: empty or not (BCE); seg2: mask shapes (Dice); classifier: gates masks
    loss: dict[str, float]  # loss name -> weight; the weighted sum is minimised
    network: dict = field(default_factory=dict)  # overrides of the `network` section
    train: dict = field(default_factory=dict)  # overrides of the `train` section


@dataclass(frozen=True)
class CvConfig:
    models: tuple[str, ...]  # models (keys of `models`) the pipeline trains
    folds: tuple[int, ...]  # folds trained for each model; a subset makes a quick experiment

    def __post_init__(self) -> None:
        _check_distinct(self.models, "cv.models", "[seg1, seg2]")
        _check_distinct(self.folds, "cv.folds", "[0, 1, 2]")


def _plain_file(name: str) -> bool:
    """A file name without a folder part, not hidden: stays inside the folder it is joined to."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")
