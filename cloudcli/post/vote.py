"""Combining models, pure numpy on uint8 probability levels (p = round(prob * 255)).

- Pixel votes over ensemble members: `majority` (each member binarised at its own level, a pixel
  kept where at least `min_votes` members agree) and `mean` (optionally weighted).
- Class scores gating a mask: the classifier's probability, the mean of the k highest pixel
  probabilities of a segmentation map ("top-k", 1st place), or the mean of both.
- Pseudo-label selection on test images: every class confidently empty or present by the
  classifier, or a large enough share of confident pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VOTES = ("majority", "mean")
CLASS_SCORES = ("none", "classifier", "topk", "mean")
ON = 255  # level of a pixel a majority vote keeps (0 otherwise): on at any threshold level 0..254


def default_min_votes(members: int) -> int:
    """More than half of the members."""
    return members // 2 + 1


def majority(probs: np.ndarray, levels: Sequence[int], min_votes: int | None = None) -> np.ndarray:
    """(M, ...) uint8 member maps, member m on where p > levels[m] -> uint8 map, ON where at least
    `min_votes` members are on (default: more than half), else 0."""
    m = len(probs)
    need = default_min_votes(m) if min_votes is None else min_votes
    if not 1 <= need <= m:
        raise ValueError(f"min_votes must be in 1..{m} for {m} members, got {need}")
    shape = (m,) + (1,) * (probs.ndim - 1)
    votes = (probs > np.asarray(levels).reshape(shape)).sum(0, dtype=np.int32)
    return np.where(votes >= need, ON, 0).astype(np.uint8)


def mean(probs: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """(M, ...) uint8 member maps -> their (weighted) mean, rounded half up to uint8."""
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, float)
    if len(w) != len(probs) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need {len(probs)} weights >= 0 with a positive sum, got {list(w)}")
    total = np.tensordot(w / w.sum(), probs.astype(np.float64), axes=1)
    return np.floor(total + 0.5 + 1e-9).astype(np.uint8)


def vote(
    probs: np.ndarray,
    how: str,
    levels: Sequence[int] | None = None,
    min_votes: int | None = None,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """`majority` (needs the members' levels) or `mean` over axis 0."""
    if how == "majority":
        if levels is None:
            raise ValueError("a majority vote needs each member's level")
        return majority(probs, levels, min_votes)
    if how == "mean":
        return mean(probs, weights)
    raise ValueError(f"unknown vote {how!r}; choose from {', '.join(VOTES)}")


def topk_from_histograms(hist: np.ndarray, k: int) -> np.ndarray:
    """(N, 256) level histograms -> (N,) mean of the k highest levels / 255 (exact; k > pixels:
    the mean of all pixels)."""
    desc = hist[:, ::-1]  # counts from level 255 down
    before = np.cumsum(desc, axis=1) - desc  # pixels above each level
    take = np.clip(k - before, 0, desc)  # how many pixels of each level are among the top k
    levels = np.arange(255, -1, -1)
    return (take * levels).sum(1) / np.maximum(take.sum(1), 1) / 255


def topk(probs: np.ndarray, k: int) -> np.ndarray:
    """(..., H, W) uint8 maps -> (...) mean of the k highest pixel levels / 255."""
    flat = probs.reshape(*probs.shape[:-2], -1)
    k = min(k, flat.shape[-1])
    top = np.partition(flat, flat.shape[-1] - k, axis=-1)[..., -k:]
    return top.mean(-1) / 255


def class_score(how: str, classifier_probs: np.ndarray | None, topk_scores: np.ndarray | None) -> np.ndarray | None:
    """Score gating a mask: none, the classifier's probability, the top-k pixel score, or their mean."""
    if how == "none":
        return None
    if how == "classifier":
        return classifier_probs
    if how == "topk":
        return topk_scores
    if how == "mean":
        return (classifier_probs + topk_scores) / 2
    raise ValueError(f"unknown class score {how!r}; choose from {', '.join(CLASS_SCORES)}")


def confident_by_classifier(classifier_probs: np.ndarray, low: float, high: float) -> np.ndarray:
    """(M, C) probabilities -> (M,) True where every class is < low (empty) or > high (present)."""
    return ((classifier_probs < low) | (classifier_probs > high)).all(1)


def confident_share(probs: np.ndarray, low: float, high: float) -> np.ndarray:
    """(M, C, H, W) uint8 maps -> (M,) share of pixels (all classes) with p < low or p > high."""
    p = probs.reshape(len(probs), -1)
    sure = (p < low * 255) | (p > high * 255)
    return sure.mean(1)
