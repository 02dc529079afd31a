"""Stage `submit`: tuned post-processing of test probabilities -> Kaggle-format submission.csv.

`Image_Label,EncodedPixels` (label `<image_id>_<class>`), one row per test image and class in the
cache's test order (Kaggle's: sample_submission.csv), RLE at the scoring size (350x525). When the
raw data has test labels (the demos), also the true test score. `check` validates any submission.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import DataConfig
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.data.kaggle import SUBMISSION_CSV, read_labels, to_wide
from cloudcli.data.sources import classes_of
from cloudcli.errors import DataError
from cloudcli.io import atomic_paths, write_csv, write_json
from cloudcli.metrics import metric_report, row_counts
from cloudcli.post.tuned import Tuned, load_tuned
from cloudcli.rle import decode, encode
from cloudcli.ui import info, progress

PARAMS = ("data", "tune.metric")


def run(data: DataConfig, thresholds: Path, cache_dir: Path, out: Path, metrics: Path, metric: str = "dice") -> None:
    """The post-processing tune chose (thresholds.json names the prediction folders it was fitted on)."""
    cache = open_cache(cache_dir)
    tuned = load_tuned(thresholds, "test")
    rles = encode_masks(tuned, cache.classes)
    labels = expected_labels(cache)
    missing = set(labels) - set(rles)
    if missing:
        test_csv = Path(tuned.chosen["seg1"]) / "test.csv"
        raise DataError(f"{test_csv}: no prediction for {sorted(missing)[0]}; rerun infer")
    with atomic_paths((out, False), (metrics, False)) as (out_tmp, metrics_tmp):  # both or neither
        write_csv(out_tmp, pd.DataFrame({"Image_Label": labels, "EncodedPixels": [rles[k] for k in labels]}))
        report = score(out_tmp, cache, data.score_size, metric) if cache.has_test_truth else {}
        write_json(metrics_tmp, report)
    info(f"submit: wrote {out} ({len(labels)} rows, {sum(map(bool, rles.values()))} non-empty masks)")
    if report:
        info(f"submit: test {metric} {report[metric]:.4f} against the test labels in {data.raw}")


def encode_masks(tuned: Tuned, classes: tuple[str, ...]) -> dict[str, str]:
    """RLE of every mask of the tuned pipeline, by label `<image_id>_<class>`."""
    rles = {}
    with progress("submit", len(tuned.ids), "images") as advance:
        for rows, masks in tuned.blocks():
            for image_id, these in zip(tuned.ids[rows], masks):
                rles.update({f"{image_id}_{c}": encode(m) for c, m in zip(classes, these)})
            advance(len(masks))
    return rles


def expected_labels(cache) -> list[str]:
    """`<image_id>_<class>` of every submission row, in order: test images in the cache's order
    (sample_submission.csv's for Kaggle), classes in channel order within each."""
    return [f"{i}_{c}" for i in cache.test["image_id"] for c in cache.classes]


def score(submission: Path, cache, size: tuple[int, int], metric: str = "dice") -> dict:
    """The metric of a submission against the cache's test labels (the demos' hidden truth)."""
    sub = to_wide(read_labels(submission, size, cache.classes), cache.classes)
    rows = pd.Index(cache.test["image_id"]).get_indexer(sub.index)
    truth, table = cache.array("test_truth"), sub.to_numpy()
    counts = np.zeros((3, len(table), len(cache.classes)), np.int64)  # inter, area, truth area
    for i, (row, rles) in enumerate(zip(rows, table)):  # an image at a time: memory stays flat
        preds = np.stack([decode(r, size) for r in rles])[None]
        counts[:, i] = np.stack(row_counts(preds, unpack_masks(truth[row][None], len(cache.classes))))[:, 0]
    return metric_report(metric, *counts, cache.classes) | cache.nodata_record("test")  # 0 in truth and masks


def check_submission(path: Path, data: DataConfig, cache_dir: Path) -> int:
    """`cloudcli submit --check`: validate `path` against the rows a submission must have, Kaggle's
    sample_submission.csv for kaggle_clouds, else the cache's test images; returns the row count."""
    if data.kind == "kaggle_clouds":  # the competition's own list of rows
        reference = Path(data.raw) / SUBMISSION_CSV
        classes = classes_of(data)
        rows = read_labels(reference, None, classes)
        want = list(rows["image_id"] + "_" + rows["cls"])
    else:
        reference = cache_dir
        cache = open_cache(cache_dir)
        want, classes = expected_labels(cache), cache.classes
    return check(path, want, data.score_size, classes, str(reference))


def check(path: Path, want: list[str], size: tuple[int, int], classes: tuple[str, ...], reference: str) -> int:
    """Validate a submission: rows `want` (labels) in that order, every RLE inside `size`; raises
    DataError naming the problem. `reference` names where `want` comes from."""
    sub = read_labels(path, size, classes)  # header, labels, a row per class per image, RLEs inside the image
    got, sample = list(sub["image_id"] + "_" + sub["cls"]), reference
    if set(got) != set(want):
        extra, lost = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        what = f"unexpected row {extra[0]}" if extra else f"no row for {lost[0]}"
        raise DataError(f"{path}: {what} ({len(extra)} unexpected, {len(lost)} missing vs {sample})")
    for k, (a, b) in enumerate(zip(got, want)):
        if a != b:
            raise DataError(f"{path} line {sub['line'].iloc[k]}: {a} where {sample} has {b}; keep its row order")
    return len(got)
