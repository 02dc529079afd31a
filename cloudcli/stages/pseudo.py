"""Stage `pseudo`: confidently predicted test images, labelled by the base models, for retraining.

The labels are the base pipeline's two-stage masks (cloudcli.post.twostage): seg1's rule (level x
min_area) and the classifier gate fitted on out-of-fold maps, masks drawn by the majority vote of
the `pseudo.shape` models at their own tuned levels. Only base models (cv.models) take part, so
the stage never waits on a model it helps to train.

Which test images are kept (params `pseudo.rule`):
  classifier  every class is confidently empty (probability < low) or present (> high)
  pixels      more than min_share of the image's seg1 pixels, over all classes, are < pixel_low
              or > pixel_high (the iterative variant's confidence rule)

Writes the set described in cloudcli.data.pseudo, and metrics (images kept, the labels' OOF Dice,
and on the demo their Dice against test_truth.csv).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli.config import PseudoConfig, RoundConfig
from cloudcli.data.cache import BITS, open_cache, pack_masks, resize_mask, unpack_masks
from cloudcli.data.predictions import aligned_masks, model_folder, oof_truth, read_classifier, read_meta
from cloudcli.errors import DataError
from cloudcli.io import atomic_path, write_csv, write_json
from cloudcli.metrics import dice_from_counts, row_counts, summarize
from cloudcli.post.rules import postprocess
from cloudcli.post.search import counts
from cloudcli.post.twostage import ClassFit, fit_class, member_levels
from cloudcli.post.vote import VoteMaps, confident_by_classifier, confident_share, majority
from cloudcli.rle import encode
from cloudcli.ui import info, progress
from cloudcli.versions import versions

PARAMS = ("pseudo", "pseudo_rounds.<round>")
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


@dataclass(frozen=True)
class Labellers:
    """Prediction folders of the models that pick and label the test images."""

    seg1: Path
    shape: tuple[Path, ...]
    classifier: Path | None

    @classmethod
    def of_round(cls, cfg: PseudoConfig, round_: RoundConfig, predictions: Path) -> Labellers:
        """The base models of params `pseudo`, each named in `round_.relabel` replaced by that pseudo
        model of round `round_.after`; their folders under `predictions` (cloudcli.paths)."""

        def folder(name: str) -> Path:
            return model_folder(
                f"{round_.relabel[name]}@{round_.after}" if name in round_.relabel else name, predictions
            )

        return cls(
            folder(cfg.seg1),
            tuple(folder(m) for m in cfg.shape),
            None if cfg.classifier is None else folder(cfg.classifier),
        )


def run(
    cfg: PseudoConfig, name: str, round_: RoundConfig, predictions: Path, cache_dir: Path, out: Path, metrics: Path
) -> dict:
    """Round `name`: label the test images with the round's labellers; writes `out` and the metrics file."""
    sources = Labellers.of_round(cfg, round_, predictions)
    info(
        f"pseudo round {name}: labels from "
        + ", ".join(str(f) for f in (sources.seg1, *sources.shape, sources.classifier) if f)
    )
    report = label(cfg, sources, cache_dir, out)
    write_json(metrics, {"round": name, "after": round_.after, "relabel": round_.relabel, **report})
    return report


@dataclass(frozen=True)
class _Split:
    """One split's predictions by the labellers, rows aligned across models."""

    ids: list[str]
    maps: list[np.ndarray]  # (N, C, H, W) uint8 per model: seg1, then the shape models
    classifier: np.ndarray | None  # (N, C)


