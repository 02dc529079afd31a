"""The two-stage combination of the 3rd place, fitted exactly on out-of-fold predictions.

Per class, greedily, on the per-map counts of cloudcli.search (no map is re-thresholded):

1. seg1 rule: pixel level x min_area (x min_component) maximising seg1's own Dice. A class is
   present in an image where seg1's mask survives its rule.
2. shape level (two-stage only): where seg1 says present, the mask is shape > level (e.g. the
   seg2 vote); the level maximising the combined Dice.
3. gate: the class-score threshold (0.00..0.99) maximising the combined Dice; a mask is emptied
   when its score <= threshold. Then 1 and 2 are searched again on the maps the gate keeps, and
   kept if that beats the rules as they were (greedy: 1 then 2 need not be the best pair).

Then, per image and optional, "at least one class": an image left with no mask keeps its
highest-scoring class, that map thresholded only (1st place). Every step's per-map Dice is kept,
so a report shows what each step adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudcli.combine import class_score, topk_from_histograms
from cloudcli.data.cache import BITS
from cloudcli.metrics import dice_from_counts
from cloudcli.postprocess import ClassRule
from cloudcli.search import LEVELS, Counts, above, best, gate_scores, grid_scores, histograms, map_dice

GATES = np.round(np.arange(0.0, 1.0, 0.01), 2)


@dataclass(frozen=True)
class ClassFit:
    rule: ClassRule  # seg1's level, min_area, min_component and the gate threshold
    shape_level: int | None  # mask = shape > shape_level where seg1 says present; None: seg1's own mask
    dice: np.ndarray  # (N,) per-map Dice of the fitted rule
    present: np.ndarray  # (N,) bool: the fitted rule leaves a non-empty mask
    plain: np.ndarray  # (N,) Dice of the mask map thresholded only (what "at least one" keeps)


def _present(c: Counts, column: int, min_area: int) -> np.ndarray:
    area = c.area[:, column]
    return (area >= min_area) & (area > 0)


def _shape_dice(shape: Counts) -> np.ndarray:
    """(N, 255) Dice of shape > level for every level."""
    n = len(LEVELS)
    return dice_from_counts(shape.inter[:, :n], shape.area[:, :n], shape.truth_area[:, None])


def fit_class(seg1: Counts, shape: Counts | None, score: np.ndarray | None, min_areas: tuple[int, ...]) -> ClassFit:
    """Fit one class. `seg1`: counts of seg1's maps (any grid); `shape`: counts of the shape maps
    (the 255 plain levels are used); `score`: (N,) class scores for the gate, or None."""
    empty = (seg1.truth_area == 0).astype(float)
    shape_dice = None if shape is None else _shape_dice(shape)

    def combine(rows: np.ndarray) -> tuple[ClassRule, int | None, np.ndarray, np.ndarray]:
        """Best seg1 rule, then shape level, on `rows`; per-map Dice and presence on every map."""
        found = best(seg1.subset(rows), min_areas)
        column = int(np.argmax(found.scores.max(1)))
        rule = ClassRule(found.level, found.min_area, found.min_component)
        on = _present(seg1, column, found.min_area)
        if shape_dice is None:
            return rule, None, map_dice(seg1.area, seg1.inter, seg1.truth_area, column, found.min_area), on
        combined = np.where(on[:, None], shape_dice, empty[:, None])  # (N, 255)
        level = int(np.argmax(combined[rows].mean(0)))
        present = on & (shape.area[:, level] > 0)
        return rule, level, combined[:, level], present

    everything = np.ones(len(empty), bool)
    rule, level, dice, present = combine(everything)
    if score is not None:
        swept = gate_scores(dice, empty > 0, score, GATES)
        gate = float(GATES[np.argmax(swept)])
        if swept.max() > dice.mean() and (score > gate).any():
            kept = score > gate
            candidates = [(rule, level, dice, present), combine(kept)]  # the rules as they were, refitted on kept
            gated = [(r, lv, np.where(kept, d, empty), p & kept) for r, lv, d, p in candidates]
            rule, level, dice, present = max(gated, key=lambda c: c[2].mean())  # ties: the unrefitted rules
            rule = ClassRule(rule.level, rule.min_area, rule.min_component, gate)
    if shape_dice is None:  # plain columns come first: column = level
        plain = map_dice(seg1.area, seg1.inter, seg1.truth_area, rule.level, 0)
    else:
        plain = shape_dice[:, level]
    return ClassFit(rule, level, dice, present, plain)


def at_least_one(fits: list[ClassFit], scores: np.ndarray) -> np.ndarray:
    """(N, C) per-map Dice once every image without a mask keeps its highest-scoring class
    (scores (N, C)), that class's map thresholded only."""
    dice = np.stack([f.dice for f in fits], 1)
    present = np.stack([f.present for f in fits], 1)
    rows = np.flatnonzero(~present.any(1))
    k = np.argmax(scores[rows], 1)
    dice[rows, k] = np.stack([f.plain for f in fits], 1)[rows, k]
    return dice


def top_pixel(c: Counts) -> np.ndarray:
    """(N,) highest level of each map / 255: the fallback score when there is no other."""
    return (255 - np.argmax(c.hist[:, ::-1] > 0, axis=1)) / 255


def scores_of(how: str, seg1: Counts, cls_probs: np.ndarray | None, top_k: int) -> np.ndarray | None:
    """(N,) class scores of one class: classifier, top-k pixels of seg1, or their mean."""
    needs_topk = how in ("topk", "mean")
    return class_score(how, cls_probs, topk_from_histograms(seg1.hist, top_k) if needs_topk else None)


def member_levels(probs: np.ndarray, truth: np.ndarray, role: str) -> list[int]:
    """Per class, the level maximising the member's mean Dice over its OOF maps (positive rows for seg2)."""
    levels = []
    for k in range(probs.shape[1]):
        hist_all, hist_in = histograms(probs[:, k], (truth & BITS[k]) != 0)
        t_area = hist_in.sum(1)
        rows = t_area > 0 if role == "seg2" and (t_area > 0).any() else np.ones(len(t_area), bool)
        scores = grid_scores(above(hist_all)[rows], above(hist_in)[rows], t_area[rows], (0,))[:, 0]
        levels.append(int(np.argmax(scores)))
    return levels
