"""Exact grid search of pixel threshold x min_area on out-of-fold uint8 probabilities. Pure numpy.

One pass per map builds two 256-bin histograms (all pixels, and pixels inside the true mask);
reversed cumulative sums then give the predicted area and the intersection at every threshold at
once, and the min_area rule becomes an array comparison. The scores equal re-thresholding and
re-scoring every map for every grid point (tests compare with that brute force).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudcli.metrics import dice_from_counts

LEVELS = np.arange(255)  # thresholds: pixel on when p > level, p in 0..255


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


@dataclass(frozen=True)
class SearchResult:
    scores: np.ndarray  # (255, A) mean Dice for each (level, min_area)
    min_areas: tuple[int, ...]
    level: int  # best
    min_area: int
    score: float


def grid_scores(area: np.ndarray, inter: np.ndarray, truth_area: np.ndarray, min_areas: tuple[int, ...]) -> np.ndarray:
    """(255, A) mean Dice over maps, from (N, 255) predicted areas and intersections per level."""
    scores = np.empty((area.shape[1], len(min_areas)))
    t = truth_area[:, None]
    for j, a in enumerate(min_areas):
        keep = area >= a
        scores[:, j] = dice_from_counts(np.where(keep, inter, 0), np.where(keep, area, 0), t).mean(0)
    return scores


def search(probs: np.ndarray, truth: np.ndarray, min_areas: tuple[int, ...]) -> SearchResult:
    """Best (level, min_area) of one class over (N, H, W) uint8 maps and (N, H, W) truth masks.
    Ties go to the lowest level, then the smallest min_area."""
    hist_all, hist_in = histograms(probs, truth)
    scores = grid_scores(above(hist_all), above(hist_in), hist_in.sum(1), tuple(min_areas))
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return SearchResult(scores, tuple(min_areas), int(i), int(min_areas[j]), float(scores[i, j]))


def map_dice(area: np.ndarray, inter: np.ndarray, truth_area: np.ndarray, level: int, min_area: int) -> np.ndarray:
    """(N,) Dice of every map at one grid point."""
    keep = area[:, level] >= min_area
    return dice_from_counts(np.where(keep, inter[:, level], 0), np.where(keep, area[:, level], 0), truth_area)


def gate_scores(
    dice_kept: np.ndarray, truth_empty: np.ndarray, cls_probs: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """(T,) mean Dice when a map is emptied wherever its classifier probability <= threshold.
    An emptied map scores 1 if its truth is empty, else 0."""
    gated = cls_probs[None, :] <= thresholds[:, None]  # (T, N)
    return np.where(gated, truth_empty[None, :].astype(float), dice_kept[None, :]).mean(1)
