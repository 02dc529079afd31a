"""Stage `pseudo`: confidently predicted test images, labelled by the base models, for retraining.

The labels are the base pipeline's two-stage masks (cloudcli.post.twostage): seg1's rule (level x
min_area) and the classifier gate fitted on out-of-fold maps, masks drawn by the majority vote of
the `pseudo.shape` models at their own tuned levels. Only base models (cv.models) take part, so
the stage never waits on a model it helps to train.

Which test images are kept (params `pseudo.rule`):
  classifier  every class is confidently empty (probability < low) or present (> high)
  pixels      more than min_share of the image's seg1 pixels, over all classes, are < pixel_low
              or > pixel_high (the iterative variant's confidence rule)

Leak-free by default (`pseudo.labels: fold`): the set fold k's pseudo-label model trains on is
made from the test maps of the fold-k models alone (trained without fold k's validation images),
with rules fitted on the other folds' out-of-fold rows; fold k's validation images and labels
never shape it. `pseudo.labels: mean` (the 3rd place's way) labels once with the mean of every
fold model and rules fitted on every OOF row: each fold's validation labels then shape its own
pseudo-label model's training data, and its out-of-fold score comes out optimistic.

Candidates (params `pseudo.sources`): the test images and/or the training images data.exclude
leaves out (infer predicts those as unseen images: excluded / excluded_fold<k>); both are kept and
labelled by the same rules, and the set says each image's source (cloudcli.data.pseudo).

Writes one set per trained fold, `<out>/fold<k>/` as described in cloudcli.data.pseudo, a
round meta.json, and metrics (images kept, the labels' OOF Dice, and on the demo their Dice
against test_truth.csv; per fold and their mean).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import PseudoConfig, RoundConfig
from cloudcli.data.cache import open_cache, pack_masks, resize_mask, unpack_masks
from cloudcli.data.labellers import Labellers, Split, read_candidates, read_oof
from cloudcli.data.predictions import OofTruth
from cloudcli.data.pseudo import PART
from cloudcli.errors import DataError
from cloudcli.io import atomic_paths, new_array, write_csv, write_json
from cloudcli.metrics import dice_from_counts, row_counts, summarize
from cloudcli.post.pseudo import (
    FoldFit,
    fit_folds,
    rule_of,
    select,
    soft_label,
)
from cloudcli.post.rules import postprocess
from cloudcli.post.stored import oof_histograms
from cloudcli.post.vote import majority
from cloudcli.rle import encode
from cloudcli.ui import info, progress, warn
from cloudcli.versions import versions

PARAMS = ("pseudo", "pseudo_rounds.<round>")


def run(
    cfg: PseudoConfig, name: str, round_: RoundConfig, predictions: Path, cache_dir: Path, out: Path, metrics: Path
) -> dict:
    """Round `name`: label the test images with the round's labellers; writes `out` and the metrics file."""
    sources = Labellers.of_round(cfg, round_, predictions)
    info(
        f"pseudo round {name}: labels from "
        + ", ".join(str(f) for f in (sources.seg1, *sources.shape, sources.classifier) if f)
    )
    with atomic_paths((out, True), (metrics, False)) as (out_tmp, metrics_tmp):  # both or neither
        report = label(cfg, sources, cache_dir, out_tmp)
        write_json(metrics_tmp, {"round": name, "after": round_.after, "relabel": round_.relabel, **report})
    info(f"pseudo: wrote {out} ({len(report['folds'])} fold sets)")
    return report


