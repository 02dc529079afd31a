"""The DVC stage commands, in pipeline order: each loads params.yaml, then calls its stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudcli import paths
from cloudcli.cli.options import ParamsOpt, RoundOpt, check_round


def preprocess(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Cache folder to write")] = paths.CACHE,
    metrics: Annotated[Path, typer.Option(help="Label statistics (JSON)")] = Path("metrics/data.json"),
) -> None:
    """Decode and resize images and masks once into a compact cache for training.

    Writes a few memory-mappable .npy files (images, packed masks, 350x525 truth masks) and
    label statistics for `dvc metrics show`.
    """
    from cloudcli.config import load_params

    p = load_params(params)  # fail on params before the slow imports
    from cloudcli.stages import preprocess as stage

    stage.run(p.data, p.preprocess, out, metrics)


def fold(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Folds table to write (image_id, fold)")] = paths.FOLDS,
    metrics: Annotated[Path, typer.Option(help="Fold sizes and class balance (JSON)")] = Path("metrics/folds.json"),
) -> None:
    """Split training images into K folds stratified on which classes each image has.

    Writes a folds table (image_id, fold) and fold sizes and class balance as metrics.
    """
    from cloudcli.config import load_params

    p = load_params(params)  # fail on params before the slow imports
    from cloudcli.stages import fold as stage

    stage.run(p.data, p.fold, out, metrics)


def train(
    model: Annotated[str, typer.Option(help="Model name: a key of `models` in params.yaml")],
    fold: Annotated[int, typer.Option(help="Fold held out for validation")],
    params: ParamsOpt = Path("params.yaml"),
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    folds: Annotated[Path, typer.Option(help="Folds table")] = paths.FOLDS,
    round_: RoundOpt = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint folder [default: models/[ROUND/]MODEL/foldFOLD]")] = None,
    live: Annotated[Path | None, typer.Option(help="DVCLive folder [default: dvclive/[ROUND/]MODEL/foldFOLD]")] = None,
    restart: Annotated[bool, typer.Option(help="Ignore the saved training state and train from scratch")] = False,
    pseudo: Annotated[
        Path | None,
        typer.Option(
            help="Pseudo-labelled set added to the training part: a round's folder (its foldFOLD/ set is used) "
            "or one set's folder [default with --round: pseudo/ROUND]"
        ),
    ] = None,
) -> None:
    """Train one model on one fold; resumes from its last completed epoch if interrupted.

    Writes config.json, best.pt and summary.json when it ends (an earlier run's stay until then),
    and DVCLive curves as it goes. The state
    to resume from (last.pt after every epoch) is kept under .cloudcli/resume/ (or
    $CLOUDCLI_RESUME_DIR), keyed by the run's settings, until the run ends. Under
    `torchrun --nproc_per_node=N` it trains with DistributedDataParallel. With --round (or
    --pseudo), the round's pseudo-labelled test images join the training part of the fold
    (never its validation part).
    """
    from cloudcli.config import load_params, resolve_model

    p = load_params(params)
    spec = resolve_model(model, p.network, p.train, p.models)
    check_round(round_, p.pseudo_rounds)
    from cloudcli.engine.launch import ensure_launched

    ensure_launched(spec.train.processes)  # train.processes > 1: become torchrun
    from cloudcli.stages import train as stage

    stage.run(
        spec,
        p.augment,
        cache,
        folds,
        fold,
        out or paths.checkpoints(model, fold, round_),
        live or paths.live(model, fold, round_),
        restart,
        pseudo or (paths.pseudo_labels(round_) if round_ else None),
    )


def infer(
    model: Annotated[str, typer.Option(help="Model name: a key of `models` in params.yaml")],
    params: ParamsOpt = Path("params.yaml"),
    round_: RoundOpt = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models", help="Folder of trained models [default: models/[ROUND]]")
    ] = None,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    folds: Annotated[Path, typer.Option(help="Folds table")] = paths.FOLDS,
    out: Annotated[
        Path | None, typer.Option(help="Output folder [default: predictions/base/MODEL, or predictions/ROUND/MODEL]")
    ] = None,
) -> None:
    """Out-of-fold and test probabilities of one model's fold checkpoints, with TTA.

    Masks are stored as uint8 (p * 255) at 350x525 in compressed zarr arrays (an image per
    chunk), with their OOF histograms; test probabilities average every fold model. Classifier
    probabilities go to CSV tables.
    """
    from cloudcli import ui
    from cloudcli.config import load_params, resolve_model, tta_warnings

    p = load_params(params)
    resolve_model(model, p.network, p.train, p.models)  # a clear error for an unknown name
    check_round(round_, p.pseudo_rounds)
    for line in tta_warnings(p.augment, p.infer):
        ui.warn(line)
    from cloudcli.stages import infer as stage

    name = model if round_ is None else f"{model}@{round_}"
    models_dir = models_dir or paths.models_of(round_)
    stage.run(model, p.infer, p.cv, models_dir, cache, folds, out or paths.predictions_of(name))


def pseudo(
    round_: Annotated[str, typer.Option("--round", help="Round to label: a key of pseudo_rounds in params.yaml")],
    params: ParamsOpt = Path("params.yaml"),
    predictions: Annotated[Path, typer.Option(help="Folder of every model's predictions")] = paths.PREDICTIONS,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    out: Annotated[Path | None, typer.Option(help="Pseudo-labelled set to write [default: pseudo/ROUND]")] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="Images kept and label quality, JSON [default: metrics/pseudo/ROUND.json]")
    ] = None,
) -> None:
    """Label the confidently predicted test images for one round of pseudo labelling.

    Keeps a test image when every class is confidently empty or present by the classifier
    (pseudo.rule: classifier, 0.3 / 0.7) or when most of its seg1 pixels are confident (pixels).
    Its masks are the base two-stage masks (seg1 rule, seg2 vote, classifier gate fitted on
    out-of-fold maps), made by the base models or, in a later round, with some of them replaced by
    the previous round's pseudo-label models (pseudo_rounds.ROUND.relabel). With pseudo.sources
    listing excluded, the training images data.exclude leaves out are candidates too (relabelled).
    `cloudcli train --round ROUND` adds the set to the training part of every fold.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    check_round(round_, p.pseudo_rounds)
    from cloudcli.stages import pseudo as stage

    out = out or paths.pseudo_labels(round_)
    metrics = metrics or paths.METRICS / "pseudo" / f"{round_}.json"
    stage.run(p.pseudo, round_, p.pseudo_rounds[round_], predictions, cache, out, metrics)


def ensemble(
    params: ParamsOpt = Path("params.yaml"),
    vote: Annotated[str | None, typer.Option(help="majority or mean [default: ensemble.vote]")] = None,
    members: Annotated[str | None, typer.Option(help="Comma-separated models [default: ensemble.members]")] = None,
    min_votes: Annotated[
        int | None, typer.Option(help="majority: members that must agree [default: more than half]")
    ] = None,
    weights: Annotated[str | None, typer.Option(help="mean: comma-separated weights, one per member")] = None,
    predictions: Annotated[Path, typer.Option(help="Folder of model predictions")] = paths.PREDICTIONS,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    out: Annotated[Path, typer.Option(help="Output folder")] = paths.ENSEMBLE,
) -> None:
    """Combine segmentation models pixel by pixel: majority vote or (weighted) mean.

    majority binarises each member at its own threshold, tuned per class on its out-of-fold maps,
    and keeps the pixels where at least --min-votes members agree. Members and options come from
    params.yaml `ensemble`; the flags override them for a one-off run.
    """
    from cloudcli.config import load_params, override_ensemble

    p = load_params(params)
    cfg = override_ensemble(p.ensemble, vote, members, min_votes, weights)
    from cloudcli.stages import ensemble as stage

    stage.run(cfg, predictions, cache, out)


def tune(
    params: ParamsOpt = Path("params.yaml"),
    predictions: Annotated[Path, typer.Option(help="Folder of model predictions")] = paths.PREDICTIONS,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    ensemble_dir: Annotated[Path, typer.Option("--ensemble", help="Ensemble folder")] = paths.ENSEMBLE,
    out: Annotated[Path, typer.Option(help="Chosen post-processing (JSON)")] = paths.TUNED,
    metrics: Annotated[Path, typer.Option(help="CV Dice before/after (JSON)")] = Path("metrics/tune.json"),
    stages: Annotated[Path, typer.Option(help="CV Dice after each step (folder of JSON)")] = Path("metrics/stages"),
    curves: Annotated[Path, typer.Option(help="Dice vs threshold per class (CSV)")] = paths.CURVES,
) -> None:
    """Choose the two-stage post-processing on out-of-fold predictions.

    Per class: seg1's threshold x min_area (x min_component), the shape maps' threshold where seg1
    says present, then the class-score gate 0.00..0.99. Prints and writes the CV Dice after each
    step (seg1, seg2, vote, + seg1 gate, + classifier).
    """
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.stages import tune as stage

    stage.run(p.tune, predictions, cache, ensemble_dir, out, metrics, stages, curves)


def submit(
    params: ParamsOpt = Path("params.yaml"),
    check: Annotated[Path | None, typer.Option(help="Only validate this submission file, write nothing")] = None,
    thresholds: Annotated[Path, typer.Option(help="Tuned post-processing")] = paths.TUNED,
    out: Annotated[Path, typer.Option(help="Submission file to write")] = paths.SUBMISSION,
    metrics: Annotated[Path, typer.Option(help="Test score when the raw data has test labels (JSON)")] = Path(
        "metrics/test.json"
    ),
    cache: Annotated[Path, typer.Option(help="Preprocessed cache (test order, classes)")] = Path(
        "artifacts/preprocessed"
    ),
) -> None:
    """Write submission.csv from the tuned post-processing of test probabilities.

    Kaggle format: Image_Label,EncodedPixels, one row per test image and class (Kaggle: 4 rows per
    image in sample_submission.csv order), RLE at data.score_size. `--check FILE` validates any
    submission instead.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.stages import submit as stage

    if check is not None:
        n = stage.check_submission(check, p.data, cache)
        print(f"{check}: valid submission, {n} rows")
        return
    stage.run(p.data, thresholds, cache, out, metrics, p.tune.metric)


def cv(
    params: ParamsOpt = Path("params.yaml"),
    models_dir: Annotated[Path, typer.Option("--models", help="Folder of trained models")] = paths.MODELS,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    folds: Annotated[Path, typer.Option(help="Folds table")] = paths.FOLDS,
    out: Annotated[Path, typer.Option(help="CV scores (JSON)")] = Path("metrics/cv.json"),
) -> None:
    """Cross-validated score of every trained model, next to the all-empty baseline.

    Segmentation: competition Dice over all out-of-fold rows; classifier: AUC and accuracy. The
    pseudo-label models of each round are scored as MODEL@ROUND.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.stages import cv as stage

    stage.run(p.cv, p.models, models_dir, cache, folds, out, p.pseudo.models, tuple(p.pseudo_rounds))
