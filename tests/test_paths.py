"""cloudcli/paths.py and dvc.yaml spell the same layout: each stage's outputs (and the folders the
next stage reads) are the paths the code builds."""

from pathlib import Path

import yaml
from helpers import REPO

from cloudcli import paths

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
MODEL, FOLD, ROUND = "seg9", 3, "r7"  # any names: substituted into dvc.yaml's templates


def spelled(template, **item) -> Path:
    """A dvc.yaml path with ${item...}, ${item} and ${key} filled in."""
    text = next(iter(template)) if isinstance(template, dict) else template
    for key, value in item.items():
        text = text.replace(f"${{item.{key}}}", str(value))
    text = text.replace("${item}", MODEL).replace("${key}", ROUND)
    return Path(text)


def outs(name: str, **item) -> list[Path]:
    stage = STAGES[name].get("do", STAGES[name])
    return [spelled(o, **item) for o in stage.get("outs", [])]


def test_models_and_predictions_live_where_paths_says() -> None:
    assert outs("train", model=MODEL, fold=FOLD) == [paths.checkpoints(MODEL, FOLD)]
    assert outs("train_pl", round=ROUND, model=MODEL, fold=FOLD) == [paths.checkpoints(MODEL, FOLD, ROUND)]
    plots = {s: spelled(STAGES[s]["plots"][0], round=ROUND, model=MODEL, fold=FOLD) for s in ("train", "train_pl")}
    assert plots == {
        "train": paths.live(MODEL, FOLD) / "plots/metrics",
        "train_pl": paths.live(MODEL, FOLD, ROUND) / "plots/metrics",
    }
    assert outs("infer") == [paths.predictions_of(MODEL)]
    assert outs("infer_pl", round=ROUND, model=MODEL) == [paths.predictions_of(f"{MODEL}@{ROUND}")]
    infer_pl_deps = [spelled(d, round=ROUND, model=MODEL) for d in STAGES["infer_pl"]["deps"]]
    assert paths.models_of(ROUND) / MODEL in infer_pl_deps
    assert outs("pseudo") == [paths.pseudo_labels(ROUND)]
    assert paths.pseudo_labels(ROUND) in [spelled(d, round=ROUND) for d in STAGES["train_pl"]["deps"]]


def test_a_round_reads_base_predictions_apart_from_the_rounds() -> None:
    """The labels of a round depend on predictions/base (and the round they follow), never on all of
    predictions/, where the round's own predictions land: that would be a cycle."""
    deps = STAGES["pseudo"]["do"]["deps"]
    assert str(paths.PREDICTIONS / paths.BASE) in deps and str(paths.PREDICTIONS) not in deps
    assert paths.predictions_of(MODEL).parent == paths.PREDICTIONS / paths.BASE
    for stage in ("ensemble", "tune", "submit", "report_predictions"):  # every model's, base and rounds
        assert str(paths.PREDICTIONS) in STAGES[stage]["deps"], stage


def test_the_other_outputs() -> None:
    assert outs("preprocess") == [paths.CACHE_TRAIN, paths.CACHE_TEST]
    assert outs("fold") == [paths.FOLDS]
    assert outs("ensemble") == [paths.ENSEMBLE]
    assert outs("tune") == [paths.TUNED, paths.CURVES]
    assert outs("submit") == [paths.SUBMISSION]


def test_names_split_into_model_and_round() -> None:
    assert paths.split_name("seg2_pl@r1") == ("seg2_pl", "r1") and paths.split_name("seg2") == ("seg2", None)
    assert paths.predictions_of("seg2_pl@r1", Path("p")) == Path("p/r1/seg2_pl")
    assert paths.predictions_of("seg2", Path("p")) == Path("p/base/seg2")
