"""params.yaml -> typed, validated, frozen config objects.

Every section of params.yaml is a frozen dataclass below; every key must be present and of the
declared type. An unknown key fails with the closest known key, before any data loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from cloudcli import CLASSES
from cloudcli.errors import ConfigError

Size = tuple[int, int]  # (height, width) in pixels
SEG_LOSSES = ("bce", "kl", "dice", "dice_pos", "focal", "lovasz")  # names in cloudcli.models.losses
CLS_LOSSES = ("bce", "bce_balanced")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


@dataclass(frozen=True)
class DataConfig:
    kind: Literal["kaggle_clouds", "chips", "image_mask"]  # raw format (cloudcli.data.sources)
    raw: str  # raw data folder, laid out as its kind says
    image_size: Size  # (H, W) of every raw image; any other size is an error
    score_size: Size  # (H, W) at which masks are scored and submitted
    classes: tuple[str, ...] | None  # null: the kind's own; image_mask: mask value k is classes[k - 1];
    # dvc.yaml's plots take their series from this list, so params files name the classes
    bands: tuple[str, ...] | None  # chips: band file stems in channel order, e.g. [B02, B03, B04, B08]
    band_percentiles: tuple[float, float]  # 16-bit bands: clipped to these percentiles of training pixels
    nodata: int | None  # a pixel with this value in every band has no data (kept 0); null = none
    metadata: str | None  # CSV in `raw`, one row per training image, read by fold.stratify; null = none

    def __post_init__(self) -> None:
        for key in ("image_size", "score_size"):
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


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: Size  # (H, W) the cache stores for training; smp encoders need multiples of 32
    workers: int  # processes decoding JPEGs and RLEs

    def __post_init__(self) -> None:
        h, w = self.image_size
        _check(
            h % 32 == 0 and w % 32 == 0 and h > 0 and w > 0,
            "preprocess.image_size",
            f"must be positive multiples of 32 (encoders downsample 32x), got [{h}, {w}]; "
            "e.g. [192, 288] or [384, 576]",
        )
        _check(self.workers >= 1, "preprocess.workers", f"must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class FoldConfig:
    n_splits: int  # K of K-fold cross-validation
    seed: int  # shuffles images before the stratified split
    stratify: tuple[str, ...]  # also balanced across folds: data.metadata columns, month, coverage
    bins: int  # quantile bins of coverage and of numeric metadata columns

    def __post_init__(self) -> None:
        _check(self.n_splits >= 2, "fold.n_splits", f"must be >= 2, got {self.n_splits}")
        _check(self.bins >= 2, "fold.bins", f"must be >= 2, got {self.bins}")
        _check(
            len(set(self.stratify)) == len(self.stratify),
            "fold.stratify",
            f"must list distinct columns, got {list(self.stratify)}",
        )


@dataclass(frozen=True)
class ModelConfig:
    arch: str  # smp architecture (Unet, FPN, UnetPlusPlus, DeepLabV3Plus, ...); unused by classifiers
    encoder: str  # smp encoder name, or a timm one as "tu-<name>"
    encoder_weights: str | None  # null: random init (offline); "imagenet": downloaded on first use
    freeze_encoder_stages: int  # freeze the first N encoder stages (0 = train everything)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    image_size: Size | None  # (H, W) fed to the model; null = the cache's preprocess.image_size
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
        _check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _check(self.workers >= 0, "train.workers", f"must be >= 0, got {self.workers}")
        _check(self.ema is None or 0 < self.ema < 1, "train.ema", f"must be in (0, 1) or null, got {self.ema}")
        if self.image_size is not None:
            h, w = self.image_size
            _check(
                h % 32 == 0 and w % 32 == 0 and h > 0 < w,
                "train.image_size",
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


@dataclass(frozen=True)
class ModelEntry:
    role: Literal["seg1", "seg2", "cls"]  # seg1: empty or not (BCE); seg2: mask shapes (Dice); cls: classifier
    loss: dict[str, float]  # loss name -> weight; the weighted sum is minimised
    model: dict = field(default_factory=dict)  # overrides of the `model` section
    train: dict = field(default_factory=dict)  # overrides of the `train` section


@dataclass(frozen=True)
class InferConfig:
    tta: tuple[Literal["none", "hflip", "vflip", "hvflip", "transpose"], ...]  # averaged views
    batch_size: int
    device: Literal["auto", "cpu", "cuda", "mps"]
    precision: Literal["fp32", "bf16", "fp16"]  # autocast on CUDA; CPU runs fp32
    stack_tta: bool  # all TTA views in one forward pass (len(tta) x the batch in memory)

    def __post_init__(self) -> None:
        _check(
            len(self.tta) >= 1 and len(set(self.tta)) == len(self.tta),
            "infer.tta",
            f"must list distinct views, e.g. [none, hflip], got {list(self.tta)}",
        )
        _check(self.batch_size >= 1, "infer.batch_size", f"must be >= 1, got {self.batch_size}")


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
    component_thresholds: tuple[float, ...]  # pixel thresholds at which min_component is searched

    def __post_init__(self) -> None:
        for key in ("min_areas", "min_components"):
            values = list(getattr(self, key))
            _check(len(values) >= 1 and min(values) >= 0, f"tune.{key}", f"must list values >= 0, got {values}")
        _check(
            all(0.0 <= t < 1.0 for t in self.component_thresholds),
            "tune.component_thresholds",
            f"must list probabilities in [0, 1), got {list(self.component_thresholds)}",
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

    def __post_init__(self) -> None:
        _check(
            len(self.models) >= 1,
            "pseudo.models",
            "must name at least one model: dvc.yaml's pseudo_rounds stage waits on their folders. To keep "
            "pseudo labels out of the submission, leave the PL models out of ensemble.members",
        )
        _check(
            len(set(self.models)) == len(self.models),
            "pseudo.models",
            f"must list distinct models, got {list(self.models)}",
        )
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


@dataclass(frozen=True)
class RoundsConfig:
    """Iterative pseudo labelling (stage pseudo_rounds)."""

    rounds: int  # N: rounds 2..N relabel the test set with the previous round's pseudo models
    relabel: dict[str, str]  # base model -> the pseudo model that takes its place from round 2 on

    def __post_init__(self) -> None:
        _check(self.rounds >= 1, "pseudo_rounds.rounds", f"must be >= 1, got {self.rounds}")


@dataclass(frozen=True)
class CvConfig:
    models: tuple[str, ...]  # models (keys of `models`) the pipeline trains
    folds: tuple[int, ...]  # folds trained for each model; a subset makes a quick experiment


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


@dataclass(frozen=True)
class Params:
    data: DataConfig
    preprocess: PreprocessConfig
    fold: FoldConfig
    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig
    models: dict[str, ModelEntry]
    cv: CvConfig
    infer: InferConfig
    pseudo: PseudoConfig
    pseudo_rounds: RoundsConfig
    ensemble: EnsembleConfig
    tune: TuneConfig
    report: ReportConfig


@dataclass(frozen=True)
class ResolvedModel:
    """One model's complete settings: the defaults with its own overrides applied."""

    name: str
    role: str
    loss: dict[str, float]
    model: ModelConfig
    train: TrainConfig


