"""Suspect labels: where out-of-fold predictions contradict the labels, and are sure of it.

On Cloud N's recipe for noisy labels, without reading every image: let models that never trained
on an image judge its label, and look first at the labels they contradict most confidently.

With the (C, H, W) uint8 maps (round(255 p), at the scoring size) of one or more models, a pixel is
*confidently with* class c where every model's probability of c is above `high`, *confidently
without* it where every model's is below `low`: with several models a pixel counts only where all
of them are sure. Then per (image, class), as shares of the image:

    missing[c] = |confidently with c, not labelled c| / (H W)   the models see c where the label has none
    extra[c]   = |confidently without c, labelled c| / (H W)    the label has c where the models see none
    score[c]   = missing[c] + extra[c]

score[c] is the share of the image whose label of c would have to change to agree with every pixel
the models are sure of; an image's score is the sum over its classes (the whole edit), its class
the class of the highest score. Why this measure:

- Confident pixels only: the fringe of a cloud, where labellers and models legitimately differ
  (probabilities between low and high), counts for nothing, so ordinary boundary noise does not
  outrank a gross error.
- Shares of the image, not of the mask: missing and extra are in one unit and add up, and a few
  dubious pixels of a tiny mask never outrank a dropped mask over half the image.
- Every gross error scores its area: a dropped mask scores its area (missing), a spurious one its
  area (extra), a shifted one twice the area that moved (both), a swapped class (a drawn as b)
  twice its area (missing[a] + extra[b]).
- With a classifier's probabilities p: missing[c] x p_c and extra[c] x (1 - p_c), so a class the
  classifier is also sure of keeps its score and one it doubts loses it.

The kind of the image's disagreement, judged on its top class (its class and the other's
disagreement at least HALF of that class's score):

- wrong class: that much of it lies where another class disagrees the other way (the models see
  a where the label says b, and are sure it is not b); `cls` is the class the label names (b),
  `seen_as` the class the models see (a);
- wrong place: both missing and extra, the smaller at least HALF the larger (a shifted mask);
- missing label: mostly missing (a mask the labels lack); extra label: mostly extra.

Pure numpy, vectorised over images and pixels; no file IO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = ("missing label", "extra label", "wrong place", "wrong class")  # kind codes 0..3; -1: no disagreement
HALF = 0.5  # share of the disagreement that names it wrong class / wrong place (see above)


def confident_levels(low: float, high: float) -> tuple[int, int]:
    """(below, above): a map m = round(255 p) is confidently without a class where m < below
    (p < low) and confidently with it where m > above (p > high)."""
    return math.ceil(round(255 * low, 6)), math.floor(round(255 * high, 6))


@dataclass(frozen=True)
class Disagreement:
    """Confident disagreement of a batch of images (shares of the image)."""

    missing: np.ndarray  # (n, C) the models see the class where the label has none
    extra: np.ndarray  # (n, C) the label has the class where the models see none
    swapped: np.ndarray  # (n, C, C) [a, b]: the models see a (unlabelled) where the label says b (models: not b)

    @property
    def scores(self) -> np.ndarray:
        """(n, C) score of each class."""
        return self.missing + self.extra

    @staticmethod
    def concat(parts: list[Disagreement]) -> Disagreement:
        return Disagreement(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("missing", "extra", "swapped")))


def confident_masks(maps: list[np.ndarray], below: int, above: int) -> tuple[np.ndarray, np.ndarray]:
    """(with, without): (n, C, H, W) bools where every model's map is above `above`, resp. below `below`."""
    lowest, highest = maps[0], maps[0]
    for m in maps[1:]:
        lowest, highest = np.minimum(lowest, m), np.maximum(highest, m)
    return lowest > above, highest < below


def disagreement(
    maps: list[np.ndarray], truth: np.ndarray, below: int, above: int, probs: np.ndarray | None = None
) -> Disagreement:
    """Each model's (n, C, H, W) uint8 `maps`, the (n, C, H, W) 0/1 `truth`, the levels of
    `confident_levels`, and (n, C) classifier probabilities or None."""
    present, absent = confident_masks(maps, below, above)
    labelled = truth != 0
    seen, unseen = present & ~labelled, absent & labelled  # (n, C, H, W)
    n, k, h, w = truth.shape
    swapped = np.zeros((n, k, k))
    for a in range(k):
        for b in range(k):
            if a != b:
                swapped[:, a, b] = np.count_nonzero(seen[:, a] & unseen[:, b], axis=(1, 2))
    missing = np.count_nonzero(seen, axis=(2, 3)) / (h * w)
    extra = np.count_nonzero(unseen, axis=(2, 3)) / (h * w)
    swapped /= h * w
    if probs is not None:
        p = np.asarray(probs, np.float64)
        missing, extra = missing * p, extra * (1 - p)
        swapped *= p[:, :, None] * (1 - p[:, None, :])
    return Disagreement(missing, extra, swapped)


@dataclass(frozen=True)
class Ranked:
    """Per image: its score, class, kind and (wrong class) the class the models see."""

    score: np.ndarray  # (n,) sum of the class scores
    class_scores: np.ndarray  # (n, C)
    cls: np.ndarray  # (n,) class index: the top class (wrong class: the class the label names); -1: none
    kind: np.ndarray  # (n,) index into KINDS; -1 where the image does not disagree
    seen_as: np.ndarray  # (n,) class the models see there (wrong class), else -1


def judge(d: Disagreement) -> Ranked:
    """Each image's score, class and kind (module docstring), vectorised over images."""
    scores = d.scores
    rows, top = np.arange(len(scores)), scores.argmax(1)
    m, e, s = d.missing[rows, top], d.extra[rows, top], scores[rows, top]
    as_seen = d.swapped[rows, top, :]  # (n, C): top is seen where the label says b
    as_label = d.swapped[rows, :, top]  # (n, C): the label says top where a is seen
    s_seen, s_label = as_seen.max(1), as_label.max(1)
    wrong_class = (np.maximum(s_seen, s_label) >= HALF * s) & (s > 0)
    by_seen = s_seen >= s_label
    label_cls = np.where(by_seen, as_seen.argmax(1), top)
    seen_cls = np.where(by_seen, top, as_label.argmax(1))
    placed = np.where(np.minimum(m, e) >= HALF * np.maximum(m, e), 2, np.where(m >= e, 0, 1))
    kind = np.where(s > 0, np.where(wrong_class, 3, placed), -1)
    cls = np.where(s > 0, np.where(wrong_class, label_cls, top), -1)
    return Ranked(scores.sum(1), scores, cls, kind, np.where(wrong_class, seen_cls, -1))
