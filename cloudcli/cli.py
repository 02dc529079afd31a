"""The `cloudcli` command: one thin subcommand per pipeline stage."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloudcli import __version__, paths
from cloudcli.errors import CloudcliError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Reproducible cloud-segmentation pipeline: each command is a DVC stage.",
)

RoundOpt = Annotated[
    str | None, typer.Option("--round", help="Pseudo-label round: a key of pseudo_rounds in params.yaml")
]
ParamsOpt = Annotated[Path, typer.Option("--params", help="Params file with every tunable value")]


def _version(value: bool) -> None:
    if value:
        print(f"cloudcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    pass


@app.command()
def init(
    preset: Annotated[
        str | None, typer.Option(help="Preset laid over the defaults: 3rd_place, chips or image_mask; none by default")
    ] = None,
    out: Annotated[Path, typer.Option(help="Params file to write")] = Path("params.yaml"),
    force: Annotated[bool, typer.Option(help="Replace --out if it exists")] = False,
) -> None:
    """Write a complete params file: the defaults, or the defaults with a preset's values.

    A preset (cloudcli/config/presets/) holds only what differs from the defaults; the file
    written keeps the defaults' comments on the values the preset leaves alone.
    """
    from cloudcli.config.presets import write_params

    write_params(out, preset, force)
    print(f"{out}: the defaults" + (f" with preset {preset}" if preset else ""))


DEMO_DEFAULTS = {  # kind -> (n_train, n_test, height, width)
    "kaggle_clouds": (120, 40, 1400, 2100),
    "chips": (160, 40, 128, 128),
    "image_mask": (160, 40, 128, 128),
}


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset to (created)")],
    kind: Annotated[
        str, typer.Option(help="Dataset kind: kaggle_clouds, chips (GeoTIFF bands) or image_mask (tiles)")
    ] = "kaggle_clouds",
    n_train: Annotated[int | None, typer.Option(help="Training images [kaggle_clouds 120, others 160]")] = None,
    n_test: Annotated[int | None, typer.Option(help="Test images [40]")] = None,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files")] = 0,
    height: Annotated[int | None, typer.Option(help="Image height [kaggle_clouds 1400, others 128]")] = None,
    width: Annotated[int | None, typer.Option(help="Image width [kaggle_clouds 2100, others 128]")] = None,
    workers: Annotated[int, typer.Option(help="Processes drawing images")] = 2,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output folder")] = False,
) -> None:
    """Write a synthetic dataset of one kind (params data.kind).

    kaggle_clouds (the default, the dataset data.dvc tracks): train.csv, sample_submission.csv,
    train_images/, test_images/ and test_truth.csv (the hidden test masks). chips: On Cloud N's
    layout, 4 uint16 GeoTIFF bands per chip, labels and metadata (cloudcli init --preset chips).
    image_mask: building tiles, PNG images and masks (cloudcli init --preset image_mask).
    """
    if kind not in DEMO_DEFAULTS:
        raise CloudcliError(f"--kind: unknown dataset kind {kind!r}; choose from {', '.join(DEMO_DEFAULTS)}")
    given = (n_train, n_test, height, width)
    n_train, n_test, height, width = (g if g is not None else d for g, d in zip(given, DEMO_DEFAULTS[kind]))
    if kind == "kaggle_clouds":
        from cloudcli.data.demo import DemoSpec, generate

        generate(out, DemoSpec(n_train, n_test, seed, height, width), max(workers, 1), force)
        return
    from cloudcli.data.demo_kinds import KindSpec, generate_kind

    generate_kind(kind, out, KindSpec(n_train, n_test, seed, height, width), max(workers, 1), force)


@app.command()
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


@app.command()
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


@app.command()
def train(
    model: Annotated[str, typer.Option(help="Model name: a key of `models` in params.yaml")],
    fold: Annotated[int, typer.Option(help="Fold held out for validation")],
    params: ParamsOpt = Path("params.yaml"),
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    folds: Annotated[Path, typer.Option(help="Folds table")] = paths.FOLDS,
    round_: RoundOpt = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint folder [default: models/[ROUND/]MODEL/foldFOLD]")] = None,
    live: Annotated[Path | None, typer.Option(help="DVCLive folder [default: dvclive/[ROUND/]MODEL/foldFOLD]")] = None,
    restart: Annotated[bool, typer.Option(help="Ignore last.pt and train from scratch")] = False,
    pseudo: Annotated[
        Path | None,
        typer.Option(help="Pseudo-labelled set added to the training part [default with --round: pseudo/ROUND]"),
    ] = None,
) -> None:
    """Train one model on one fold; resumes from its last checkpoint if interrupted.

    Writes best.pt, last.pt, config.json and summary.json, and DVCLive curves. Under
    `torchrun --nproc_per_node=N` it trains with DistributedDataParallel. With --round (or
    --pseudo), the round's pseudo-labelled test images join the training part of the fold
    (never its validation part).
    """
    from cloudcli.config import load_params, resolve_model

    p = load_params(params)
    spec = resolve_model(model, p.network, p.train, p.models)
    _check_round(round_, p.pseudo_rounds)
    if spec.train.processes > 1 and "WORLD_SIZE" not in os.environ:  # not yet under a launcher: become torchrun
        _relaunch_under_torchrun(spec.train.processes)
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


def _check_round(name: str | None, rounds: dict) -> None:
    if name is not None and name not in rounds:
        known = ", ".join(rounds) or "none: pseudo_rounds is {}"
        raise CloudcliError(f"--round: unknown round {name!r}; pseudo_rounds in params.yaml has {known}")


def _relaunch_under_torchrun(processes: int) -> None:
    """Replace this process by `torchrun --nproc_per_node=N -m cloudcli <same arguments>`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "cloudcli", *sys.argv[1:]]
    print(f"train.processes {processes}: running under torchrun", file=sys.stderr, flush=True)
    os.execv(sys.executable, command)