def resolve_model(name: str, defaults: ModelConfig, train: TrainConfig, models: dict[str, ModelEntry]) -> ResolvedModel:
    """Apply `models.<name>` overrides to the shared `model` and `train` sections."""
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(models)}"
        raise ConfigError(f"unknown model {name!r} (not a key of `models` in params.yaml); {hint}")
    entry = models[name]
    known = CLS_LOSSES if entry.role == "cls" else SEG_LOSSES
    for loss, weight in entry.loss.items():
        _check(
            loss in known,
            f"models.{name}.loss",
            f"has unknown loss {loss!r} for role {entry.role}; choose from {', '.join(known)}",
        )
        _check(weight > 0, f"models.{name}.loss.{loss}", f"weight must be > 0, got {weight}")
    _check(bool(entry.loss), f"models.{name}.loss", "must name at least one loss")
    return ResolvedModel(
        name=name,
        role=entry.role,
        loss=entry.loss,
        model=_override(defaults, entry.model, f"models.{name}.model."),
        train=_override(train, entry.train, f"models.{name}.train."),
    )


def _override(base: Any, changes: dict, where: str) -> Any:
    raw = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(base).items()}
    return build(type(base), {**raw, **changes}, where)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    try:
        params = build(Params, raw, "")
        for name in params.models:  # overrides are checked now, not when the model trains
            resolve_model(name, params.model, params.train, params.models)
        for name in (*params.cv.models, *params.pseudo.models):
            resolve_model(name, params.model, params.train, params.models)
        _check_combination(params)
        _check(
            all(0 <= k < params.fold.n_splits for k in params.cv.folds),
            "cv.folds",
            f"must be fold numbers 0..{params.fold.n_splits - 1} (fold.n_splits), got {list(params.cv.folds)}",
        )
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return params


def _check_combination(params: Params) -> None:
    """Models named by ensemble, pseudo and tune exist in the pipeline and have the right role."""
    base, models, pseudo = params.cv.models, params.models, params.pseudo
    segs = [m for m in base if models[m].role != "cls"]
    _check_pseudo(pseudo, base, segs, models)
    _check_rounds(params.pseudo_rounds, pseudo, models)
    every_seg = segs + [m for m in pseudo.models if models[m].role != "cls"]
    for m in params.ensemble.members:
        _check(
            m in every_seg,
            "ensemble.members",
            f"{m!r} is not a segmentation model of cv.models or pseudo.models ({', '.join(every_seg)})",
        )
    tune = params.tune
    _check(
        tune.seg1 in base and models[tune.seg1].role != "cls",
        "tune.seg1",
        f"must be a segmentation model listed in cv.models ({', '.join(segs)}), got {tune.seg1!r}",
    )
    if tune.shape is not None:
        _check(
            tune.shape == "ensemble" or tune.shape in every_seg,
            "tune.shape",
            f"must be ensemble, a segmentation model of cv.models or pseudo.models, or null; got {tune.shape!r}",
        )
    _check_classifier(tune.classifier, "tune.classifier", base, models)
    _check(
        tune.class_score in ("none", "topk") or tune.classifier is not None,
        "tune.class_score",
        f"{tune.class_score} needs tune.classifier; use topk or none, or name a classifier",
    )
    _check(tune.top_k >= 1, "tune.top_k", f"must be >= 1, got {tune.top_k}")
    for m in params.report.models:
        _check(
            m == "ensemble" or m in every_seg,
            "report.models",
            f"{m!r} is not ensemble or a segmentation model of cv.models or pseudo.models ({', '.join(every_seg)})",
        )


