"""`cloudcli show`: one image drawn with its true and/or predicted masks, to a PNG.

Not a DVC stage: a look at any image of the raw data, with the masks of any Kaggle-format CSV
(by default the submission for a test image, the ensemble report's OOF masks for a training image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloudcli.data.cache import resize_mask
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.sources import Source
from cloudcli.errors import DataError
from cloudcli.io import read_json
from cloudcli.rle import decode
from cloudcli.viz import panel, write_png


def find_image(source: Source, image_id: str) -> tuple[str, int]:
    """(split, row) of an image id (a Kaggle id with or without ".jpg"), or a DataError naming the set."""
    found = source.find(image_id)
    if found is None:
        raise DataError(
            f"{image_id}: no such image among the {len(source.train_ids)} train and {len(source.test_ids)} test "
            f"images of {source.root} (data.raw in params.yaml); e.g. {source.train_ids[0]}"
        )
    return found


def default_out(source: Source, image_id: str) -> Path:
    """show/<id>.png, named by the dataset's own id (checked when read: a plain file name), never
    by the text typed, so the PNG stays inside show/."""
    split, row = find_image(source, image_id)
    return Path("show") / f"{Path(source.ids(split)[row]).name.removesuffix('.jpg')}.png"


def draw(
    image_id: str,
    source: Source,
    score_size: tuple[int, int],
    out: Path,
    pred_csv: Path | None,
    truth: bool,
    tile_size: tuple[int, int],
    band_limits: list | None = None,
) -> Path:
    """Draw one image of `source` with its truth (train images) and/or predicted masks (any
    Kaggle-format CSV at `score_size`) to the PNG `out`; returns the path written. `band_limits`:
    the cache's, for 16-bit bands."""
    split, row = find_image(source, image_id)
    image_id = source.ids(split)[row]
    if band_limits is None and source.raw_image(split, row).dtype != np.uint8:
        source = source.fit_limits()
    source = source.with_limits(band_limits)
    classes = source.classes
    true_masks = None
    if truth and split == "train":
        true_masks = np.stack([resize_mask(m, score_size) for m in source.masks(split, row)])
    pred = None
    if pred_csv is not None and Path(pred_csv).is_dir():
        raise DataError(f"{pred_csv}: is a folder (--pred); give a Kaggle-format CSV of predicted masks")
    if pred_csv is not None and not Path(pred_csv).is_file():
        raise DataError(f"{pred_csv}: file not found (--pred); give a Kaggle-format CSV of predicted masks")
    if pred_csv is not None:
        pred = _masks_of(pred_csv, image_id, score_size, classes)
        if pred is None:
            raise DataError(f"{pred_csv}: no rows for {image_id}; is it a prediction file of the {split} set?")
    what = ["truth"] * (true_masks is not None) + [f"{pred_csv}"] * (pred is not None)
    title = f"{split} {image_id}: {' vs '.join(what) if what else 'no masks'}"
    write_png(out, panel(source.rgb(split, row), true_masks, pred, title, tile_size, classes))
    return out


def default_prediction(image_id: str, source: Source, submission: Path, reports: Path) -> Path | None:
    """Where `cloudcli show` finds predicted masks by default: the submission for test images, the
    ensemble report's OOF masks for training images; None if that file does not exist or has no
    row for the image (a training image outside cv.folds)."""
    split, row = find_image(source, image_id)
    path = submission if split == "test" else reports / "ensemble" / "oof_masks.csv"
    if not path.is_file():
        return None
    labels = read_labels(path, None, source.classes)  # a malformed file fails here, naming its line
    return path if (labels["image_id"] == source.ids(split)[row]).any() else None


def _masks_of(csv: Path, image_id: str, size: tuple[int, int], classes: tuple[str, ...]) -> np.ndarray | None:
    """(C, H, W) masks of one image from a Kaggle-format CSV of masks at `size`; None if the file
    has no row for it. The whole file is checked (rows, classes, every RLE inside `size`)."""
    wide = to_wide(read_labels(csv, size, classes), classes)
    if image_id not in wide.index:
        return None
    return np.stack([decode(rle, size) for rle in wide.loc[image_id]])


def cache_band_limits(meta: Path) -> list | None:
    """The band limits preprocess scaled 16-bit bands with (the cache's meta.json), so that `draw`
    scales them the same; None before there is a cache (draw then fits the limits itself). A
    damaged meta.json is an error: limits fitted anew would draw the image unlike the cache."""
    if not meta.exists():
        return None
    rerun = "rerun `dvc repro preprocess`"
    limits = read_json(meta, rerun).get("band_limits")
    if limits is None:
        return None
    try:
        pairs = np.asarray(limits, np.float64)  # (B, 2) low, high per band
    except (TypeError, ValueError):
        pairs = None
    if pairs is None or pairs.ndim != 2 or pairs.shape[1] != 2:
        raise DataError(f"{meta}: band_limits is not a list of [low, high] pairs, one per band; {rerun}")
    return limits
