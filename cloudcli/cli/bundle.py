"""Commands that carry the trained pipeline out of the project: `export` a bundle, `predict` with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudcli import paths
from cloudcli.cli.options import ParamsOpt
from cloudcli.errors import CloudcliError


def export(
    out: Annotated[Path, typer.Option(help="Bundle folder to write (replaced whole)")] = Path("bundle"),
    folds: Annotated[
        str | None, typer.Option(help="Comma-separated folds to include, e.g. 0,1 [default: every trained fold]")
    ] = None,
    thresholds: Annotated[Path, typer.Option(help="Tuned post-processing (tune's output)")] = paths.TUNED,
    models: Annotated[Path, typer.Option(help="Folder of trained models")] = paths.MODELS,
    cache: Annotated[Path, typer.Option(help="Preprocessed cache (classes, band limits, sizes)")] = paths.CACHE,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Write a self-contained bundle of the tuned pipeline: every model it uses with its settings,
    the TTA views, the tuned rules, how raw inputs are read, a sha256 manifest.

    `cloudcli predict BUNDLE INPUT...` applies it to new images anywhere, offline; in Python,
    cloudcli.bundle.Predictor.load(BUNDLE).predict(image).
    """
    from cloudcli.bundle.export import Sources
    from cloudcli.bundle.export import export as run
    from cloudcli.config import load_params

    chosen = None
    if folds is not None:
        try:
            chosen = tuple(int(f) for f in folds.split(","))
        except ValueError:
            raise CloudcliError(f"--folds {folds!r}: give fold numbers separated by commas, e.g. 0,1") from None
    run(Sources(thresholds, models, cache), load_params(params).infer, out, chosen)


def predict(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder (cloudcli export)")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files, chip folders of band files, or folders of them")],
    out: Annotated[Path, typer.Option(help="Folder of label rasters, or the CSV with --format rle")],
    fmt: Annotated[
        str, typer.Option("--format", help="auto (PNG for images, TIFF for TIFFs and chips), png, tif or rle")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, mps")] = "auto",
) -> None:
    """Predict new images with a bundle: the masks `submit` would write for them.

    Label rasters at each input's size (0 background, k = the k-th class), or with `--format rle`
    a Kaggle CSV (`<input>_<class>` rows, RLE at the scoring size) in the inputs' order; a folder
    is read in file-name order. Inputs must have the bundle's band count and bit depth.
    """
    from cloudcli.bundle.inputs import find_inputs
    from cloudcli.bundle.outputs import FORMATS, write_rasters, write_rle
    from cloudcli.bundle.predictor import Predictor, read_spec
    from cloudcli.bundle.run import predict_inputs

    if fmt not in FORMATS:
        raise CloudcliError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    spec = read_spec(bundle)["input"]
    items = find_inputs(inputs, spec["bands"], spec["kind"])  # before the models load
    predictor = Predictor.load(bundle, device)
    predicted = predict_inputs(predictor, items)
    if fmt == "rle":
        n, done = write_rle(out, predicted, predictor.classes)
        print(f"{out}: {n} inputs x {len(predictor.classes)} classes, {done} non-empty masks")
    else:
        n, overlap, plain = write_rasters(out, predicted, fmt, spec["bands"])
        note = f"; {overlap} pixels predicted for several classes took the first" * bool(overlap)
        note += f"; {plain} TIFFs without geo tags (their inputs had no CRS)" * bool(plain)
        print(f"{out}: {n} label rasters (0 = background, k = {list(predictor.classes)}[k-1]){note}")
