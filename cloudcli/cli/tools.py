"""Commands around the pipeline: write a params file, a demo dataset, label rasters of a mask CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudcli import paths
from cloudcli.cli.options import ParamsOpt
from cloudcli.errors import CloudcliError


def init(
    preset: Annotated[
        str | None,
        typer.Option(help="Preset laid over the defaults: 1st_place, 3rd_place, chips, demo_5fold or image_mask"),
    ] = None,
    out: Annotated[Path, typer.Option(help="Params file to write")] = Path("params.yaml"),
    force: Annotated[bool, typer.Option(help="Replace --out if it exists")] = False,
) -> None:
    """Write a complete params file: the defaults, or the defaults with a preset's values.

    A preset (cloudcli/config/presets/) holds only what differs from the defaults; the file
    written keeps the defaults' comments on the values the preset leaves alone.
    """
    from cloudcli.config.presets import write_params
    from cloudcli.data.exclude import make_labels_folder

    write_params(out, preset, force)
    print(f"{out}: the defaults" + (f" with preset {preset}" if preset else ""))
    if make_labels_folder(out.parent):
        print(f"{out.parent / 'labels'}/: for data.exclude's lists (the fold stage depends on it)")


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
    label_noise: Annotated[
        float, typer.Option(help="kaggle_clouds: share of training images given wrong labels (answer key written)")
    ] = 0.0,
) -> None:
    """Write a synthetic dataset of one kind (params data.kind).

    kaggle_clouds (the default, the dataset data.dvc tracks): train.csv, sample_submission.csv,
    train_images/, test_images/ and test_truth.csv (the hidden test masks). chips: On Cloud N's
    layout, 4 uint16 GeoTIFF bands per chip, labels and metadata (cloudcli init --preset chips).
    image_mask: building tiles, PNG images and masks (cloudcli init --preset image_mask).

    --label-noise 0.15 (kaggle_clouds) gives round(0.15 * n_train) training images a wrong mask in
    train.csv (a class dropped, a mask shifted, or two classes swapped); label_noise.csv lists them
    and train_truth.csv holds the true labels: an answer key for measuring, never read by the pipeline.
    """
    from cloudcli.data.demo_kinds import generate_demo

    generate_demo(kind, out, (n_train, n_test, height, width), seed, workers, force, label_noise)


def export_masks(
    csv: Annotated[Path, typer.Argument(help="Kaggle-format CSV of masks at data.score_size")] = paths.SUBMISSION,
    out: Annotated[Path, typer.Option(help="Folder to write, one label file per image")] = Path("submission_masks"),
    fmt: Annotated[str, typer.Option("--format", help="tif (On Cloud N) or png")] = "tif",
    size: Annotated[
        tuple[int, int] | None, typer.Option(help="H W of the label files [default: data.raw_size]")
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(help="Folder of the CSV's images, whose CRS the TIFFs take; by default the dataset's test images"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it exists")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Write one label raster per image of a mask CSV (uint8: 0 background, k = the k-th class).

    For competitions that score label files: On Cloud N takes submission_masks/<chip_id>.tif at the
    chip's full size. A TIFF takes its image's CRS and transform (a chip folder's first band's),
    scaled to --size; images without a CRS give TIFFs without geo tags. Run `cloudcli submit --check`
    on the CSV first.
    """
    from cloudcli.config import load_params

    p = load_params(params)
    from cloudcli.data.sources import SOURCES, classes_of
    from cloudcli.export import Images, geo_note
    from cloudcli.export import export_masks as run

    classes = classes_of(p.data)
    if size is not None and min(size) < 1:
        raise CloudcliError(f"--size {size[0]} {size[1]}: must be positive")
    folder = images or Path(p.data.raw) / SOURCES[p.data.kind].image_dirs["test"]
    found = Images(folder, p.data.kind, p.data.bands) if images or folder.is_dir() else None  # default may be absent
    done = run(csv, out, classes, p.data.score_size, size or p.data.raw_size, fmt, force, found)
    h, w = done["size"]
    note = f"; {done['overlap_pixels']} pixels predicted for several classes took the first" * bool(
        done["overlap_pixels"]
    )
    note += geo_note(done, folder)
    print(f"{out}: {done['images']} label files ({fmt}, {h}x{w} uint8, 0 = background, k = {list(classes)}[k-1]){note}")
