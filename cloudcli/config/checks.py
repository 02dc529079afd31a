"""Checks across sections: the models that pseudo, ensemble, tune and the reports name exist in the
pipeline and have the right role; the augmentations suit the input sizes and the TTA views."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from cloudcli.config.schema import CLASS_HEAD, AugmentConfig, Size, _check
from cloudcli.config.schema_post import ROUND_NAME, InferConfig, Params, PseudoConfig, RoundConfig
from cloudcli.errors import ConfigError
from cloudcli.names import model_name_problem


def _check_combination(params: Params) -> None:
    """Models named by ensemble, pseudo and tune exist in the pipeline and have the right role."""
    base, models, pseudo = params.cv.models, params.models, params.pseudo
    segs = [m for m in base if models[m].role != "classifier"]
    _check_pseudo(pseudo, base, segs, models)
    _check(
        "excluded" not in pseudo.sources or params.data.exclude is not None,
        "pseudo.sources",
        "lists excluded, but data.exclude is null: name the list of training images to relabel "
        "(data.exclude: labels/<file>), or set pseudo.sources: [test]",
    )
    _check_rounds(params.pseudo_rounds, pseudo, models)
    # predictions by name: a base model, or <pseudo model>@<round>
    every_seg = segs + [
        f"{m}@{r}" for r in params.pseudo_rounds for m in pseudo.models if models[m].role != "classifier"
    ]
    for m in params.ensemble.members:
        _check(
            m in every_seg,
            "ensemble.members",
            f"{m!r} is not a segmentation model of cv.models or <pseudo model>@<round> ({', '.join(every_seg)})",
        )
    tune = params.tune
    _check(
        tune.seg1 in base and models[tune.seg1].role != "classifier",
        "tune.seg1",
        f"must be a segmentation model listed in cv.models ({', '.join(segs)}), got {tune.seg1!r}",
    )
    if tune.shape is not None:
        _check(
            tune.shape == "ensemble" or tune.shape in every_seg,
            "tune.shape",
            "must be ensemble, a segmentation model of cv.models or <pseudo model>@<round>, or null; "
            f"got {tune.shape!r}",
        )
    _check_classifier(tune.classifier, "tune.classifier", base, models)
    _check(
        tune.class_score in ("none", "topk") or tune.classifier is not None,
        "tune.class_score",
        f"{tune.class_score} needs tune.classifier; use topk or none, or name a classifier",
    )
    _check(tune.top_k >= 1, "tune.top_k", f"must be >= 1, got {tune.top_k}")
    _check_reports(params, segs, every_seg)


def _check_reports(params: Params, segs: list[str], every_seg: list[str]) -> None:
    """The reports name ensemble, segmentation models (report_labels: base ones) and a classifier."""
    for m in params.report.models:
        _check(
            m == "ensemble" or m in every_seg,
            "report.models",
            f"{m!r} is not ensemble or a segmentation model of cv.models or <pseudo model>@<round> "
            f"({', '.join(every_seg)})",
        )
    labels = params.report_labels
    for m in labels.models:
        _check(
            m in segs,
            "report_labels.models",
            f"{m!r} is not a segmentation model of cv.models ({', '.join(segs)}); its OOF maps judge the labels",
        )
    _check_classifier(labels.classifier, "report_labels.classifier", params.cv.models, params.models)


def check_names(params: Params) -> None:
    """Model names become folders and shell words: each a plain name (cloudcli.names)."""
    for name in params.models:
        problem = model_name_problem(name)
        _check(problem is None, "models:", f"{problem}")


def report_names(params: Params, requested: list[str] | None) -> list[str]:
    """The reports `cloudcli report predictions --model` asks for (report.models when none): each
    ensemble or a segmentation model of cv.models or <pseudo model>@<round>."""
    names = list(requested) if requested else list(params.report.models)
    models = params.models
    every = [m for m in params.cv.models if models[m].role != "classifier"]
    every += [f"{m}@{r}" for r in params.pseudo_rounds for m in params.pseudo.models if models[m].role != "classifier"]
    for name in names:
        if name != "ensemble" and name not in every:
            raise ConfigError(
                f"--model {name!r}: not ensemble or a segmentation model of cv.models or <pseudo model>@<round> "
                f"({', '.join(every)})"
            )
    return names


def _check_classifier(name: str | None, key: str, base: tuple[str, ...], models: dict) -> None:
    """A classifier, or a segmentation model with a class head (its loss has class_head), of cv.models."""
    ok = name in base and (models[name].role == "classifier" or CLASS_HEAD in models[name].loss)
    _check(
        name is None or ok,
        key,
        f"must be a classifier listed in cv.models, a segmentation model of cv.models trained with a class "
        f"head (loss term {CLASS_HEAD}), or null; got {name!r}",
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


def _check_rounds(rounds: dict[str, RoundConfig], pseudo: PseudoConfig, models: dict) -> None:
    """Round names are folder names apart from the models'; each round relabels after `base` or an
    earlier round, replacing models that make the labels with pseudo models of the same kind."""
    _check(
        not rounds or bool(pseudo.models),
        "pseudo.models",
        "must name at least one model to train in each round of pseudo_rounds (or set pseudo_rounds: {})",
    )
    earlier = ["base"]
    labellers = {pseudo.seg1, *pseudo.shape, pseudo.classifier} - {None}
    for name, r in rounds.items():
        where = f"pseudo_rounds.{name}"
        _check(
            bool(ROUND_NAME.fullmatch(name)) and name != "base" and name not in models,
            where,
            "a round's name is a folder name: lower-case letters, digits and _, starting with a letter, "
            "not 'base' and not a model's name (e.g. r1, r2)",
        )
        _check(
            r.after in earlier,
            f"{where}.after",
            f"must be base or an earlier round ({', '.join(earlier)}), got {r.after!r}",
        )
        _check(
            r.after != "base" or not r.relabel,
            f"{where}.relabel",
            "needs after: <an earlier round> whose pseudo models do the relabelling; with after: base it must be {}",
        )
        for base_model, pl in r.relabel.items():
            _check(
                base_model in labellers,
                f"{where}.relabel.{base_model}",
                f"{base_model!r} does not make the labels; relabel pseudo.seg1, pseudo.shape or pseudo.classifier "
                f"({', '.join(sorted(labellers))})",
            )
            kind = "classifier" if models[base_model].role == "classifier" else "segmentation model"
            _check(
                pl in pseudo.models and (models[pl].role == "classifier") == (kind == "classifier"),
                f"{where}.relabel.{base_model}",
                f"must name a {kind} of pseudo.models ({', '.join(pseudo.models)}), got {pl!r}",
            )
        _check(
            r.after == "base" or bool(r.relabel),
            f"{where}.relabel",
            f"is empty: with after: {r.after} it would keep and label the same images as the base models; "
            f"name the models to replace, e.g. {{{pseudo.seg1}: <its pseudo model>}}",
        )
        earlier.append(name)


def check_square_augment(augment: AugmentConfig, sizes: dict[str, Size]) -> None:
    """transpose and rotate90 swap H and W: every trained model (name -> input size) must be square."""
    for key in ("transpose", "rotate90"):
        if getattr(augment, key) > 0:
            for name, (h, w) in sizes.items():
                _check(
                    h == w,
                    f"augment.{key}",
                    f"needs square inputs, {name} trains at {h}x{w}; set it to 0.0 or train at a square size",
                )


Grid = tuple[tuple[int, ...], ...]  # a 2x2 grid (rows = H, columns = W) tells the 8 orientations apart
Op = Callable[[Grid], Grid]


def _hflip(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g)


def _vflip(g: Grid) -> Grid:
    return g[::-1]


def _transpose(g: Grid) -> Grid:
    return tuple(zip(*g, strict=True))


def _rot90(g: Grid, k: int) -> Grid:
    """np.rot90(g, k), albumentations' RandomRotate90: k quarter turns counterclockwise."""
    for _ in range(k):
        g = _vflip(_transpose(g))
    return g


