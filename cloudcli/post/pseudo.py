"""Pseudo labels from predictions: which test images are confident enough to keep, the two-stage
rules their masks are drawn with (fitted on out-of-fold maps), soft targets.

The rules of a fold's labels are fitted on a subset of the out-of-fold rows (`rows`): leak-free
labels for fold k use the other folds' rows only, so fold k's validation labels never shape them.
"""

from __future__ import annotations

import cv2
import numpy as np

from cloudcli.config import PseudoConfig
from cloudcli.data.cache import BITS
from cloudcli.errors import DataError
from cloudcli.post.search import Counts, counts
from cloudcli.post.twostage import ClassFit, fit_class, member_levels
from cloudcli.post.vote import VoteMaps, confident_by_classifier, confident_share

CHUNK = 32  # test images read at a time


def select(cfg: PseudoConfig, classifier_probs: np.ndarray | None, seg1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep (M,) bool, confidence (M,)) of test images. classifier_probs (M, C); seg1 (M, C, H, W) uint8.

    classifier: confidence = the smallest distance of a class probability beyond its bound (>= 0
    when kept); pixels: the share of confident pixels."""
    if cfg.rule == "classifier":
        if classifier_probs is None:
            raise DataError("pseudo.rule classifier needs pseudo.classifier")
        margin = np.maximum(cfg.low - classifier_probs, classifier_probs - cfg.high).min(1)
        return confident_by_classifier(classifier_probs, cfg.low, cfg.high), margin
    share = np.concatenate(
        [
            confident_share(np.asarray(seg1[i : i + CHUNK]), cfg.pixel_low, cfg.pixel_high)
            for i in range(0, len(seg1), CHUNK)
        ]
    )
    return share > cfg.min_share, share


def soft_label(probs: list[np.ndarray], masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) uint8 soft target of one image: the mean of the label models' (C, H, W) uint8
    probabilities, 0 for a class whose hard label is empty (the pipeline says absent), resized."""
    mean = np.mean(np.stack(probs), 0).astype(np.float32)  # (C, H, W)
    mean[~masks.reshape(len(masks), -1).any(1)] = 0
    return np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_AREA) for m in mean]).round().astype(np.uint8)


def seg1_counts(seg1: np.ndarray, truth: np.ndarray) -> list[Counts]:
    """Per class, the level counts of seg1's (N, C, H, W) OOF maps against (N, H, W) packed truth:
    computed once, then subset for each fold's rules."""
    return [counts(seg1[:, k], (truth & BITS[k]) != 0) for k in range(seg1.shape[1])]


def fit_rules(
    cfg: PseudoConfig,
    truth: np.ndarray,
    oofs: list[np.ndarray],
    roles: list[str],
    classifier_oof: np.ndarray | None,
    rows: np.ndarray,
    seg1: list[Counts],
) -> tuple[list[ClassFit], np.ndarray | None, np.ndarray]:
    """The two-stage rules per class fitted on the OOF maps `rows` (bool (N,)) alone: seg1's rule
    (`seg1`: its counts on every row), the vote members' levels (S, C), the classifier gate; and
    which of those rows' truth masks are empty (n, C)."""
    shape_maps, shape_roles = oofs[1:], roles[1:]
    levels = None
    if shape_maps:
        levels = np.array([member_levels(o, truth, r, rows=rows) for o, r in zip(shape_maps, shape_roles)])
    fits, empty = [], []
    for k, seg1_k in enumerate(seg1):
        shape = None
        if shape_maps:
            shape = counts(VoteMaps(shape_maps, k, "majority", levels[:, k]), (truth & BITS[k]) != 0).subset(rows)
        score = None if classifier_oof is None else classifier_oof[rows, k]
        fits.append(fit_class(seg1_k.subset(rows), shape, score, cfg.min_areas))
        empty.append(seg1_k.truth_area[rows] == 0)
    return fits, levels, np.stack(empty, 1)


def rule_of(fit: ClassFit, levels: np.ndarray | None, k: int) -> dict:
    """One class's fitted rule, as meta.json records it."""
    return {
        "level": fit.rule.level,
        "min_area": fit.rule.min_area,
        "shape_level": fit.shape_level,
        "gate_threshold": fit.rule.gate_threshold,
        "member_levels": None if levels is None else [int(v) for v in levels[:, k]],
    }
