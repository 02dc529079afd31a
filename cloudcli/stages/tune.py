"""Stage `tune`: the two-stage post-processing, chosen on out-of-fold predictions.

Per class (cloudcli.post.twostage): seg1's rule (all 255 levels x min_area, plus
tune.component_thresholds (all: every level) x min_components x min_area), then the level of the
shape maps (the ensemble vote or a model) where seg1 says a class is present, then the
class-score gate swept 0.00..0.99; optionally "at least one class per image". Writes the chosen values, CV Dice before
(seg1 at p > 0.5) and after, one metrics file per step of the combination (seg1 alone, seg2
alone, vote, + seg1 gate, + classifier, + at least one) so `dvc metrics show metrics/stages`
reads as a table, and seg1's Dice-vs-threshold curve of each class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import TuneConfig
from cloudcli.data.cache import open_cache
from cloudcli.data.predictions import (
    OofTruth,
    fingerprint,
    model_folder,
    read_classifier,
    read_ensemble,
    read_histograms,
    read_masks,
    rows_differ,
)
from cloudcli.io import atomic_paths, write_csv, write_json
from cloudcli.metrics import metric_report
from cloudcli.post.rules import RULE_FIELDS, level_of
from cloudcli.post.search import LEVELS, Counts, best, component_levels, histogram_counts
from cloudcli.post.stored import model_counts, oof_histograms
from cloudcli.post.twostage import ClassFit, at_least_one_counts, fit_class, scores_of, top_pixel
from cloudcli.ui import info, table

PARAMS = ("tune",)
METRIC_NAMES = {"dice": "Dice", "jaccard": "Jaccard", "iou_image": "per-image IoU"}


@dataclass(frozen=True)
class _Oof:
    """The out-of-fold files tune fits on: seg1's maps, their histograms and truth (read a batch
    at a time), the classifier's probabilities."""

    ids: list[str]
    seg1: object  # (N, C, H, W) uint8 maps, p*255, read lazily (cloudcli.data.maps)
    hist: np.ndarray  # (N, C, 2, 256) seg1's histograms, as infer wrote them
    truth: OofTruth
    classifier: np.ndarray | None  # (N, C), when the class score uses it
    seg1_folder: Path
    classifier_folder: Path | None


@dataclass(frozen=True)
class _Seg1:
    """seg1's counts per class and what the gates score each image with."""

    counts: list[Counts]  # per class
    scores: list[np.ndarray | None]  # per class (N,) class scores; None without a score gate
    best_class: np.ndarray  # (N, C) scores "at least one" picks a class by
    truth_area: np.ndarray  # (N, C)


def run(
    cfg: TuneConfig,
    predictions: Path,
    cache_dir: Path,
    ensemble_dir: Path,
    out: Path,
    metrics: Path,
    stages: Path,
    curves: Path,
) -> dict:
    cache = open_cache(cache_dir)
    classes, metric = cache.classes, cfg.metric
    oof = _read_oof(cfg, predictions, cache)
    shapes, shape_folder = _shape_sources(cfg, predictions, ensemble_dir, oof)
    seg1 = _count_seg1(cfg, oof, len(classes))
    rows, final, alone = _steps(cfg, seg1, shapes)
    half = level_of(0.5)  # seg1 at p > 0.5: plain columns come first, column = level
    plain = (np.stack([c.inter[:, half] for c in seg1.counts], 1), np.stack([c.area[:, half] for c in seg1.counts], 1))
    report = {
        "before": metric_report(metric, *plain, seg1.truth_area, classes),
        "after": metric_report(metric, *rows[-1][1], seg1.truth_area, classes),
    } | cache.nodata_record("train", oof.ids)  # data.nodata: pixels without data, in no score
    curve = {"threshold": (LEVELS / 255).round(4)}
    for name, c in zip(classes, seg1.counts):
        curve[name] = best(c, cfg.min_areas, metric).scores[: len(LEVELS)].max(1).round(6)
    outputs = (out, False), (metrics, False), (stages, True), (curves, False)
    with atomic_paths(*outputs) as (out_tmp, metrics_tmp, stages_tmp, curves_tmp):  # all four or none
        write_json(out_tmp, _chosen(cfg, oof, shape_folder, final, classes) | _alone_rules(alone, classes))
        write_json(metrics_tmp, report)
        _write_stages(stages_tmp, rows, seg1.truth_area, classes, metric)
        write_csv(curves_tmp, pd.DataFrame(curve))
    _print_table(rows, seg1.truth_area, classes, metric)
    name = METRIC_NAMES[metric]
    before, after = report["before"][metric], report["after"][metric]
    info(f"tune: CV {name} {before:.4f} (seg1, p > 0.5) -> {after:.4f} (tuned)")
    return report