@app.command()
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

    Masks are stored as uint8 (p * 255) at 350x525 in memory-mappable .npy files; test
    probabilities average every fold model. Classifier probabilities go to CSV tables.
    """
    from cloudcli.config import load_params, resolve_model

    p = load_params(params)
    resolve_model(model, p.network, p.train, p.models)  # a clear error for an unknown name
    _check_round(round_, p.pseudo_rounds)
    from cloudcli.stages import infer as stage

    name = model if round_ is None else f"{model}@{round_}"
    models_dir = models_dir or paths.models_of(round_)
    stage.run(model, p.infer, p.cv, models_dir, cache, folds, out or paths.predictions_of(name))


@app.command()
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
    the previous round's pseudo-label models (pseudo_rounds.ROUND.relabel). `cloudcli train
    --round ROUND` adds the set to the training part of every fold.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    _check_round(round_, p.pseudo_rounds)
    from cloudcli.stages import pseudo as stage

    out = out or paths.pseudo_labels(round_)
    metrics = metrics or paths.METRICS / "pseudo" / f"{round_}.json"
    stage.run(p.pseudo, round_, p.pseudo_rounds[round_], predictions, cache, out, metrics)


@app.command()
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
    import dataclasses

    from cloudcli.config import EnsembleConfig, build, load_params
    from cloudcli.errors import ConfigError

    p = load_params(params)
    cfg = p.ensemble
    if any(v is not None for v in (vote, members, min_votes, weights)):
        raw = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
        if members is not None:
            raw.update(members=[m.strip() for m in members.split(",") if m.strip()], weights=None, min_votes=None)
        if vote is not None and vote != raw["vote"]:  # options of the other vote do not apply
            raw.update(vote=vote, min_votes=None, weights=None)
        if min_votes is not None:
            raw["min_votes"] = min_votes
        if weights is not None:
            try:
                raw["weights"] = [float(w) for w in weights.split(",")]
            except ValueError:
                raise ConfigError(f"--weights must be comma-separated numbers, got {weights!r}") from None
        cfg = build(EnsembleConfig, raw, "ensemble.")
    from cloudcli.stages import ensemble as stage

    stage.run(cfg, predictions, cache, out)


@app.command()
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


@app.command()
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
    from cloudcli.data.cache import open_cache
    from cloudcli.data.kaggle import SUBMISSION_CSV, read_labels
    from cloudcli.data.sources import classes_of
    from cloudcli.stages import submit as stage

    if check is not None:
        if p.data.kind == "kaggle_clouds":  # the competition's own list of rows
            reference = Path(p.data.raw) / SUBMISSION_CSV
            classes = classes_of(p.data)
            rows = read_labels(reference, None, classes)
            want = list(rows["image_id"] + "_" + rows["cls"])
        else:
            reference = cache
            c = open_cache(cache)
            want, classes = stage.expected_labels(c), c.classes
        n = stage.check(check, want, p.data.score_size, classes, str(reference))
        print(f"{check}: valid submission, {n} rows")
        return
    stage.run(p.data, thresholds, cache, out, metrics, p.tune.metric)


@app.command()
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


report_app = typer.Typer(
    no_args_is_help=True, help="Reports to look at: the labels, and a model's out-of-fold predictions."
)
app.add_typer(report_app, name="report")


@report_app.command("data")
def report_data(
    params: ParamsOpt = Path("params.yaml"),
    folds: Annotated[Path, typer.Option(help="Folds table")] = paths.FOLDS,
    out: Annotated[Path, typer.Option(help="Report folder to write (replaced)")] = Path("reports/data"),
) -> None:
    """Class frequency, classes per image, co-occurrence, mask areas and fold balance of train.csv.

    Writes a PNG and a CSV per view (`dvc plots show` draws them) and every number in summary.json.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.stages import report_data as stage

    stage.run(p.data, folds, out)