def label(cfg: PseudoConfig, sources: Labellers, cache_dir: Path, out: Path) -> dict:
    """Label the test images for every fold the labellers were trained on, the set of fold k in
    `out`/fold<k>/ (see the module docstring for which models and rows make it; `out` is an empty
    folder); the report."""
    cache = open_cache(cache_dir)
    oof, roles = read_oof(sources)
    truth = OofTruth(cache, oof.ids, sources.seg1 / "oof.csv")
    hists = [oof_histograms(f, m, truth) for f, m in zip((sources.seg1, *sources.shape), oof.maps)]
    trained = sorted(set(oof.folds.tolist()))
    leak_free = cfg.labels == "fold" and len(trained) > 1
    if cfg.labels == "fold" and not leak_free:
        warn(
            f"pseudo: only fold {trained[0]} has out-of-fold predictions, so its labels' rules are fitted on its "
            "own validation images (the test maps are still its own models'); train more folds (cv.folds) for "
            "leak-free labels"
        )
    made = trained if cfg.labels == "fold" else trained[:1]  # mean: one set, made by every fold model
    fit_rows = [oof.folds != k if leak_free else np.ones(len(oof.folds), bool) for k in made]
    fitted = fit_folds(cfg, oof.maps, hists, roles, truth, oof.classifier, fit_rows)
    reports: dict[str, dict] = {}
    for k in trained:
        name, first = f"fold{k}", f"fold{trained[0]}"
        if k not in made:
            shutil.copytree(out / first, out / name)
            reports[name] = reports[first]
            continue
        candidates = read_candidates(sources, cfg.sources, k if cfg.labels == "fold" else None)
        reports[name] = done = _label_set(cfg, cache, sources, candidates, fitted[made.index(k)], out / name)
        by = done.get("sources", {})
        info(
            f"pseudo {name}: {done['images']} images kept"
            + "".join(f", {n['images']} of {n['candidates']} {s}" for s, n in by.items())
            + f", labels' OOF Dice {done['oof']['dice']:.4f}"
        )
    report = {"labels_from": cfg.labels, "leak_free": leak_free, **_mean(list(reports.values())), "folds": reports}
    write_json(out / "meta.json", _round_meta(cfg, sources, report))
    return report


def _label_set(cfg: PseudoConfig, cache, sources: Labellers, candidates: Split, fit: FoldFit, folder: Path) -> dict:
    """Select the confident images of `candidates`, label them with `fit`'s rules into `folder`; the report."""
    keep, confidence = select(cfg, candidates.classifier, candidates.maps[0])
    rows = np.flatnonzero(keep)
    kept_ids = [candidates.ids[i] for i in rows]
    source = candidates.source
    cache_row, truths = _kept(cache, kept_ids, source[rows], sources.seg1)
    classes = cache.classes
    folder.mkdir()
    presence, label_dice, empty_truth, rles = _write_masks(folder, cfg.soft, candidates, rows, fit, cache, truths)
    if "excluded" in cfg.sources:  # which cache part each image lies in
        table = pd.DataFrame({"image_id": kept_ids, "source": source[rows], "cache_row": cache_row})
    else:
        table = pd.DataFrame({"image_id": kept_ids, "test_row": cache_row})
    table = table.assign(**{c: presence[:, k] for k, c in enumerate(classes)}, confidence=confidence[rows].round(6))
    write_csv(folder / "images.csv", table)
    labels = [f"{i}_{c}" for i in kept_ids for c in classes]
    write_csv(folder / "labels.csv", pd.DataFrame({"Image_Label": labels, "EncodedPixels": rles}))
    report = _counts(cfg, keep, source)
    report["oof"] = summarize(np.stack([f.dice for f in fit.fits], 1), fit.empty, classes).as_dict()  # fit rows
    if truths is not None:  # the test images' labels against the demo's test masks
        judged = truths[1] >= 0
        report["labels"] = summarize(label_dice[judged], empty_truth[judged], classes).as_dict()
    write_json(folder / "meta.json", _meta(cfg, sources, fit, classes, report))
    return report


def _counts(cfg: PseudoConfig, keep: np.ndarray, source: np.ndarray) -> dict:
    """Images kept of the candidates (and, with pseudo.sources listing excluded, per source)."""
    kept = int(keep.sum())
    if "excluded" not in cfg.sources:
        return {"images": kept, "test_images": len(keep), "share": round(kept / max(len(keep), 1), 4)}
    by = {s: {"images": int(keep[source == s].sum()), "candidates": int((source == s).sum())} for s in cfg.sources}
    return {"images": kept, "candidates": len(keep), "share": round(kept / max(len(keep), 1), 4), "sources": by}


def _mean(reports: list[dict]) -> dict:
    """The folds' reports averaged key by key (numbers only), each key over the reports that have
    it (a fold that keeps no image has no label scores)."""
    out = {}
    for key in dict.fromkeys(k for r in reports for k in r):
        values = [r[key] for r in reports if key in r]
        if isinstance(values[0], dict):
            out[key] = _mean(values)
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            out[key] = round(float(np.mean(values)), 4)
    return out