def _read_oof(cfg: TuneConfig, predictions: Path, cache) -> _Oof:
    seg1_folder = model_folder(cfg.seg1, predictions)
    ids, seg1 = read_masks(seg1_folder, "oof")
    truth = OofTruth(cache, ids, seg1_folder / "oof.csv")
    hist = oof_histograms(seg1_folder, seg1, truth)
    uses_classifier = cfg.classifier is not None and cfg.class_score in ("classifier", "mean")
    classifier_folder = model_folder(cfg.classifier, predictions) if uses_classifier else None
    classifier_probs = read_classifier(classifier_folder, "oof", ids) if classifier_folder else None
    return _Oof(ids, seg1, hist, truth, classifier_probs, seg1_folder, classifier_folder)


def _count_seg1(cfg: TuneConfig, oof: _Oof, n_classes: int) -> _Seg1:
    levels = component_levels(cfg.component_thresholds)
    seg1_counts = model_counts(oof.seg1, oof.truth, oof.hist, cfg.min_components, levels)
    scores = [
        scores_of(cfg.class_score, c, None if oof.classifier is None else oof.classifier[:, k], cfg.top_k)
        for k, c in enumerate(seg1_counts)
    ]
    truth_area = np.stack([c.truth_area for c in seg1_counts], 1)  # (N, C)
    best_class = np.stack(scores if scores[0] is not None else [top_pixel(c) for c in seg1_counts], 1)
    return _Seg1(seg1_counts, scores, best_class, truth_area)


def _steps(cfg: TuneConfig, seg1: _Seg1, shapes: list) -> tuple[list[tuple[str, tuple]], list[ClassFit], list]:
    """(step name, (N, C) counts) of each step in report order, the final fit of every class, and
    seg1's fit of every class on its own."""
    metric = cfg.metric
    alone = [fit_class(c, None, None, cfg.min_areas, metric) for c in seg1.counts]
    rows = [("seg1", _stack(alone))]
    final: list[ClassFit] = []
    for step, maps in shapes:
        shape_counts = None if maps is None else maps.counts
        if step in ("alone", "vote"):  # a shape model or the vote on its own, tuned like seg1
            rows.append((maps.label, _stack(_alone(c, cfg.min_areas, metric) for c in shape_counts)))
        elif step == "combined":
            final, steps = _combined(cfg, seg1, shape_counts)
            rows += steps
        else:  # the same with the pseudo-label members in the vote
            final, steps = _combined(cfg, seg1, shape_counts)
            rows.append(("+pseudo labels", steps[-1][1]))
    return rows, final, alone


def _combined(
    cfg: TuneConfig, seg1: _Seg1, shape_counts: list[Counts] | None
) -> tuple[list[ClassFit], list[tuple[str, tuple]]]:
    """Fits of every class and the counts after each step: seg1 gate, score gate, at least one."""
    metric, scores = cfg.metric, seg1.scores
    shape_counts = shape_counts or [None] * len(seg1.counts)
    fits = [fit_class(c, s, None, cfg.min_areas, metric) for c, s in zip(seg1.counts, shape_counts)]
    steps = [] if shape_counts[0] is None else [("+seg1 gate", _stack(fits))]
    if scores[0] is not None:
        fits = [fit_class(c, s, sc, cfg.min_areas, metric) for c, s, sc in zip(seg1.counts, shape_counts, scores)]
        gate = "+classifier" if cfg.class_score == "classifier" else f"+{cfg.class_score} score gate"
        steps.append((gate, _stack(fits)))
    if cfg.at_least_one:
        steps.append(("+at least one", at_least_one_counts(fits, seg1.best_class)))
    return fits, steps


def _alone_rules(alone: list[ClassFit], classes: tuple) -> dict:
    """seg1's own best rule per class (no gate, no shape maps): what `report predictions` shows for
    the seg1 model, read rather than searched again."""
    return {"seg1_rules": {c: {k: getattr(f.rule, k) for k in RULE_FIELDS} for c, f in zip(classes, alone)}}


def _chosen(cfg: TuneConfig, oof: _Oof, shape_folder: Path | None, final: list[ClassFit], classes: tuple) -> dict:
    """thresholds.json: the folders fitted on (with fingerprints) and each class's chosen values."""
    chosen = {
        name: {
            "level": f.rule.level,
            "threshold": round(f.rule.level / 255, 4),
            "min_area": f.rule.min_area,
            "min_component": f.rule.min_component,
            "shape_level": f.shape_level,
            "gate_threshold": f.rule.gate_threshold,
        }
        for name, f in zip(classes, final)
    }
    folders = (oof.seg1_folder, shape_folder, oof.classifier_folder)
    return {
        "seg1": str(oof.seg1_folder),
        "shape": None if shape_folder is None else str(shape_folder),
        "shape_is_ensemble": cfg.shape == "ensemble",
        "classifier": None if oof.classifier_folder is None else str(oof.classifier_folder),
        "fitted_on": {str(f): fingerprint(f) for f in folders if f is not None},
        "class_score": cfg.class_score,
        "top_k": cfg.top_k,
        "at_least_one": cfg.at_least_one,
        "classes": chosen,
    }