def _check_classifier(name: str | None, key: str, base: tuple[str, ...], models: dict) -> None:
    _check(
        name is None or (name in base and models[name].role == "cls"),
        key,
        f"must be a classifier listed in cv.models, or null; got {name!r}",
    )


def _check_pseudo(pseudo: PseudoConfig, base: tuple[str, ...], segs: list[str], models: dict) -> None:
    """Pseudo labels come from base models (cv.models) and train models outside cv.models."""
    for m in pseudo.models:
        _check(
            m not in base,
            "pseudo.models",
            f"{m!r} is also in cv.models; give the pseudo-label variant its own name (e.g. {m}_pl) in `models`",
        )
    _check(
        pseudo.seg1 in segs,
        "pseudo.seg1",
        f"must be a segmentation model of cv.models ({', '.join(segs)}), got {pseudo.seg1!r}",
    )
    for m in pseudo.shape:
        _check(
            m in segs,
            "pseudo.shape",
            f"{m!r} is not a segmentation model of cv.models ({', '.join(segs)}); pseudo labels come from base models",
        )
    _check_classifier(pseudo.classifier, "pseudo.classifier", base, models)
    _check(
        pseudo.rule != "classifier" or pseudo.classifier is not None,
        "pseudo.rule",
        "classifier needs pseudo.classifier; name one, or use rule: pixels",
    )


def _check_rounds(rounds: RoundsConfig, pseudo: PseudoConfig, models: dict) -> None:
    """relabel maps models that make the labels to pseudo models of the same kind."""
    labellers = {pseudo.seg1, *pseudo.shape, pseudo.classifier} - {None}
    for base_model, pl in rounds.relabel.items():
        _check(
            base_model in labellers,
            f"pseudo_rounds.relabel.{base_model}",
            f"{base_model!r} does not make the labels; relabel pseudo.seg1, pseudo.shape or pseudo.classifier "
            f"({', '.join(sorted(labellers))})",
        )
        kind = "classifier" if models[base_model].role == "cls" else "segmentation model"
        _check(
            pl in pseudo.models and (models[pl].role == "cls") == (kind == "classifier"),
            f"pseudo_rounds.relabel.{base_model}",
            f"must name a {kind} of pseudo.models ({', '.join(pseudo.models)}), got {pl!r}",
        )
    _check(
        rounds.rounds == 1 or bool(rounds.relabel),
        "pseudo_rounds.rounds",
        f"{rounds.rounds} rounds need pseudo_rounds.relabel (e.g. {{{pseudo.seg1}: <its pseudo model>}}): "
        "without it every round would keep and label the same images",
    )


def build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a parsed YAML mapping, strictly; `where` prefixes key names."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'top level'} must be a mapping, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{where}{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{where}{key}'{hint}")
    required = {f.name for f in dataclasses.fields(cls) if f.default is f.default_factory is dataclasses.MISSING}
    for name in names:
        if name in required and name not in raw:
            raise ConfigError(f"missing key '{where}{name}'")
    values = {name: _coerce(hints[name], raw[name], f"{where}{name}") for name in names if name in raw}
    try:
        return cls(**values)
    except ConfigError as e:
        if where.startswith("models."):  # a value check inside an override: name the model
            raise ConfigError(f"{where.rstrip('.').rsplit('.', 1)[0]}: {e}") from None
        raise


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {_describe(value)}")
        _, v_type = args or (str, Any)
        return {str(k): v if v_type is Any else _coerce(v_type, v, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list) or (args[-1] is not Ellipsis and len(value) != len(args)):
            n = "a list" if args[-1] is Ellipsis else f"a list of {len(args)} values"
            raise ConfigError(f"{key} must be {n}, got {_describe(value)}")
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        return tuple(_coerce(t, v, f"{key}[{i}]") for i, (t, v) in enumerate(zip(kinds, value)))
    return _scalar(tp, value, key)


def _scalar(tp: type, value: Any, key: str) -> Any:
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {_describe(value)}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    hint = ""
    if tp is float and isinstance(value, str):
        hint = "; YAML reads 5e-4 as a string: write 5.0e-4"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    raise ConfigError(f"{key} must be {names.get(tp, tp.__name__)}, got {_describe(value)}{hint}")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