def label(cfg: PseudoConfig, sources: Labellers, cache_dir: Path, out: Path) -> dict:
    """Select confident test images with `sources` and write their labels to `out`; the report."""
    cache = open_cache(cache_dir)
    oof, test, roles = _read(sources)
    keep, confidence = select(cfg, test.classifier, test.maps[0])
    info(f"pseudo: {int(keep.sum())} of {len(keep)} test images kept by rule {cfg.rule}")
    fits, levels, empty = _fit(cfg, cache, oof.ids, oof.maps, roles, oof.classifier, sources.seg1)
    rows = np.flatnonzero(keep)
    kept_ids = [test.ids[i] for i in rows]
    test_row, truths = _kept(cache, kept_ids, sources.seg1)
    classes = cache.classes
    with atomic_path(out, is_dir=True) as tmp:
        presence, label_dice, rles = _write_masks(tmp, cfg.soft, test, rows, fits, levels, cache, truths)
        table = pd.DataFrame({"image_id": kept_ids, "test_row": test_row})
        table = table.assign(**{c: presence[:, k] for k, c in enumerate(classes)}, confidence=confidence[rows].round(6))
        write_csv(tmp / "images.csv", table)
        labels = [f"{i}_{c}" for i in kept_ids for c in classes]
        write_csv(tmp / "labels.csv", pd.DataFrame({"Image_Label": labels, "EncodedPixels": rles}))
        report = {
            "images": len(rows),
            "test_images": len(keep),
            "share": round(len(rows) / max(len(keep), 1), 4),
            "oof": summarize(np.stack([f.dice for f in fits], 1), empty, classes).as_dict(),  # the rules, out of fold
        }
        if truths is not None:
            empty_truth = truths.reshape(len(rows), len(classes), -1).max(2) == 0
            report["labels"] = summarize(label_dice, empty_truth, classes).as_dict()
        write_json(tmp / "meta.json", _meta(cfg, sources, fits, levels, classes, report))
    info(f"pseudo: wrote {out} ({len(rows)} images, labels' OOF Dice {report['oof']['dice']:.4f})")
    return report


def _read(sources: Labellers) -> tuple[_Split, _Split, list[str]]:
    """The labellers' out-of-fold and test predictions, and the role of each segmentation model."""
    folders = [sources.seg1, *sources.shape]
    roles = [read_meta(f)["role"] for f in folders]
    for folder, role in zip(folders, roles):
        if role == "classifier":
            raise DataError(
                f"{folder}: a classifier's predictions; pseudo.seg1 and pseudo.shape name segmentation models"
            )
    ids, oofs = aligned_masks(folders, "oof")
    test_ids, tests = aligned_masks(folders, "test")
    classifier_folder = sources.classifier
    classifier_oof = None if classifier_folder is None else read_classifier(classifier_folder, "oof", ids)
    classifier_test = None if classifier_folder is None else read_classifier(classifier_folder, "test", test_ids)
    return _Split(ids, oofs, classifier_oof), _Split(test_ids, tests, classifier_test), roles


def _kept(cache, kept_ids: list[str], seg1: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The kept images' rows in the cache's test arrays and, where the cache has them
    (the demos know the test masks: how good are the labels?), their true masks (K, C, H, W)."""
    test_row = pd.Index(cache.test["image_id"]).get_indexer(kept_ids)
    if (test_row < 0).any():
        raise DataError(f"{seg1 / 'test.csv'}: images not in {cache.folder}; rerun `dvc repro infer`")
    truths = None
    if cache.has_test_truth and kept_ids:
        truths = unpack_masks(cache.array("test_truth")[test_row], len(cache.classes))  # (K, C, H, W)
    return test_row, truths


def _write_masks(
    tmp: Path, soft_labels: bool, test: _Split, rows: np.ndarray, fits: list[ClassFit], levels, cache, truths
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Label the kept test `rows` into masks.npy (and soft.npy); (K, C) presence, (K, C) Dice
    against the true masks (0 without them) and the RLE of every mask at the predictions' size."""
    classes = cache.classes
    cache_size = cache.test_size
    rules, shape_levels = [f.rule for f in fits], [f.shape_level for f in fits]
    presence = np.zeros((len(rows), len(classes)), int)
    label_dice = np.zeros((len(rows), len(classes)))
    rles: list[str] = []
    small = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (len(rows), *cache_size))
    soft = None  # soft labels: (K, C, h, w) uint8 mean probability of the label models, p * 255
    if soft_labels:
        soft = np.lib.format.open_memmap(tmp / "soft.npy", "w+", np.uint8, (len(rows), len(classes), *cache_size))
    with progress("pseudo labels", len(rows), "images") as advance:
        for j, i in enumerate(rows):
            shape = None
            if len(test.maps) > 1:
                members = np.stack([np.asarray(t[i]) for t in test.maps[1:]])  # (S, C, H, W)
                shape = np.stack([majority(members[:, k], levels[:, k]) for k in range(len(classes))])
            scores = None if test.classifier is None else test.classifier[i]
            masks = postprocess(np.asarray(test.maps[0][i]), rules, scores, False, shape, shape_levels)
            small[j] = pack_masks(np.stack([resize_mask(m, cache_size) for m in masks]))
            if soft is not None:
                soft[j] = soft_label([np.asarray(t[i]) for t in test.maps], masks, cache_size)
            presence[j] = masks.reshape(len(masks), -1).any(1)
            rles += [encode(m) for m in masks]
            if truths is not None:
                label_dice[j] = dice_from_counts(*row_counts(masks[None], truths[j][None]))[0]
            advance(1)
    small.flush()
    del small, soft
    return presence, label_dice, rles