@report_app.command("predictions")
def report_predictions(
    model: Annotated[
        list[str] | None,
        typer.Option(help="ensemble (the tuned pipeline) or a segmentation model; repeat it [default: report.models]"),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    predictions: Annotated[Path, typer.Option(help="Folder of model predictions")] = paths.PREDICTIONS,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    thresholds: Annotated[Path, typer.Option(help="Tuned post-processing")] = paths.TUNED,
    submission: Annotated[Path, typer.Option(help="Submission whose test masks the ensemble report draws")] = Path(
        "submission.csv"
    ),
    folds: Annotated[Path, typer.Option(help="Folds table")] = paths.FOLDS,
    out: Annotated[Path, typer.Option(help="Reports folder: one subfolder per model (replaced)")] = Path(
        "reports/predictions"
    ),
) -> None:
    """Out-of-fold Dice per class and per image, empty/non-empty decisions, worst images drawn.

    `ensemble` is the tuned two-stage pipeline that submit applies; a model is binarised by its
    own best threshold x min_area per class. Also draws a few test images with their masks and
    writes the OOF masks as a Kaggle CSV (oof_masks.csv) that `cloudcli show` reads.
    """
    from cloudcli.config import ConfigError, load_params

    p = load_params(params)
    names = list(model) if model else list(p.report.models)
    every = [m for m in p.cv.models if p.models[m].role != "classifier"]
    every += [f"{m}@{r}" for r in p.pseudo_rounds for m in p.pseudo.models if p.models[m].role != "classifier"]
    for name in names:
        if name != "ensemble" and name not in every:
            raise ConfigError(
                f"--model {name!r}: not ensemble or a segmentation model of cv.models or <pseudo model>@<round> "
                f"({', '.join(every)})"
            )
    from cloudcli.stages import report_predictions as stage

    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        stage.run(name, p.report, p.tune, p.data, predictions, cache, thresholds, submission, folds, out / name)
    if not model:  # the stage's output: exactly the configured reports
        for stale in sorted(set(q.name for q in out.iterdir() if q.is_dir()) - set(names)):
            shutil.rmtree(out / stale)


@app.command("export-masks")
def export_masks(
    csv: Annotated[Path, typer.Argument(help="Kaggle-format CSV of masks at data.score_size")] = paths.SUBMISSION,
    out: Annotated[Path, typer.Option(help="Folder to write, one label file per image")] = Path("submission_masks"),
    fmt: Annotated[str, typer.Option("--format", help="tif (On Cloud N) or png")] = "tif",
    size: Annotated[
        tuple[int, int] | None, typer.Option(help="H W of the label files [default: data.raw_size]")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Write one label raster per image of a mask CSV (uint8: 0 background, k = the k-th class).

    For competitions that score label files: On Cloud N takes submission_masks/<chip_id>.tif at the
    chip's full size. Run `cloudcli submit --check` on the CSV first.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.data.sources import classes_of
    from cloudcli.export import export_masks as run

    classes = classes_of(p.data)
    if size is not None and min(size) < 1:
        raise CloudcliError(f"--size {size[0]} {size[1]}: must be positive")
    done = run(csv, out, classes, p.data.score_size, size or p.data.raw_size, fmt, force)
    h, w = done["size"]
    note = f"; {done['overlap_pixels']} pixels predicted for several classes took the first" * bool(
        done["overlap_pixels"]
    )
    print(f"{out}: {done['images']} label files ({fmt}, {h}x{w} uint8, 0 = background, k = {list(classes)}[k-1]){note}")


@app.command()
def show(
    image_id: Annotated[str, typer.Argument(help="Image id: 0011165(.jpg), a chip id or a tile name (train or test)")],
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path | None, typer.Option(help="PNG to write [default: show/IMAGE_ID.png]")] = None,
    pred: Annotated[
        Path | None,
        typer.Option(
            help="Kaggle-format CSV of predicted masks at data.score_size [default: submission.csv for a test "
            "image, reports/predictions/ensemble/oof_masks.csv for a training image, where they exist]"
        ),
    ] = None,
    truth: Annotated[bool, typer.Option(help="Outline the true masks (training images)")] = True,
    tile: Annotated[tuple[int, int] | None, typer.Option(help="H W of one class's view [default: report.tile]")] = None,
) -> None:
    """Draw one image with its true and/or predicted masks to a PNG (no window needed)."""
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.data.sources import open_source
    from cloudcli.show import cache_band_limits, default_prediction, draw

    source = open_source(p.data)  # validated once: on the real Kaggle set that reads train.csv
    if pred is None:
        pred = default_prediction(image_id, source, paths.SUBMISSION, Path("reports/predictions"))
    limits = cache_band_limits(Path("artifacts/preprocessed/meta.json"))  # 16-bit bands scaled as preprocess did
    out = out or Path("show") / f"{image_id.removesuffix('.jpg')}.png"
    print(draw(image_id, source, p.data.score_size, out, pred, truth, tile or p.report.tile, limits))


def main() -> None:
    """Entry point: expected errors become one red line on stderr and exit code 1."""
    try:
        app()
    except CloudcliError as e:
        from cloudcli.ui import error

        error(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
