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
    inputs: Annotated[
        list[Path], typer.Argument(help="Image files, GeoTIFF scenes, chip folders of band files, or folders of them")
    ],
    out: Annotated[Path, typer.Option(help="Folder of label rasters, or the CSV with --format rle")],
    fmt: Annotated[
        str, typer.Option("--format", help="auto (PNG for images, TIFF for TIFFs and chips), png, tif or rle")
    ] = "auto",
    tile: Annotated[
        str | None, typer.Option(help="Tile of a scene in input pixels, N or HxW (default: one training image)")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option(help="Overlap of neighbouring tiles in input pixels (default: a quarter tile)")
    ] = None,
    probs: Annotated[bool, typer.Option("--probs", help="Also write <input>_probs.tif: uint8 probabilities")] = False,
    vector: Annotated[bool, typer.Option("--vector", help="Also write <input>.geojson: the labels' polygons")] = False,
    min_area: Annotated[int, typer.Option(help="--vector: leave out polygons under this many input pixels")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, mps")] = "auto",
) -> None:
    """Predict new images and scenes with a bundle: the masks `submit` would write for them.

    Label rasters at each input's size (0 background, k = the k-th class, 255 no data; GeoTIFFs keep
    the input's CRS and transform), or with `--format rle` a Kaggle CSV (`<input>_<class>` rows, RLE
    at the scoring size) in the inputs' order; a folder is read in file-name order. Inputs larger or
    smaller than the training images are scenes: predicted in overlapping tiles, and judged by the
    tuned rules one training-image cell at a time (docs/bundles.md). Inputs must have the bundle's
    band count and bit depth.
    """
    from cloudcli.bundle.inputs import find_inputs
    from cloudcli.bundle.outputs import FORMATS, write_rasters, write_rle
    from cloudcli.bundle.predictor import Predictor, read_spec
    from cloudcli.bundle.run import open_all, predict_inputs

    size = check_options(fmt, FORMATS, tile, probs or vector, min_area)
    spec = read_spec(bundle)["input"]
    items = find_inputs(inputs, spec["bands"], spec["kind"])
    shapes = open_all(spec, items, whole_only=fmt == "rle")  # every input checked before the models load
    predictor = Predictor.load(bundle, device)
    predicted = predict_inputs(predictor, items, size, overlap, shapes)
    if fmt == "rle":
        n, done = write_rle(out, predicted, predictor.classes)
        print(f"{out}: {n} inputs x {len(predictor.classes)} classes, {done} non-empty masks")
        return
    seg1 = predictor.spec["pipeline"]["seg1"]
    counts = write_rasters(out, predicted, fmt, predictor.classes, probs, min_area if vector else None, seg1)
    print(f"{out}: {summary(counts, predictor.classes, vector)}")


def summary(counts: dict[str, int], classes: tuple[str, ...], vector: bool) -> str:
    """The line `predict` ends with: what it wrote, and what a user should know about it."""
    note = f"; {counts['overlap']} pixels predicted for several classes took the first" * bool(counts["overlap"])
    note += f"; {counts['nodata']} pixels without data written as 255" * bool(counts["nodata"])
    note += f"; {counts['polygons']} polygons" * vector
    note += f"; {counts['plain']} TIFFs without geo tags (their inputs had no CRS)" * bool(counts["plain"])
    return f"{counts['inputs']} label rasters (0 = background, k = {list(classes)}[k-1]){note}"


def check_options(fmt: str, formats: tuple[str, ...], tile: str | None, extras: bool, min_area: int):
    """predict's options checked before anything is read; the tile as (H, W) or None."""
    if fmt not in formats:
        raise CloudcliError(f"--format {fmt!r}: choose from {', '.join(formats)}")
    if fmt == "rle" and extras:
        raise CloudcliError("--probs and --vector write rasters and polygons beside the labels; not with --format rle")
    if min_area < 0:
        raise CloudcliError(f"--min-area {min_area}: must be 0 or more")
    return parse_tile(tile)


def parse_tile(tile: str | None) -> tuple[int, int] | None:
    """--tile N or HxW -> (H, W)."""
    if tile is None:
        return None
    try:
        parts = [int(v) for v in tile.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise CloudcliError(f"--tile {tile!r}: give a positive size in pixels, N or HxW (e.g. 512 or 512x768)")
    return (parts[0], parts[-1])
