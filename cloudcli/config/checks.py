"""Checks across sections: the models that pseudo, ensemble, tune and report name exist in the
pipeline and have the right role."""

from __future__ import annotations

from cloudcli.config.schema import _check
from cloudcli.config.schema_post import ROUND_NAME, Params, PseudoConfig, RoundConfig
from cloudcli.errors import ConfigError


def _check_combination(params: Params) -> None:
    """Models named by ensemble, pseudo and tune exist in the pipeline and have the right role."""
    base, models, pseudo = params.cv.models, params.models, params.pseudo
    segs = [m for m in base if models[m].role != "classifier"]
    _check_pseudo(pseudo, base, segs, models)
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
    for m in params.report.models:
        _check(
            m == "ensemble" or m in every_seg,
            "report.models",
            f"{m!r} is not ensemble or a segmentation model of cv.models or <pseudo model>@<round> "
            f"({', '.join(every_seg)})",
        )


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
    _check(
        name is None or (name in base and models[name].role == "classifier"),
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
