"""The two-stage combination of the 3rd place, fitted exactly on out-of-fold predictions.

Per class, greedily, on the per-map counts of cloudcli.post.search (no map is re-thresholded):

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

from cloudcli.metrics import dice_from_counts, total
from cloudcli.post.rules import ClassRule
from cloudcli.post.search import LEVELS, Counts, above, best, gate_totals, grid_scores
from cloudcli.post.vote import class_score, topk_from_histograms

GATES = np.round(np.arange(0.0, 1.0, 0.01), 2)


@dataclass(frozen=True)
class ClassFit:
    rule: ClassRule  # seg1's level, min_area, min_component and the gate threshold
    shape_level: int | None  # mask = shape > shape_level where seg1 says present; None: seg1's own mask
    inter: np.ndarray  # (N,) intersection of each map's fitted mask with the truth
    area: np.ndarray  # (N,) area of each fitted mask
    truth_area: np.ndarray  # (N,)
    present: np.ndarray  # (N,) bool: the fitted rule leaves a non-empty mask
    plain_inter: np.ndarray  # (N,) counts of the mask map thresholded only (what "at least one" keeps)
    plain_area: np.ndarray

    @property
    def dice(self) -> np.ndarray:
        """(N,) per-map Dice of the fitted rule."""
        return dice_from_counts(self.inter, self.area, self.truth_area)

    @property
    def plain(self) -> np.ndarray:
        """(N,) Dice of the mask map thresholded only."""
        return dice_from_counts(self.plain_inter, self.plain_area, self.truth_area)


def _present(c: Counts, column: int, min_area: int) -> np.ndarray:
    area = c.area[:, column]
    return (area >= min_area) & (area > 0)


def fit_class(
    seg1: Counts, shape: Counts | None, score: np.ndarray | None, min_areas: tuple[int, ...], metric: str = "dice"
) -> ClassFit:
    """Fit one class for `metric` (tune.metric). `seg1`: counts of seg1's maps (any grid);
    `shape`: counts of the shape maps (the 255 plain levels are used); `score`: (N,) class scores
    for the gate, or None."""
    truth, n = seg1.truth_area, len(LEVELS)

    def score_of(inter: np.ndarray, area: np.ndarray) -> float:
        return float(total(metric, inter, area, truth))

    def combine(rows: np.ndarray) -> tuple[ClassRule, int | None, np.ndarray, np.ndarray, np.ndarray]:
        """Best seg1 rule, then shape level, on `rows`; counts and presence on every map."""
        found = best(seg1.subset(rows), min_areas, metric)
        column = int(np.argmax(found.scores.max(1)))
        rule = ClassRule(found.level, found.min_area, found.min_component)
        on = _present(seg1, column, found.min_area)
        if shape is None:
            return rule, None, np.where(on, seg1.inter[:, column], 0), np.where(on, seg1.area[:, column], 0), on
        inter = np.where(on[:, None], shape.inter[:, :n], 0)  # (N, 255): shape > level where seg1 says present
        area = np.where(on[:, None], shape.area[:, :n], 0)
        level = int(np.argmax(total(metric, inter[rows], area[rows], truth[rows, None])))
        return rule, level, inter[:, level], area[:, level], on & (shape.area[:, level] > 0)

    everything = np.ones(len(truth), bool)
    rule, level, inter, area, present = combine(everything)
    if score is not None:
        swept = gate_totals(metric, inter, area, truth, score, GATES)
        gate = float(GATES[np.argmax(swept)])
        if swept.max() > score_of(inter, area) and (score > gate).any():
            kept = score > gate
            candidates = [
                (rule, level, inter, area, present),
                combine(kept),
            ]  # the rules as they were, refitted on kept
            gated = [(r, lv, np.where(kept, i, 0), np.where(kept, a, 0), p & kept) for r, lv, i, a, p in candidates]
            rule, level, inter, area, present = max(gated, key=lambda c: score_of(c[2], c[3]))  # ties: unrefitted
            rule = ClassRule(rule.level, rule.min_area, rule.min_component, gate)
    plain = seg1 if shape is None else shape
    column = rule.level if shape is None else level  # plain columns come first: column = level
    return ClassFit(rule, level, inter, area, truth, present, plain.inter[:, column], plain.area[:, column])


def at_least_one_counts(fits: list[ClassFit], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) intersections and areas once every image without a mask keeps its highest-scoring
    class (scores (N, C)), that class's map thresholded only."""
    inter = np.stack([f.inter for f in fits], 1)
    area = np.stack([f.area for f in fits], 1)
    present = np.stack([f.present for f in fits], 1)
    rows = np.flatnonzero(~present.any(1))
    k = np.argmax(scores[rows], 1)
    inter[rows, k] = np.stack([f.plain_inter for f in fits], 1)[rows, k]
    area[rows, k] = np.stack([f.plain_area for f in fits], 1)[rows, k]
    return inter, area


def at_least_one(fits: list[ClassFit], scores: np.ndarray) -> np.ndarray:
    """(N, C) per-map Dice after the "at least one class" rule (see at_least_one_counts)."""
    inter, area = at_least_one_counts(fits, scores)
    return dice_from_counts(inter, area, np.stack([f.truth_area for f in fits], 1))


def top_pixel(c: Counts) -> np.ndarray:
    """(N,) highest level of each map / 255: the fallback score when there is no other."""
    return (255 - np.argmax(c.hist[:, ::-1] > 0, axis=1)) / 255


def scores_of(how: str, seg1: Counts, classifier_probs: np.ndarray | None, top_k: int) -> np.ndarray | None:
    """(N,) class scores of one class: classifier, top-k pixels of seg1, or their mean."""
    needs_topk = how in ("topk", "mean")
    return class_score(how, classifier_probs, topk_from_histograms(seg1.hist, top_k) if needs_topk else None)


def member_levels(hist: np.ndarray, role: str, metric: str = "dice", rows: np.ndarray | None = None) -> list[int]:
    """Per class, the level maximising a member's `metric` over its OOF maps, from their (N, C, 2,
    256) histograms (all pixels, inside the truth: what infer writes); over the positive rows for
    seg2; only over `rows` (bool (N,)) when given."""
    levels = []
    for k in range(hist.shape[1]):
        hist_all, hist_in = hist[:, k, 0], hist[:, k, 1]
        if rows is not None:
            hist_all, hist_in = hist_all[rows], hist_in[rows]
        t_area = hist_in.sum(1)
        used = t_area > 0 if role == "seg2" and (t_area > 0).any() else np.ones(len(t_area), bool)
        scores = grid_scores(above(hist_all)[used], above(hist_in)[used], t_area[used], (0,), metric)[:, 0]
        levels.append(int(np.argmax(scores)))
    return levels
