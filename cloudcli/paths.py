"""Where every artifact lives, relative to the project folder: the one place that knows the layout.
dvc.yaml spells the same paths (tests/test_paths.py holds the two together).

  artifacts/preprocessed/train/          the cache's training images      preprocess
  artifacts/preprocessed/test/           ... and its test images          preprocess
  artifacts/folds.csv                    fold of every training image     fold
  models/<model>/fold<k>/                a base model's checkpoints       train@<model>-<k>
  predictions/base/<model>/              its OOF and test probabilities   infer@<model>
  pseudo/<round>/fold<k>/                a round's pseudo-labelled sets   pseudo@<round>
  models/<round>/<model>/fold<k>/        the round's pseudo-label models  train_pl@<round>-<model>-<k>
  predictions/<round>/<model>/           their probabilities              infer_pl@<round>-<model>
  dvclive/[<round>/]<model>/fold<k>/     training curves
  ensemble/  tune/  submission.csv  metrics/  reports/

Base predictions sit in predictions/base/, apart from the rounds', because a round's labels are
made from them: the pseudo stages depend on predictions/base (and on the round they relabel
from), while ensemble, tune, submit and report depend on all of predictions/.

In params, a model's predictions are named `<model>` (a base model) or `<model>@<round>` (a
pseudo-label model of that round), e.g. `ensemble.members: [seg2, seg2_unet, seg2_pl@r1]`.
"""

from __future__ import annotations

from pathlib import Path

CACHE = Path("artifacts/preprocessed")
CACHE_TRAIN = CACHE / "train"  # what the training stages depend on: new test images retrain nothing
CACHE_TEST = CACHE / "test"
FOLDS = Path("artifacts/folds.csv")
LABELS = Path("labels")  # data.exclude's lists of image ids: a dependency of the fold stage
MODELS = Path("models")
PREDICTIONS = Path("predictions")
PSEUDO = Path("pseudo")
LIVE = Path("dvclive")
ENSEMBLE = Path("ensemble")
TUNED = Path("tune/thresholds.json")
CURVES = Path("tune/curves.csv")
SUBMISSION = Path("submission.csv")
METRICS = Path("metrics")
REPORTS = Path("reports")
BASE = "base"  # predictions/base/: the base models' predictions; never a round's name


def split_name(name: str) -> tuple[str, str | None]:
    """`seg2_pl@r1` -> ("seg2_pl", "r1"); `seg2` -> ("seg2", None)."""
    model, _, round_ = name.partition("@")
    return model, (round_ or None)


def models_of(round_: str | None, root: Path = MODELS) -> Path:
    """The folder of every model's fold folders: models/ (base) or models/<round>/."""
    return root if round_ is None else root / round_


def checkpoints(model: str, fold: int, round_: str | None = None, root: Path = MODELS) -> Path:
    return models_of(round_, root) / model / f"fold{fold}"


def live(model: str, fold: int, round_: str | None = None, root: Path = LIVE) -> Path:
    return (root if round_ is None else root / round_) / model / f"fold{fold}"


def predictions_of(name: str, root: Path = PREDICTIONS) -> Path:
    """The prediction folder of `name` (`model` or `model@round`)."""
    model, round_ = split_name(name)
    return root / (round_ or BASE) / model


def pseudo_labels(round_: str, root: Path = PSEUDO) -> Path:
    return root / round_
