"""Stage `submit`: tuned post-processing of test probabilities -> Kaggle-format submission.csv.

`Image_Label,EncodedPixels` (label `<image_id>_<class>`), one row per test image and class in the
cache's test order (Kaggle's: sample_submission.csv), RLE at the scoring size (350x525). When the
raw data has test labels (the demos), also the true test score. `check` validates any submission.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.combine import class_score, topk
from cloudcli.config import DataConfig
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.predictions import fingerprint, read_classifier, read_masks, read_thresholds
from cloudcli.errors import DataError
from cloudcli.io import write_csv, write_json
from cloudcli.metrics import metric_report, row_counts
from cloudcli.postprocess import ClassRule, postprocess
from cloudcli.rle import decode, encode
from cloudcli.ui import info, progress

PARAMS = ("data", "tune.metric")


@dataclass(frozen=True)
class Tuned:
    """The post-processing tune chose, bound to one split's probability maps."""

    ids: list[str]  # image ids of the split, in the maps' row order
    seg1: np.ndarray  # (N, C, H, W) uint8 maps deciding presence
    shape: np.ndarray | None  # (N, C, H, W) uint8 maps drawing the masks (two-stage), or None
    cls: np.ndarray | None  # (N, C) classifier probabilities, or None
    rules: list[ClassRule]
    shape_levels: list[int | None]
    chosen: dict  # thresholds.json

    def masks(self, i: int) -> np.ndarray:
        """(C, H, W) uint8 0/1 masks of row i."""
        seg1 = np.asarray(self.seg1[i])
        scores = class_scores(
            self.chosen["class_score"], seg1, None if self.cls is None else self.cls[i], self.chosen["top_k"]
        )
        shape = None if self.shape is None else np.asarray(self.shape[i])
        return postprocess(seg1, self.rules, scores, self.chosen["at_least_one"], shape, self.shape_levels)


def load_tuned(thresholds: Path, split: str) -> Tuned:
    """Read thresholds.json and the maps of `split` ('oof' or 'test') it was tuned for, checking
    that none of its prediction folders changed since."""
    chosen = read_thresholds(thresholds)
    for folder, sha1 in chosen["fitted_on"].items():  # the rules only fit the maps they were tuned on
        if fingerprint(Path(folder)) != sha1:
            raise DataError(
                f"{Path(folder) / 'meta.json'} changed since {thresholds} was tuned on it; rerun `dvc repro tune`"
            )
    classes = list(chosen["classes"].values())
    rules = [ClassRule(c["level"], c["min_area"], c["min_component"], c["cls_threshold"]) for c in classes]
    folder = Path(chosen["seg1"])
    ids, probs = read_masks(folder, split)  # (N, C, H, W) uint8
    shape = None
    if chosen["shape"] is not None:
        shape_ids, shape = read_masks(
            Path(chosen["shape"]), split, "ensemble" if chosen["shape_is_ensemble"] else "infer"
        )
        if shape_ids != ids:
            raise DataError(
                f"{Path(chosen['shape']) / f'{split}.csv'}: rows differ from {folder / f'{split}.csv'}; rerun infer"
            )
    cls = read_classifier(Path(chosen["classifier"]), split, ids) if chosen["classifier"] else None
    return Tuned(ids, probs, shape, cls, rules, [c["shape_level"] for c in classes], chosen)


def run(data: DataConfig, thresholds: Path, cache_dir: Path, out: Path, metrics: Path, metric: str = "dice") -> None:
    """The post-processing tune chose (thresholds.json names the prediction folders it was fitted on)."""
    cache = open_cache(cache_dir)
    tuned = load_tuned(thresholds, "test")
    folder, ids = Path(tuned.chosen["seg1"]), tuned.ids
    rles = {}
    with progress("submit", len(ids), "images") as advance:
        for i, image_id in enumerate(ids):
            rles.update({f"{image_id}_{c}": encode(m) for c, m in zip(cache.classes, tuned.masks(i))})
            advance(1)
    labels = expected_labels(cache)
    missing = set(labels) - set(rles)
    if missing:
        raise DataError(f"{folder / 'test.csv'}: no prediction for {sorted(missing)[0]}; rerun infer")
    write_csv(out, pd.DataFrame({"Image_Label": labels, "EncodedPixels": [rles[k] for k in labels]}))
    info(f"submit: wrote {out} ({len(labels)} rows, {sum(map(bool, rles.values()))} non-empty masks)")
    report = score(out, cache, data.score_size, metric) if cache.has_test_truth else {}
    if report:
        info(f"submit: test {metric} {report[metric]:.4f} against the test labels in {data.raw}")
    write_json(metrics, report)


def expected_labels(cache) -> list[str]:
    """`<image_id>_<class>` of every submission row, in order: test images in the cache's order
    (sample_submission.csv's for Kaggle), classes in channel order within each."""
    return [f"{i}_{c}" for i in cache.test["image_id"] for c in cache.classes]


def class_scores(how: str, seg1: np.ndarray, cls_probs: np.ndarray | None, top_k: int) -> np.ndarray | None:
    """(C,) gate scores of one image, as tune computed them on the OOF maps."""
    return class_score(how, cls_probs, topk(seg1, top_k) if how in ("topk", "mean") else None)


def score(submission: Path, cache, size: tuple[int, int], metric: str = "dice") -> dict:
    """The metric of a submission against the cache's test labels (the demos' hidden truth)."""
    sub = to_wide(read_labels(submission, size, cache.classes), cache.classes)
    preds = np.stack([[decode(r, size) for r in row] for row in sub.to_numpy()])
    rows = pd.Index(cache.test["image_id"]).get_indexer(sub.index)
    truth = unpack_masks(cache.array("test_truth")[rows], len(cache.classes))
    inter, area, truth_area = row_counts(preds, truth)
    return metric_report(metric, inter, area, truth_area, cache.classes)


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