class _Source:
    """The counts of a shape source, per class (from its OOF histograms), named for the report."""

    def __init__(self, label: str, hist: np.ndarray) -> None:
        self.label, self.counts = label, [histogram_counts(hist[:, k, 0], hist[:, k, 1]) for k in range(hist.shape[1])]


def _shape_sources(cfg: TuneConfig, predictions: Path, ensemble_dir: Path, oof: _Oof):
    """[(step, source)] in report order, and the folder of the final shape maps (None: seg1's own).
    Every source is read from the histograms its stage wrote: no map is read again."""
    if cfg.shape is None:
        return [("combined", None)], None
    if cfg.shape != "ensemble":
        folder = model_folder(cfg.shape, predictions)
        source = _Source(cfg.shape, _histograms(folder, oof))
        return [("alone", source), ("combined", source)], folder
    members = read_ensemble(ensemble_dir)["members"]
    base = [m for m in members if not m["pseudo"]] or members
    first = _Source(base[0]["name"], _histograms(Path(base[0]["folder"]), oof))
    voted = _histograms(ensemble_dir, oof, "ensemble")
    if len(base) == len(members):
        vote = _Source("vote", voted)
    else:  # the vote without the pseudo-label members, which the ensemble counted too
        vote = _Source("vote", _histograms(ensemble_dir, oof, "ensemble", "oof_hist_base.npy"))
    steps = [("alone", first)] + ([("vote", vote)] if len(members) > 1 else []) + [("combined", vote)]
    if len(base) < len(members):
        steps.append(("pseudo", _Source("vote with pseudo labels", voted)))
    return steps, ensemble_dir


def _histograms(folder: Path, oof: _Oof, stage: str = "infer", name: str = "oof_hist.npy") -> np.ndarray:
    """The OOF histograms of a shape source's folder, its rows checked to be seg1's."""
    these, maps = read_masks(folder, "oof", stage)
    if these != oof.ids:
        fix = "rerun `dvc repro ensemble`" if stage == "ensemble" else "infer every model with the same cv.folds"
        raise rows_differ(folder / "oof.csv", "the seg1 model's", these, oof.ids, fix)
    if stage == "ensemble":  # written with its maps
        return read_histograms(folder, len(these), stage, name)
    return oof_histograms(folder, maps, oof.truth)


def _alone(c: Counts, min_areas: tuple[int, ...], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(N,) counts of a map source on its own, at its best (level, min_area)."""
    found = best(c, min_areas, metric)
    column = int(np.argmax(found.scores.max(1)))
    keep = c.area[:, column] >= found.min_area
    return np.where(keep, c.inter[:, column], 0), np.where(keep, c.area[:, column], 0)


def _stack(fits) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) intersections and areas of per-class fits (ClassFit or (inter, area) pairs)."""
    pairs = [(f.inter, f.area) if isinstance(f, ClassFit) else f for f in fits]
    return np.stack([i for i, _ in pairs], 1), np.stack([a for _, a in pairs], 1)


def _write_stages(folder: Path, rows: list, truth_area: np.ndarray, classes: tuple, metric: str) -> None:
    """One JSON per step, numbered in order: `dvc metrics show metrics/stages` is the table."""
    for i, (name, (inter, area)) in enumerate(rows, 1):
        slug = name.strip("+").replace(" ", "_")
        write_json(folder / f"{i}_{slug}.json", metric_report(metric, inter, area, truth_area, classes))


def _print_table(rows: list, truth_area: np.ndarray, classes: tuple, metric: str) -> None:
    split = ("empty", "non-empty") if metric == "dice" else ()  # Dice rows split by truth
    cells = []
    for name, (inter, area) in rows:
        r = metric_report(metric, inter, area, truth_area, classes)
        extra = [r["dice_empty"], r["dice_non_empty"]] if split else []
        values = [r[metric], *extra, *(r[f"{metric}_{c}"] for c in classes)]
        cells.append([name, *("-" if v is None else f"{v:.4f}" for v in values)])
    title = f"CV {METRIC_NAMES[metric]} of each step (out-of-fold)"
    table(title, ["step", metric, *split, *classes], cells, max(len(name) for name, _ in rows))
