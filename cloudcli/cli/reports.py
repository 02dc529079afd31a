"""Commands to look at the data and the predictions: `report data`, `report predictions`, `report labels`,
`show`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudcli import paths
from cloudcli.cli.options import ParamsOpt


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
    from cloudcli.config import load_params, report_names

    p = load_params(params)
    names = report_names(p, model)
    from cloudcli.stages import report_predictions as stage

    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        stage.run(name, p.report, p.tune, p.data, predictions, cache, thresholds, submission, folds, out / name)
    if not model:  # the stage's output: exactly the configured reports
        stage.remove_stale(out, names)


def report_labels(
    params: ParamsOpt = Path("params.yaml"),
    predictions: Annotated[Path, typer.Option(help="Folder of model predictions")] = paths.PREDICTIONS,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache folder")] = paths.CACHE,
    folds: Annotated[Path, typer.Option(help="Folds table")] = paths.FOLDS,
    out: Annotated[Path, typer.Option(help="Report folder to write (replaced)")] = paths.REPORTS / "labels",
    metrics: Annotated[Path, typer.Option(help="Metrics file to write")] = paths.METRICS / "labels.json",
) -> None:
    """Training labels the out-of-fold predictions contradict most confidently, ranked.

    Writes suspects.csv (most suspect first: score, class, kind of disagreement, fold, each class's
    score), the first report_labels.top drawn as overlays, and the counts in metrics/labels.json.
    Copy the ids you confirm wrong into the exclude file (data.exclude) to leave them out.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.stages import report_labels as stage

    stage.run(p.report_labels, p.report.tile, p.data, predictions, cache, folds, out, metrics)


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
    from cloudcli.show import cache_band_limits, default_out, default_prediction, draw

    source = open_source(p.data)  # validated once: on the real Kaggle set that reads train.csv
    if pred is None:
        pred = default_prediction(image_id, source, paths.SUBMISSION, Path("reports/predictions"))
    limits = cache_band_limits(paths.CACHE / "train" / "meta.json")  # 16-bit bands scaled as preprocess did
    out = out or default_out(source, image_id)
    print(draw(image_id, source, p.data.score_size, out, pred, truth, tile or p.report.tile, limits))
