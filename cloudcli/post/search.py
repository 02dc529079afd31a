"""Exact grid search of post-processing rules on out-of-fold uint8 probabilities. Numpy (+ numba).

The grid of one class is (pixel level, min_component) columns x min_area values. For the 255
columns without a component rule, one pass per map builds two 256-bin histograms (all pixels, and
pixels inside the true mask); reversed cumulative sums give the predicted area and the
intersection at every level at once. For the component rule, one union-find sweep per map
(cloudcli.post.components) gives the area and intersection left after dropping the components
below each min_component at every level at once. The min_area rule is then an array comparison,
and every score equals re-thresholding and re-scoring every map at every grid point (tests
compare with that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudcli.metrics import METRICS, dice_from_counts, iou_from_counts, total
from cloudcli.post.components import component_sweep
from cloudcli.post.rules import level_of
from cloudcli.ui import progress

LEVELS = np.arange(255)  # thresholds: pixel on when p > level, p in 0..255
CHUNK = 512  # maps per component sweep: a step of the progress bar, and a bounded copy of the maps


def histograms(probs: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 256) counts of each level over all pixels and inside the truth, for (N, H, W) maps."""
    n = len(probs)
    hist_all, hist_in = np.empty((n, 256), np.int64), np.empty((n, 256), np.int64)
    for i in range(n):  # one bincount of (level + 256 * inside) per map
        p = probs[i].reshape(-1).astype(np.uint16)
        both = np.bincount(p | (truth[i].reshape(-1).astype(np.uint16) << 8), minlength=512)
        hist_in[i] = both[256:]
        hist_all[i] = both[:256] + both[256:]
    return hist_all, hist_in


def above(hist: np.ndarray) -> np.ndarray:
    """(N, 256) histograms -> (N, 255) counts of pixels with p > level, for level 0..254."""
    at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # [:, v] = count of p >= v
    return at_least[:, 1:]


def component_levels(thresholds: str | tuple[float, ...]) -> tuple[int, ...]:
    """The levels at which the component rule is searched (tune.component_thresholds): "all" is
    every level 0..254, else the level of each probability threshold."""
    return tuple(range(len(LEVELS))) if thresholds == "all" else tuple(sorted({level_of(t) for t in thresholds}))


