"""Pseudo labels from predictions: which test images are confident enough to keep, the two-stage
rules their masks are drawn with (fitted on out-of-fold maps), soft targets.

The rules of a fold's labels are fitted on a subset of the out-of-fold rows (`rows`): leak-free
labels for fold k use the other folds' rows only, so fold k's validation labels never shape them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cloudcli.config import PseudoConfig
from cloudcli.data.maps import read_ahead
from cloudcli.errors import DataError
from cloudcli.post.kernels import ON, class_histograms, majority_vote
from cloudcli.post.search import Counts, histogram_counts
from cloudcli.post.twostage import ClassFit, fit_class, member_levels
from cloudcli.post.vote import confident_by_classifier, confident_share, default_min_votes
from cloudcli.ui import progress

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


def seg1_counts(hist: np.ndarray) -> list[Counts]:
    """Per class, the level counts of seg1's OOF maps from their (N, C, 2, 256) histograms (what
    infer wrote): computed once, then subset for each fold's rules."""
    return [histogram_counts(hist[:, k, 0], hist[:, k, 1]) for k in range(hist.shape[1])]


def fold_levels(hists: list[np.ndarray], roles: list[str], rows: np.ndarray) -> np.ndarray:
    """(S, C) levels of the vote members, each fitted on the OOF `rows` (bool (N,)) from its histograms."""
    return np.array([member_levels(h, r, rows=rows) for h, r in zip(hists, roles)])


def vote_pixels(shape_maps: list, truth, levels: list[np.ndarray]) -> np.ndarray:
    """(V, N, C, 2) pixels the majority vote of the members' OOF maps keeps, and how many of them
    are inside the truth, for each of V sets of (S, C) member levels (one per fold's rules): one
    pass over the maps, a batch at a time (`truth[rows]`: packed truth of those rows)."""
    n, n_classes = len(shape_maps[0]), shape_maps[0].shape[1]
    out = np.zeros((len(levels), n, n_classes, 2), np.int64)
    need = default_min_votes(len(shape_maps))
    with progress("pseudo vote", n, "images", lines=False) as advance:
        for rows, maps in read_ahead(shape_maps):
            packed = truth[rows]
            for v, lv in enumerate(levels):
                hist = class_histograms(majority_vote(maps, lv, need), packed)  # every pixel 0 or ON
                out[v, rows] = hist[..., ON]
            advance(rows.stop - rows.start)
    return out


def vote_counts(pixels: np.ndarray, truth_area: np.ndarray, size: int) -> list[Counts]:
    """Per class, the level counts of a majority vote (every pixel 0 or ON) from its (N, C, 2) kept
    pixels (vote_pixels), the (N, C) truth areas and the pixels of a map."""
    out = []
    for k in range(pixels.shape[1]):
        on, on_in, t = pixels[:, k, 0], pixels[:, k, 1], truth_area[:, k]
        hist_all, hist_in = np.zeros((len(on), 256), np.int64), np.zeros((len(on), 256), np.int64)
        hist_all[:, 0], hist_all[:, ON], hist_in[:, 0], hist_in[:, ON] = size - on, on, t - on_in, on_in
        out.append(histogram_counts(hist_all, hist_in))
    return out


def fit_rules(
    cfg: PseudoConfig,
    seg1: list[Counts],
    shape: list[Counts] | None,
    classifier_oof: np.ndarray | None,
    rows: np.ndarray,
) -> tuple[list[ClassFit], np.ndarray]:
    """The two-stage rules per class fitted on the OOF rows `rows` (bool (N,)) alone: seg1's rule
    (`seg1`: its counts on every row), the level of the members' vote (`shape`: its counts on every
    row, with this fold's member levels), the classifier gate; and which of those rows' truth masks
    are empty (n, C)."""
    fits, empty = [], []
    for k, seg1_k in enumerate(seg1):
        shape_k = None if shape is None else shape[k].subset(rows)
        score = None if classifier_oof is None else classifier_oof[rows, k]
        fits.append(fit_class(seg1_k.subset(rows), shape_k, score, cfg.min_areas))
        empty.append(seg1_k.truth_area[rows] == 0)
    return fits, np.stack(empty, 1)


@dataclass(frozen=True)
class FoldFit:
    """The rules of one fold's labels and the OOF rows they were fitted on."""

    rows: np.ndarray  # (N,) bool: the rows the rules were fitted on
    fits: list[ClassFit]
    levels: np.ndarray | None  # (S, C) the vote members' levels
    empty: np.ndarray  # (n, C) which truth masks of those rows are empty


def fit_folds(
    cfg: PseudoConfig, maps: list, hists: list[np.ndarray], roles: list[str], truth, classifier, fit_rows: list
) -> list[FoldFit]:
    """The rules fitted on each set of OOF rows in `fit_rows` (one per fold's labels): seg1's from
    its histograms (`hists`: seg1's, then each vote member's), the members' levels from theirs, and
    the vote of every set's levels counted in one pass over the members' OOF `maps`."""
    seg1 = seg1_counts(hists[0])
    levels = [fold_levels(hists[1:], roles[1:], rows) for rows in fit_rows] if len(maps) > 1 else None
    shapes = [None] * len(fit_rows)
    if levels is not None:
        truth_area = np.stack([c.truth_area for c in seg1], 1)
        pixels = vote_pixels(maps[1:], truth, levels)
        shapes = [vote_counts(p, truth_area, int(np.prod(maps[0].shape[2:]))) for p in pixels]
    out = []
    for i, rows in enumerate(fit_rows):
        fits, empty = fit_rules(cfg, seg1, shapes[i], classifier, rows)
        out.append(FoldFit(rows, fits, None if levels is None else levels[i], empty))
    return out


def rule_of(fit: ClassFit, levels: np.ndarray | None, k: int) -> dict:
    """One class's fitted rule, as meta.json records it."""
    return {
        "level": fit.rule.level,
        "min_area": fit.rule.min_area,
        "shape_level": fit.shape_level,
        "gate_threshold": fit.rule.gate_threshold,
        "member_levels": None if levels is None else [int(v) for v in levels[:, k]],
    }