def _kept(cache, kept_ids: list[str], source: np.ndarray, seg1: Path) -> tuple[np.ndarray, tuple | None]:
    """The kept images' rows in the cache part of their `source` (test: test arrays; excluded:
    training arrays) and, where the cache has them (the demos know the test masks: how good are the
    labels?), the (M, H, W) packed test truth, read lazily, with each kept image's row in it (-1:
    not a test image, not judged); None without test truth or kept test images."""
    cache_row = np.zeros(len(kept_ids), np.int64)
    for name, part in PART.items():
        at = np.flatnonzero(source == name)
        if len(at):
            table = cache.test if part == "test" else cache.train
            cache_row[at] = pd.Index(table["image_id"]).get_indexer([kept_ids[j] for j in at])
            if (cache_row[at] < 0).any():
                raise DataError(f"{seg1 / f'{name}.csv'}: images not in {cache.folder}; rerun `dvc repro infer`")
    if (source == "excluded").any() and cache.test_size != cache.cache_size:
        raise DataError(
            f"{cache.folder}: test and training images cached at different sizes ({cache.test_size}, "
            f"{cache.cache_size}): one pseudo set cannot hold both; rerun `dvc repro preprocess`"
        )
    is_test = source == "test"
    if not cache.has_test_truth or not is_test.any():
        return cache_row, None
    return cache_row, (cache.array("test_truth"), np.where(is_test, cache_row, -1))


def _write_masks(
    tmp: Path, soft_labels: bool, test: Split, rows: np.ndarray, fit: FoldFit, cache, truths
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Label the kept candidate `rows` into masks.npy (and soft.npy); (K, C) presence, (K, C) Dice
    against the true masks and (K, C) emptiness of those (0 without `truths`: the packed test truth
    and each kept image's row in it, -1 for none) and the RLE of every mask at the predictions' size."""
    classes, fits, levels = cache.classes, fit.fits, fit.levels
    cache_size = cache.test_size
    rules, shape_levels = [f.rule for f in fits], [f.shape_level for f in fits]
    presence = np.zeros((len(rows), len(classes)), int)
    label_dice, empty_truth = np.zeros((len(rows), len(classes))), np.zeros((len(rows), len(classes)), bool)
    rles: list[str] = []
    small = new_array(tmp / "masks.npy", (len(rows), *cache_size))
    soft = None  # soft labels: (K, C, h, w) uint8 mean probability of the label models, p * 255
    if soft_labels:
        soft = new_array(tmp / "soft.npy", (len(rows), len(classes), *cache_size))
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
            if truths is not None and truths[1][j] >= 0:  # (packed test truth, row of each kept image)
                truth = unpack_masks(truths[0][truths[1][j]][None], len(classes))
                label_dice[j] = dice_from_counts(*row_counts(masks[None], truth))[0]
                empty_truth[j] = ~truth[0].reshape(len(classes), -1).any(1)
            advance(1)
    small.flush()
    del small, soft
    return presence, label_dice, empty_truth, rles


def _meta(cfg: PseudoConfig, sources: Labellers, fit: FoldFit, classes: tuple, report: dict) -> dict:
    """meta.json of one fold's set: the rule and thresholds, the labellers, each class's fitted rule."""
    return {
        "rule": cfg.rule,
        "soft": cfg.soft,
        "labels": cfg.labels,
        **({"sources": list(cfg.sources)} if "excluded" in cfg.sources else {}),
        "thresholds": (
            {"low": cfg.low, "high": cfg.high}
            if cfg.rule == "classifier"
            else {"pixel_low": cfg.pixel_low, "pixel_high": cfg.pixel_high, "min_share": cfg.min_share}
        ),
        **_labellers(sources),
        "fitted_on": int(fit.rows.sum()),  # OOF rows the rules were fitted on
        "rules": {c: rule_of(f, fit.levels, k) for k, (c, f) in enumerate(zip(classes, fit.fits))},
        "report": report,
        "versions": versions(),
    }


def _labellers(sources: Labellers) -> dict:
    return {
        "seg1": str(sources.seg1),
        "shape": [str(f) for f in sources.shape],
        "classifier": None if sources.classifier is None else str(sources.classifier),
    }


def _round_meta(cfg: PseudoConfig, sources: Labellers, report: dict) -> dict:
    """meta.json of the round: who labelled, how, and every fold set's report."""
    extended = {"sources": list(cfg.sources)} if "excluded" in cfg.sources else {}
    return {
        "rule": cfg.rule,
        "soft": cfg.soft,
        **extended,
        **_labellers(sources),
        "report": report,
        "versions": versions(),
    }
