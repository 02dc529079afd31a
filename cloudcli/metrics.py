"""The competition metric: mean Dice over all (image, class) rows. Pure numpy.

Dice of one row is 1 when prediction and truth are both empty, 0 when exactly one is empty,
else 2|P & T| / (|P| + |T|). Kaggle scores masks at 350x525.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of one (H, W) mask pair; any non-zero pixel is inside; empty/empty = 1."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} != truth shape {truth.shape}")
    return float(dice_from_counts(np.sum(pred & truth), np.sum(pred), np.sum(truth)))


def dice_from_counts(inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray) -> np.ndarray:
    """Element-wise Dice from intersection and areas (any matching shapes)."""
    inter, pred_area, truth_area = np.broadcast_arrays(inter, pred_area, truth_area)
    total = pred_area.astype(np.float64) + truth_area
    out = np.ones(total.shape, dtype=np.float64)  # both empty -> 1
    np.divide(2.0 * inter, total, out=out, where=total > 0)
    return out


def row_counts(preds: np.ndarray, truths: np.ndarray, chunk: int = 64) -> tuple[np.ndarray, ...]:
    """(intersection, pred area, truth area), each (N, C) int64, for (N, C, H, W) stacks."""
    if preds.shape != truths.shape or preds.ndim != 4:
        raise ValueError(f"expected two (N, C, H, W) stacks of one shape, got {preds.shape} and {truths.shape}")
    n, c = preds.shape[:2]
    inter, pred_area, truth_area = (np.empty((n, c), dtype=np.int64) for _ in range(3))
    for lo in range(0, n, chunk):  # bounded temporaries on large stacks
        p, t = preds[lo : lo + chunk] != 0, truths[lo : lo + chunk] != 0
        inter[lo : lo + chunk] = np.count_nonzero(p & t, axis=(2, 3))
        pred_area[lo : lo + chunk] = np.count_nonzero(p, axis=(2, 3))
        truth_area[lo : lo + chunk] = np.count_nonzero(t, axis=(2, 3))
    return inter, pred_area, truth_area


@dataclass(frozen=True)
class DiceReport:
    """Mean Dice over all rows, and its breakdowns (None where a group has no row)."""

    mean: float
    per_class: dict[str, float]
    empty: float | None  # rows whose truth is empty
    non_empty: float | None  # rows whose truth has a mask
    n_rows: int

    def as_dict(self) -> dict:
        return {
            "dice": self.mean,
            "dice_empty": self.empty,
            "dice_non_empty": self.non_empty,
            "n_rows": self.n_rows,
            **{f"dice_{k}": v for k, v in self.per_class.items()},
        }


def summarize(scores: np.ndarray, truth_empty: np.ndarray, classes: tuple[str, ...]) -> DiceReport:
    """Aggregate per-row Dice `scores` (N, C) given which truth rows are empty (N, C)."""
    if scores.shape[1] != len(classes):
        raise ValueError(f"{scores.shape[1]} class columns but {len(classes)} class names")

    def mean_or_none(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    return DiceReport(
        mean=float(scores.mean()),
        per_class={name: float(scores[:, k].mean()) for k, name in enumerate(classes)},
        empty=mean_or_none(scores[truth_empty]),
        non_empty=mean_or_none(scores[~truth_empty]),
        n_rows=int(scores.size),
    )


def kaggle_dice(preds: np.ndarray, truths: np.ndarray, classes: tuple[str, ...]) -> DiceReport:
    """Competition Dice of (N, C, H, W) prediction and truth stacks (non-zero = inside)."""
    inter, pred_area, truth_area = row_counts(np.asarray(preds), np.asarray(truths))
    return summarize(dice_from_counts(inter, pred_area, truth_area), truth_area == 0, classes)


class DiceSums:
    """Running sums of per-row Dice, so batches (and processes) can be added up exactly.

    Vector layout: per-class sums (C), per-class counts (C), empty sum, empty count,
    non-empty sum, non-empty count.
    """

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.vector = np.zeros(2 * n_classes + 4, dtype=np.float64)

    def add(self, scores: np.ndarray, truth_empty: np.ndarray) -> None:
        """Add (B, C) per-row Dice and (B, C) truth-is-empty flags."""
        c = self.n_classes
        self.vector[:c] += scores.sum(0)
        self.vector[c : 2 * c] += len(scores)
        self.vector[2 * c : 2 * c + 4] += [
            scores[truth_empty].sum(),
            truth_empty.sum(),
            scores[~truth_empty].sum(),
            (~truth_empty).sum(),
        ]

    def report(self, classes: tuple[str, ...]) -> DiceReport:
        return sums_report(self.vector, classes)


def sums_report(vector: np.ndarray, classes: tuple[str, ...]) -> DiceReport:
    """DiceReport from a DiceSums vector (possibly summed over processes or folds)."""
    c = len(classes)
    sums, counts = vector[:c], vector[c : 2 * c]
    es, en, ns, nn = vector[2 * c : 2 * c + 4]
    return DiceReport(
        mean=float(sums.sum() / counts.sum()),
        per_class={name: float(sums[k] / counts[k]) for k, name in enumerate(classes)},
        empty=float(es / en) if en else None,
        non_empty=float(ns / nn) if nn else None,
        n_rows=int(counts.sum()),
    )


# ----------------------------------------------------------------------------------------------
# Metrics per dataset kind (tune.metric): what the tuning maximises, from per-row counts.
#
#   dice       mean over (image, class) rows of the row's Dice (Kaggle clouds); empty/empty = 1
#   jaccard    per class, IoU of all pixels of all images pooled: sum |P & T| / sum |P | T|, then
#              the mean over classes (DrivenData "On Cloud N"); nothing predicted or true = 1
#   iou_image  mean over rows of the row's IoU; empty/empty = 1

METRICS = ("dice", "jaccard", "iou_image")


def iou_from_counts(inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray) -> np.ndarray:
    """Element-wise IoU from intersection and areas; 1 where both are empty."""
    inter, pred_area, truth_area = np.broadcast_arrays(inter, pred_area, truth_area)
    union = pred_area.astype(np.float64) + truth_area - inter
    out = np.ones(union.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def total(metric: str, inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray, axis: int = 0) -> np.ndarray:
    """The metric of one class over the rows along `axis` (arrays broadcast together)."""
    if metric == "dice":
        return dice_from_counts(inter, pred_area, truth_area).mean(axis)
    if metric == "iou_image":
        return iou_from_counts(inter, pred_area, truth_area).mean(axis)
    if metric == "jaccard":
        inter, pred_area, truth_area = np.broadcast_arrays(inter, pred_area, truth_area)
        return iou_from_counts(inter.sum(axis), pred_area.sum(axis), truth_area.sum(axis))
    raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")


def metric_report(
    metric: str, inter: np.ndarray, pred_area: np.ndarray, truth_area: np.ndarray, classes: tuple[str, ...]
) -> dict:
    """Scores of (N, C) counts. dice: DiceReport.as_dict() (overall, empty and non-empty rows, per
    class). Otherwise the metric overall (mean over classes) and per class, and the other two."""
    empty = truth_area == 0
    if metric == "dice":
        return summarize(dice_from_counts(inter, pred_area, truth_area), empty, classes).as_dict()
    per_class = {c: float(total(metric, inter[:, k], pred_area[:, k], truth_area[:, k])) for k, c in enumerate(classes)}
    others = {
        m: float(np.mean([total(m, inter[:, k], pred_area[:, k], truth_area[:, k]) for k in range(len(classes))]))
        for m in METRICS
        if m != metric
    }
    return {
        metric: float(np.mean(list(per_class.values()))),
        **others,
        "n_rows": int(inter.size),
        **{f"{metric}_{c}": v for c, v in per_class.items()},
    }