def component_counts(
    probs: np.ndarray, truth: np.ndarray, levels: tuple[int, ...], min_components: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(N, L * C) int32 predicted area and intersection with the truth once the 8-connected components
    smaller than each min_component are dropped, column l * C + c for (levels[l], min_components[c])."""
    n, width = len(probs), len(levels) * len(min_components)
    area, inter = np.empty((n, width), np.int32), np.empty((n, width), np.int32)
    with progress("components", n, "maps") as advance:
        for start in range(0, n, CHUNK):
            rows = slice(start, min(n, start + CHUNK))
            area[rows], inter[rows] = component_columns(probs[rows], truth[rows], levels, min_components)
            advance(rows.stop - rows.start)
    return area, inter


def component_columns(
    probs: np.ndarray, truth: np.ndarray, levels: tuple[int, ...], min_components: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """component_counts of a few maps, without a progress bar (the caller's batch)."""
    a, i = component_sweep(np.asarray(probs), np.asarray(truth), min_components)  # (n, 255, C): every level
    return a[:, list(levels)].reshape(len(a), -1), i[:, list(levels)].reshape(len(a), -1)


@dataclass(frozen=True)
class Counts:
    """Predicted area and intersection of N maps at G grid columns, a column being (level, min_component)."""

    area: np.ndarray  # (N, G) int32
    inter: np.ndarray  # (N, G) int32
    truth_area: np.ndarray  # (N,)
    levels: np.ndarray  # (G,)
    min_components: np.ndarray  # (G,)
    hist: np.ndarray  # (N, 256) level histogram of each map

    def subset(self, rows: np.ndarray) -> Counts:
        if rows.dtype == bool and rows.all():  # every row: no copy of the (N, G) counts
            return self
        return Counts(
            self.area[rows], self.inter[rows], self.truth_area[rows], self.levels, self.min_components, self.hist[rows]
        )


def histogram_counts(hist_all: np.ndarray, hist_in: np.ndarray) -> Counts:
    """Counts at the 255 levels without a component rule, from (N, 256) level histograms of all
    pixels and of the pixels inside the truth."""
    area, inter = above(hist_all).astype(np.int32), above(hist_in).astype(np.int32)
    return Counts(area, inter, hist_in.sum(1), LEVELS, np.zeros(len(LEVELS), int), hist_all)


def counts(
    probs: np.ndarray, truth: np.ndarray, min_components: tuple[int, ...] = (0,), component_levels: tuple[int, ...] = ()
) -> Counts:
    """The 255 levels without a component rule, then component_levels x each min_component > 1
    (column 255 + l * R + r for (component_levels[l], rule r))."""
    plain = histogram_counts(*histograms(probs, truth))
    rules = tuple(sorted({int(c) for c in min_components if c > 1}))
    if not (rules and len(component_levels)):
        return plain
    area, inter = component_counts(probs, truth, tuple(component_levels), rules)
    return with_components(plain, area, inter, tuple(component_levels), rules)


def with_components(
    plain: Counts, area: np.ndarray, inter: np.ndarray, component_levels: tuple[int, ...], rules: tuple[int, ...]
) -> Counts:
    """`plain` counts followed by the component columns (component_counts' layout)."""
    return Counts(
        np.hstack([plain.area, area]),
        np.hstack([plain.inter, inter]),
        plain.truth_area,
        np.concatenate([plain.levels, np.repeat(component_levels, len(rules))]),
        np.concatenate([plain.min_components, np.tile(rules, len(component_levels))]),
        plain.hist,
    )


def grid_scores(
    area: np.ndarray, inter: np.ndarray, truth_area: np.ndarray, min_areas: tuple[int, ...], metric: str = "dice"
) -> np.ndarray:
    """(G, A) score over maps (tune.metric: mean Dice, pooled Jaccard, mean IoU), from (N, G)
    predicted areas and intersections per grid column.

    In one pass over the (N, G) counts, whatever the number of min_areas: each (map, column) falls
    in the bin of how many min_areas its area passes, per-bin sums (per column) of what a kept map
    adds give each min_area's total as a sum over the bins it keeps. Mean Dice (IoU): the maps
    emptied score 1 where the truth is empty, so a total is (that over all maps) + (kept maps'
    score - that). Pooled Jaccard: sums of the kept maps' intersections and areas."""
    if metric not in METRICS:
        total(metric, area, area, truth_area)  # raises, naming the metrics
    order = np.argsort(min_areas, kind="stable")
    bounds = np.asarray(min_areas)[order]
    n, g = area.shape
    t = np.asarray(truth_area)
    emptied = (t == 0).astype(np.float64)  # (N,) a map's score once emptied, Dice or IoU
    kept = np.zeros((3, g, len(bounds) + 1))  # per column and bin: score - emptied, intersections, areas
    for lo in range(0, n, CHUNK * 4):  # bounded (rows, G) temporaries
        rows = slice(lo, lo + CHUNK * 4)
        a, i, tr = area[rows], inter[rows], t[rows, None]
        index = (np.searchsorted(bounds, a, "right") + (len(bounds) + 1) * np.arange(g)).ravel()  # (column, bin)
        if metric == "jaccard":
            kept[1] += np.bincount(index, i.ravel(), kept[1].size).reshape(g, -1)
            kept[2] += np.bincount(index, a.ravel(), kept[2].size).reshape(g, -1)
        else:
            score = (dice_from_counts if metric == "dice" else iou_from_counts)(i, a, tr) - emptied[rows, None]
            kept[0] += np.bincount(index, score.ravel(), kept[0].size).reshape(g, -1)
    suffix = np.cumsum(kept[:, :, ::-1], 2)[:, :, ::-1][:, :, 1:]  # [.., j]: the maps passing bounds[j]
    if metric == "jaccard":
        sorted_scores = iou_from_counts(suffix[1], suffix[2], t.sum())
    else:
        sorted_scores = (emptied.sum() + suffix[0]) / max(n, 1)
    scores = np.empty((g, len(bounds)))
    scores[:, order] = sorted_scores
    return scores


def map_dice(area: np.ndarray, inter: np.ndarray, truth_area: np.ndarray, column: int, min_area: int) -> np.ndarray:
    """(N,) Dice of every map at one grid point (column, min_area)."""
    keep = area[:, column] >= min_area
    return dice_from_counts(np.where(keep, inter[:, column], 0), np.where(keep, area[:, column], 0), truth_area)


@dataclass(frozen=True)
class SearchResult:
    scores: np.ndarray  # (G, A) mean Dice for each (column, min_area); the first 255 columns: levels, no component rule
    levels: np.ndarray  # (G,) level of each column
    min_components: np.ndarray  # (G,) min_component of each column (0 = off)
    min_areas: tuple[int, ...]
    level: int  # best
    min_component: int
    min_area: int
    score: float


def best(c: Counts, min_areas: tuple[int, ...], metric: str = "dice") -> SearchResult:
    """Best grid point; ties go to the earliest column (lowest level, no component rule), then the
    smallest min_area."""
    scores = grid_scores(c.area, c.inter, c.truth_area, tuple(min_areas), metric)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return SearchResult(
        scores, c.levels, c.min_components, tuple(min_areas), int(c.levels[i]), int(c.min_components[i]),
        int(min_areas[j]), float(scores[i, j]),
    )  # fmt: skip


def search(
    probs: np.ndarray,
    truth: np.ndarray,
    min_areas: tuple[int, ...],
    min_components: tuple[int, ...] = (0,),
    component_levels: tuple[int, ...] = (),
    metric: str = "dice",
) -> SearchResult:
    """Best (level, min_component, min_area) of one class over (N, H, W) uint8 maps and (N, H, W)
    truth masks: all 255 levels without a component rule, and `component_levels` (e.g. LEVELS:
    every one) x `min_components`."""
    return best(counts(probs, truth, min_components, component_levels), min_areas, metric)


def gate_scores(
    dice_kept: np.ndarray, truth_empty: np.ndarray, scores: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """(T,) mean Dice when a map is emptied wherever its class score <= threshold.
    An emptied map scores 1 if its truth is empty, else 0."""
    gated = scores[None, :] <= thresholds[:, None]  # (T, N)
    return np.where(gated, truth_empty[None, :].astype(float), dice_kept[None, :]).mean(1)


def gate_totals(
    metric: str, inter: np.ndarray, area: np.ndarray, truth_area: np.ndarray, scores: np.ndarray, thresholds
) -> np.ndarray:
    """(T,) score when a map (its (N,) counts) is emptied wherever its class score <= threshold."""
    if metric == "dice":  # per-map Dice once, then a mean per threshold
        return gate_scores(dice_from_counts(inter, area, truth_area), truth_area == 0, scores, np.asarray(thresholds))
    kept = scores[None, :] > np.asarray(thresholds)[:, None]  # (T, N)
    return total(metric, np.where(kept, inter, 0), np.where(kept, area, 0), truth_area[None, :], axis=1)
