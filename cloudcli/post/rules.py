"""Post-processing of uint8 probability maps into masks. Pure numpy (+ OpenCV components).

Probabilities are stored as uint8 levels p = round(prob * 255). A class's mask is the pixels with
p > `level` (level 0..254; level 127 ~ prob 0.5), emptied when fewer than `min_area` pixels remain;
optionally connected components smaller than `min_component` pixels are dropped first.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ClassRule:
    level: int = 127  # pixel threshold: p > level
    min_area: int = 0  # empty the mask when its area is below this
    min_component: int = 0  # drop connected components smaller than this (0 = keep all)
    gate_threshold: float | None = None  # the gate: empty when the class score <= this


def level_of(threshold: float) -> int:
    """uint8 level equivalent to a float threshold on probabilities: with p = round(prob * 255),
    p > level <=> prob > threshold (to the nearest level; 0.5 -> 127)."""
    return int(np.clip(np.floor(threshold * 255), 0, 254))


RULE_FIELDS = ("level", "min_area", "min_component")  # a class's rule without its gate


def drop_small_components(mask: np.ndarray, min_component: int) -> np.ndarray:
    """(H, W) 0/1 mask without its 8-connected components of fewer than `min_component` pixels."""
    if min_component <= 1 or not mask.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_component
    keep[0] = False  # background
    return keep[labels].astype(np.uint8)


def apply_rule(probs: np.ndarray, rule: ClassRule, score: float | None = None) -> np.ndarray:
    """(H, W) uint8 probabilities of one class -> (H, W) uint8 0/1 mask."""
    mask = (probs > rule.level).astype(np.uint8)
    mask = drop_small_components(mask, rule.min_component)
    gated = rule.gate_threshold is not None and score is not None and score <= rule.gate_threshold
    if gated or mask.sum() < rule.min_area:
        mask[:] = 0
    return mask


def postprocess(
    probs: np.ndarray,
    rules: list[ClassRule],
    scores: np.ndarray | None = None,
    at_least_one: bool = False,
    shape: np.ndarray | None = None,
    shape_levels: list[int] | None = None,
) -> np.ndarray:
    """(C, H, W) uint8 probabilities of one image -> (C, H, W) uint8 masks.

    `scores` (C,) are the class scores the rules' gates compare (classifier probability, top-k...).
    Two-stage: with `shape` (C, H, W) (e.g. a seg2 vote), `probs` (seg1) and the rules only decide
    whether a class is present; the mask drawn is shape > shape_levels[k]. With `at_least_one`,
    an image left with no mask keeps the class with the highest score (else the highest pixel
    probability), its map thresholded only.
    """
    masks = np.stack(
        [apply_rule(p, r, None if scores is None else float(scores[k])) for k, (p, r) in enumerate(zip(probs, rules))]
    )
    if shape is not None:
        masks = np.stack([(s > level).astype(np.uint8) * m.any() for s, level, m in zip(shape, shape_levels, masks)])
    if at_least_one and not masks.any():
        best = scores if scores is not None else probs.reshape(len(probs), -1).max(1)
        k = int(np.argmax(best))
        masks[k] = probs[k] > rules[k].level if shape is None else shape[k] > shape_levels[k]
    return masks