_GRID: Grid = ((0, 1), (2, 3))
TTA_VIEWS: dict[str, Grid] = {  # infer.tta's views (engine/predict.py)
    "none": _GRID,
    "hflip": _hflip(_GRID),
    "vflip": _vflip(_GRID),
    "hvflip": _hflip(_vflip(_GRID)),
    "transpose": _transpose(_GRID),
}
_HINTS = {
    "none": "lower the augment probabilities that are 1.0",
    "hflip": "set augment.hflip > 0",
    "vflip": "set augment.vflip > 0",
    "hvflip": "set augment.hflip and augment.vflip > 0, or augment.rotate90 > 0",
    "transpose": "set augment.transpose > 0, or augment.rotate90 > 0 with a flip",
}


def trained_views(augment: AugmentConfig) -> set[Grid]:
    """Every orientation a training image can come out in: each flip, the transpose and the rotation
    of dataset.build_transform, in its order, applied or not as its probability allows."""

    def choices(p: float, ops: list[Op]) -> list[Op]:
        return ([] if p >= 1 else [lambda g: g]) + (ops if p > 0 else [])

    steps = [
        choices(augment.hflip, [_hflip]),
        choices(augment.vflip, [_vflip]),
        choices(augment.transpose, [_transpose]),
        choices(augment.rotate90, [lambda g, k=k: _rot90(g, k) for k in range(4)]),  # k = 0 is a draw too
    ]
    views = set()
    for ops in itertools.product(*steps):
        grid = _GRID
        for op in ops:
            grid = op(grid)
        views.add(grid)
    return views


def tta_warnings(augment: AugmentConfig, infer: InferConfig) -> list[str]:
    """A line for each infer.tta view that training never shows the model: it averages in
    predictions on images unlike any it learnt from."""
    seen = trained_views(augment)
    return [
        f"infer.tta: training never shows the {view} view with these augment probabilities; {_HINTS[view]}, "
        "or drop it from infer.tta"
        for view in infer.tta
        if TTA_VIEWS[view] not in seen
    ]
