"""Stage `tune`: per-class post-processing chosen on out-of-fold predictions.

For each class: the exact grid of pixel level (all 255) x min_area, plus tune.component_thresholds
x min_components x min_area (cloudcli.search); then, with a classifier, its gate threshold swept
0.00..0.99, and the grid searched again on the maps the gate keeps. Writes the chosen values, CV
Dice before (p > 0.5, no rule) and after tuning, and the Dice-vs-threshold curve of each class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli import CLASSES
from cloudcli.config import TuneConfig
from cloudcli.data.cache import BITS, open_cache
from cloudcli.data.predictions import read_classifier, read_masks
from cloudcli.errors import DataError
from cloudcli.io import write_csv, write_json
from cloudcli.metrics import summarize
from cloudcli.postprocess import level_of
from cloudcli.search import LEVELS, best, counts, gate_scores, map_dice
from cloudcli.ui import info

PARAMS = ("tune",)
GATES = np.round(np.arange(0.0, 1.0, 0.01), 2)


def run(cfg: TuneConfig, predictions: Path, cache_dir: Path, out: Path, metrics: Path, curves: Path) -> dict:
    cache = open_cache(cache_dir)
    folder = predictions / cfg.model
    ids, probs = read_masks(folder, "oof")
    rows = pd.Index(cache.train["image_id"]).get_indexer(ids)  # cache rows of the OOF rows
    if (rows < 0).any():
        raise DataError(f"{folder / 'oof.csv'}: {ids[int(np.argmin(rows))]} is not in {cache_dir}; rerun infer")
    truth = cache.array("train_truth")[rows]  # (N, H, W) packed bits, OOF row order
    cls_probs = read_classifier(predictions / cfg.classifier, "oof", ids) if cfg.classifier else None
    before, after = np.empty((len(ids), len(CLASSES))), np.empty((len(ids), len(CLASSES)))
    chosen, curve = {}, {"threshold": (LEVELS / 255).round(4)}
    for k, name in enumerate(CLASSES):
        t = (truth & BITS[k]) != 0
        chosen[name], before[:, k], after[:, k], curve[name] = tune_class(
            probs[:, k], t, cfg, None if cls_probs is None else cls_probs[:, k]
        )
        info(f"tune {name}: {chosen[name]}, Dice {before[:, k].mean():.4f} -> {after[:, k].mean():.4f}")
    empty = np.stack([((truth & b) == 0).reshape(len(ids), -1).all(1) for b in BITS])
    report = {"before": summarize(before, empty.T).as_dict(), "after": summarize(after, empty.T).as_dict()}
    write_json(out, {"model": cfg.model, "classifier": cfg.classifier, "classes": chosen})
    write_json(metrics, report)
    write_csv(curves, pd.DataFrame(curve))
    info(f"tune: CV Dice {report['before']['dice']:.4f} (p > 0.5) -> {report['after']['dice']:.4f} (tuned)")
    return report


def tune_class(probs: np.ndarray, truth: np.ndarray, cfg: TuneConfig, cls_probs: np.ndarray | None):
    """(chosen values, per-map Dice before, per-map Dice after, best Dice per level) of one class."""
    levels = tuple(sorted({level_of(t) for t in cfg.component_thresholds}))
    c = counts(probs, truth, cfg.min_components, levels)
    found = best(c, cfg.min_areas)
    curve = found.scores[: len(LEVELS)].max(1).round(6)  # before the gate, no component rule
    column = int(np.argmax(found.scores.max(1)))
    dice, gate = map_dice(c.area, c.inter, c.truth_area, column, found.min_area), None
    if cls_probs is not None:
        swept = gate_scores(dice, c.truth_area == 0, cls_probs, GATES)
        if swept.max() > dice.mean() and (cls_probs > GATES[np.argmax(swept)]).any():
            gate = float(GATES[np.argmax(swept)])
            kept = cls_probs > gate  # search again on the maps the gate keeps
            found = best(c.subset(kept), cfg.min_areas)
            column = int(np.argmax(found.scores.max(1)))
            dice = np.where(kept, map_dice(c.area, c.inter, c.truth_area, column, found.min_area), c.truth_area == 0)
    chosen = {
        "level": found.level,
        "threshold": round(found.level / 255, 4),
        "min_area": found.min_area,
        "min_component": found.min_component,
        "cls_threshold": gate,
    }
    plain = map_dice(c.area, c.inter, c.truth_area, level_of(0.5), 0)  # column = level when no component rule
    return chosen, plain, dice, curve
