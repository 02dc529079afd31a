"""The post-training sections of params.yaml (inference, pseudo labels, ensemble, tune, reports) and `Params`,
the whole file: typed, frozen, checked section by section."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cloudcli.config.schema import (
    AugmentConfig,
    CvConfig,
    DataConfig,
    FoldConfig,
    ModelEntry,
    NetworkConfig,
    PreprocessConfig,
    Size,
    TrainConfig,
    _check,
    _check_distinct,
    _check_range,
)


@dataclass(frozen=True)
class InferConfig:
    tta: tuple[Literal["none", "hflip", "vflip", "hvflip", "transpose"], ...]  # averaged views
    batch_size: int
    device: Literal["auto", "cpu", "cuda", "mps"]
    precision: Literal["fp32", "bf16", "fp16"]  # autocast on CUDA; CPU runs fp32
    stack_tta: bool  # all TTA views in one forward pass (len(tta) x the batch in memory)
    workers: int  # DataLoader worker processes
    fold_test: bool = True  # also each fold model's test probabilities, for leak-free pseudo labels
    fold_models: Literal["auto", "all", "one"] = (
        "auto"  # fold models on the device at once (auto: one if they crowd it)
    )
    scales: tuple[float, ...] = (1.0,)  # input sizes (x the trained size) averaged with the views

    def __post_init__(self) -> None:
        _check(
            len(self.tta) >= 1 and len(set(self.tta)) == len(self.tta),
            "infer.tta",
            f"must list distinct views, e.g. [none, hflip], got {list(self.tta)}",
        )
        _check(self.batch_size >= 1, "infer.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.workers >= 0, "infer.workers", f"must be >= 0, got {self.workers}")
        _check(
            len(self.scales) >= 1 and len(set(self.scales)) == len(self.scales),
            "infer.scales",
            f"must list distinct scales, e.g. [1.0, 1.25], got {list(self.scales)}",
        )
        for scale in self.scales:
            _check_range(scale, "infer.scales", 0.25, 4.0)


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[str, ...]  # segmentation models combined pixel by pixel
    vote: Literal["majority", "mean"]  # majority: members binarised at their own tuned levels; mean: probabilities
    min_votes: int | None  # majority: members that must agree; null = more than half
    weights: tuple[float, ...] | None  # mean: one weight per member; null = equal

    def __post_init__(self) -> None:
        m = len(self.members)
        _check(
            m >= 1 and len(set(self.members)) == m,
            "ensemble.members",
            f"must list distinct models, got {list(self.members)}",
        )
        if self.vote != "majority":
            _check(
                self.min_votes is None,
                "ensemble.min_votes",
                f"applies to vote: majority only; set it to null for {self.vote}",
            )
        if self.vote != "mean":
            _check(
                self.weights is None, "ensemble.weights", f"applies to vote: mean only; set it to null for {self.vote}"
            )
        if self.min_votes is not None:
            _check(
                1 <= self.min_votes <= m,
                "ensemble.min_votes",
                f"must be in 1..{m} (members) or null, got {self.min_votes}",
            )
        if self.weights is not None:
            _check(
                len(self.weights) == m and min(self.weights) >= 0 and sum(self.weights) > 0,
                "ensemble.weights",
                f"must give {m} weights >= 0 (one per member) with a positive sum, or null; got {list(self.weights)}",
            )


@dataclass(frozen=True)
class TuneConfig:
    metric: Literal["dice", "jaccard", "iou_image"]  # maximised: Kaggle Dice, pooled Jaccard (On Cloud N), mean IoU
    seg1: str  # segmentation model deciding empty vs non-empty for each (image, class)
    shape: str | None  # draws the mask where seg1 says non-empty: "ensemble" or a model; null = seg1's own
    classifier: str | None  # classifier gating each mask; null = no classifier
    class_score: Literal["none", "classifier", "topk", "mean"]  # gate: classifier prob, top-k pixels of seg1, mean
    top_k: int  # pixels averaged by the top-k score (at data.score_size)
    at_least_one: bool  # an image left without any mask keeps its most likely class (1st place)
    min_areas: tuple[int, ...]  # candidate min_area values, pixels at data.score_size
    min_components: tuple[int, ...]  # candidate min_component values (0 = no component rule)
    component_thresholds: Literal["all"] | tuple[float, ...]  # where min_component is searched: every level, or these

    def __post_init__(self) -> None:
        for key in ("min_areas", "min_components"):
            values = list(getattr(self, key))
            _check(len(values) >= 1 and min(values) >= 0, f"tune.{key}", f"must list values >= 0, got {values}")
        thresholds = self.component_thresholds
        if thresholds != "all":
            _check(
                len(thresholds) >= 1 and all(0.0 <= t < 1.0 for t in thresholds),
                "tune.component_thresholds",
                f"must be all (every level) or list probabilities in [0, 1), at least one, got {list(thresholds)}",
            )


@dataclass(frozen=True)
class PseudoConfig:
    models: tuple[str, ...]  # models trained on the training part of each fold + the pseudo-labelled test images
    seg1: str  # base model deciding presence; its rule (level x min_area) is fitted on its OOF maps
    shape: tuple[str, ...]  # base models whose majority vote draws the masks; empty: seg1's own mask
    classifier: str | None  # base classifier: the selection rule `classifier` and the gate of each mask
    rule: Literal["classifier", "pixels"]  # which test images are kept (see params.yaml)
    low: float  # classifier: a class is confidently empty below this probability
    high: float  # classifier: ... confidently present above it
    pixel_low: float  # pixels: a pixel is confident below this seg1 probability ...
    pixel_high: float  # ... or above this one
    min_share: float  # pixels: keep an image when more than this share of its pixels (all classes) is confident
    min_areas: tuple[int, ...]  # candidate min_area values of the label rules, pixels at data.score_size
    soft: bool  # train on soft targets (the label models' mean probability) instead of binary masks
    labels: Literal["fold", "mean"] = "fold"  # fold k's set made by the fold-k models (no leak), or by all (leaks)
    sources: tuple[Literal["test", "excluded"], ...] = ("test",)  # candidate images: test, excluded training images

    def __post_init__(self) -> None:
        _check(
            len(set(self.models)) == len(self.models),
            "pseudo.models",
            f"must list distinct models, got {list(self.models)}",
        )
        shape = list(self.shape)
        _check(len(set(shape)) == len(shape), "pseudo.shape", f"must list distinct models, got {shape}")
        for low, high in (("low", "high"), ("pixel_low", "pixel_high")):
            a, b = getattr(self, low), getattr(self, high)
            _check(
                0.0 <= a <= b <= 1.0,
                f"pseudo.{low}",
                f"and pseudo.{high} must satisfy 0 <= {low} <= {high} <= 1, got {a} and {b}",
            )
        _check(0.0 <= self.min_share < 1.0, "pseudo.min_share", f"must be in [0, 1), got {self.min_share}")
        values = list(self.min_areas)
        _check(len(values) >= 1 and min(values) >= 0, "pseudo.min_areas", f"must list values >= 0, got {values}")
        _check_distinct(tuple(self.sources), "pseudo.sources", "[test] or [test, excluded]")


ROUND_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a folder name in models/, predictions/, pseudo/


@dataclass(frozen=True)
class RoundConfig:
    """One round of pseudo labelling (pseudo_rounds.<round>): which models label the test images."""

    after: str  # "base": the base models label; an earlier round: its pseudo models replace those in relabel
    relabel: dict[str, str]  # base model -> the pseudo model (of round `after`) that labels in its place


@dataclass(frozen=True)
class ReportConfig:
    """What `cloudcli report predictions` draws."""

    models: tuple[str, ...]  # "ensemble" (the tuned pipeline submit applies) and/or segmentation models
    worst: int  # out-of-fold images with the lowest Dice drawn as overlays
    test_images: int  # test images drawn with their predicted masks
    tile: Size  # (H, W) of one class's view in an overlay

    def __post_init__(self) -> None:
        for key in ("worst", "test_images"):
            _check(getattr(self, key) >= 0, f"report.{key}", f"must be >= 0, got {getattr(self, key)}")
        _check(min(self.tile) >= 32, "report.tile", f"must be at least [32, 32] pixels, got {list(self.tile)}")
        _check(len(set(self.models)) == len(self.models), "report.models", f"must be distinct, got {list(self.models)}")
        _check(bool(self.models), "report.models", "must name at least one report, e.g. [ensemble]")


@dataclass(frozen=True)
class ReportLabelsConfig:
    """What `cloudcli report labels` ranks and draws: labels the OOF predictions contradict."""

    models: tuple[str, ...]  # segmentation models of cv.models whose OOF maps judge the labels (all must be sure)
    classifier: str | None  # its OOF class probabilities weigh each class's disagreement; null = none
    low: float  # a pixel is confidently without a class below this probability
    high: float  # ... and confidently with it above this one
    rows: int  # most suspect images listed in suspects.csv
    top: int  # of them, the first drawn as overlays

    def __post_init__(self) -> None:
        m = list(self.models)
        _check(len(m) >= 1 and len(set(m)) == len(m), "report_labels.models", f"must list distinct models, got {m}")
        _check(
            0.0 < self.low < self.high < 1.0,
            "report_labels.low",
            f"and report_labels.high must satisfy 0 < low < high < 1, got {self.low} and {self.high}",
        )
        _check(self.rows >= 1, "report_labels.rows", f"must be >= 1, got {self.rows}")
        _check(
            0 <= self.top <= self.rows,
            "report_labels.top",
            f"must be in 0..report_labels.rows ({self.rows}), got {self.top}",
        )


@dataclass(frozen=True)
class Params:
    data: DataConfig
    preprocess: PreprocessConfig
    fold: FoldConfig
    network: NetworkConfig
    train: TrainConfig
    augment: AugmentConfig
    models: dict[str, ModelEntry]
    cv: CvConfig
    infer: InferConfig
    pseudo: PseudoConfig
    pseudo_rounds: dict[str, RoundConfig]  # in order; {} = no pseudo labels
    ensemble: EnsembleConfig
    tune: TuneConfig
    report: ReportConfig
    report_labels: ReportLabelsConfig