def _meta(cfg: PseudoConfig, sources: Labellers, fits: list[ClassFit], levels, classes: tuple, report: dict) -> dict:
    """meta.json of the set: the rule and thresholds, the labellers, each class's fitted rule."""
    return {
        "rule": cfg.rule,
        "soft": cfg.soft,
        "thresholds": (
            {"low": cfg.low, "high": cfg.high}
            if cfg.rule == "classifier"
            else {"pixel_low": cfg.pixel_low, "pixel_high": cfg.pixel_high, "min_share": cfg.min_share}
        ),
        "seg1": str(sources.seg1),
        "shape": [str(f) for f in sources.shape],
        "classifier": None if sources.classifier is None else str(sources.classifier),
        "rules": {c: _rule(f, levels, k) for k, (c, f) in enumerate(zip(classes, fits))},
        "report": report,
        "versions": versions(),
    }


def soft_label(probs: list[np.ndarray], masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(C, h, w) uint8 soft target of one image: the mean of the label models' (C, H, W) uint8
    probabilities, 0 for a class whose hard label is empty (the pipeline says absent), resized."""
    mean = np.mean(np.stack(probs), 0).astype(np.float32)  # (C, H, W)
    mean[~masks.reshape(len(masks), -1).any(1)] = 0
    return np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_AREA) for m in mean]).round().astype(np.uint8)


def _fit(cfg, cache, ids, oofs, roles, classifier_oof, where) -> tuple[list[ClassFit], np.ndarray | None, np.ndarray]:
    """The base two-stage rules per class fitted on OOF maps, the vote members' levels (S, C) and
    which OOF truth masks are empty (N, C)."""
    truth = oof_truth(cache, ids, where / "oof.csv")
    levels = np.array([member_levels(o, truth, r) for o, r in zip(oofs[1:], roles[1:])]) if len(oofs) > 1 else None
    fits, empty = [], []
    for k in range(len(cache.classes)):
        inside = (truth & BITS[k]) != 0
        shape = None
        if len(oofs) > 1:
            shape = counts(VoteMaps(oofs[1:], k, "majority", levels[:, k]), inside)
        seg1 = counts(oofs[0][:, k], inside)
        fits.append(fit_class(seg1, shape, None if classifier_oof is None else classifier_oof[:, k], cfg.min_areas))
        empty.append(seg1.truth_area == 0)
    return fits, levels, np.stack(empty, 1)


def _rule(fit: ClassFit, levels: np.ndarray | None, k: int) -> dict:
    return {
        "level": fit.rule.level,
        "min_area": fit.rule.min_area,
        "shape_level": fit.shape_level,
        "gate_threshold": fit.rule.gate_threshold,
        "member_levels": None if levels is None else [int(v) for v in levels[:, k]],
    }
