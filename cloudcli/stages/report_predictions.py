"""Stage `report_predictions`: out-of-fold predictions, looked at before trusting a score.

reports/predictions/NAME/, NAME being `ensemble` (the tuned two-stage pipeline that submit
applies) or a segmentation model (its own best pixel threshold x min_area x min_component per
class, fitted on its OOF maps like tune's seg1 rule): Dice per class and per image, the
empty/non-empty decisions per class, the worst images drawn as overlays, a few test images with
their predicted masks, and the OOF masks as a Kaggle CSV (what `cloudcli show` reads).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import DataConfig, ReportConfig, TuneConfig
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.data.folds import read_folds
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.maps import batches, read_ahead
from cloudcli.data.predictions import OofTruth, fingerprint, model_folder, read_masks, read_meta, read_thresholds
from cloudcli.data.sources import Source, open_source
from cloudcli.errors import DataError
from cloudcli.io import atomic_path, write_csv, write_json
from cloudcli.metrics import dice_from_counts, metric_report
from cloudcli.post.rules import RULE_FIELDS, ClassRule, postprocess
from cloudcli.post.search import best, component_levels
from cloudcli.post.stored import model_counts, oof_histograms
from cloudcli.post.tuned import load_tuned
from cloudcli.rle import decode, encode
from cloudcli.ui import info, progress
from cloudcli.viz import figure, panel, save_figure, write_png

PARAMS = ("data", "report", "tune.metric", "tune.min_areas", "tune.min_components", "tune.component_thresholds")
DECISIONS = (("mask", "mask", "tp"), ("empty", "mask", "fp"), ("mask", "empty", "fn"), ("empty", "empty", "tn"))


class Masks:
    """Binary masks of one report subject for one split: `ids`, `masks(i)` -> (C, H, W), and
    `blocks()`: (rows, their masks) of every row in order, the maps read a batch at a time."""

    def __init__(self, ids: list[str], masks: Callable[[int], np.ndarray], blocks: Callable | None = None) -> None:
        self.ids, self.masks, self._blocks = ids, masks, blocks

    def blocks(self) -> Iterator[tuple[slice, list[np.ndarray]]]:
        if self._blocks is not None:
            yield from self._blocks()
            return
        for rows in batches(len(self.ids)):
            yield rows, [self.masks(i) for i in range(rows.start, rows.stop)]


@dataclass(frozen=True)
class Subject:
    """What one report looks at: OOF masks and their truth, and a few test images' masks."""

    oof: Masks
    truth: OofTruth  # packed uint8 truth of the OOF rows, read a batch at a time
    how: str  # where the masks come from, in words
    rules: dict  # class -> the rule's values
    test: Masks


def run(
    name: str,
    cfg: ReportConfig,
    tune: TuneConfig,
    data: DataConfig,
    predictions: Path,
    cache_dir: Path,
    thresholds: Path,
    submission: Path,
    folds_csv: Path,
    out: Path,
) -> dict:
    """Write the report of `name` (ensemble or a segmentation model) to `out` (replaced whole)."""
    cache = open_cache(cache_dir)
    classes, metric = cache.classes, tune.metric
    if name == "ensemble":
        subject = tuned_pipeline(thresholds, cache, submission, data, cfg.test_images)
    else:
        subject = model_subject(model_folder(name, predictions), name, cache, tune, thresholds)
    train_ids = list(cache.train["image_id"])
    folds = pd.Series(read_folds(folds_csv, train_ids), index=train_ids)
    inter, area, t_area, rles = _counts(name, subject, len(classes))
    per_map = dice_from_counts(inter, area, t_area)  # (N, C)
    report = metric_report(metric, inter, area, t_area, classes)
    confusion = _confusion(area > 0, t_area > 0, classes)
    per_image = _per_image(subject.oof.ids, folds, per_map, classes)
    worst = per_image.sort_values(["dice", "image_id"], kind="stable").head(cfg.worst)
    summary = {
        "name": name,
        "masks": subject.how,
        "rules": subject.rules,
        "images": len(subject.oof.ids),
        **report,
        **cache.nodata_record("train", subject.oof.ids),
        "confusion": confusion,
        "worst": [{"image_id": r.image_id, "dice": r.dice} for r in worst.itertuples()],
    }
    with atomic_path(out, is_dir=True) as tmp:
        write_json(tmp / "summary.json", summary)
        write_csv(tmp / "per_image.csv", per_image)
        write_csv(tmp / "per_class.csv", _per_class(per_map, report, metric, classes))
        write_csv(tmp / "confusion.csv", _confusion_table(confusion))
        labels = [f"{i}_{c}" for i in subject.oof.ids for c in classes]
        write_csv(tmp / "oof_masks.csv", pd.DataFrame({"Image_Label": labels, "EncodedPixels": rles}))
        _draw_confusion(tmp / "confusion.png", confusion, name)
        source = open_source(data).with_limits(cache.meta.get("band_limits"))
        _draw_worst(tmp / "worst", worst, subject.oof, subject.truth, source, cfg)
        _draw_test(tmp / "test", subject.test, source, cfg, name)
    info(f"report {name}: OOF {metric} {report[metric]:.4f} over {len(subject.oof.ids)} images; wrote {out}")
    return summary


def remove_stale(out: Path, names: list[str]) -> None:
    """Delete the report folders in `out` other than `names`: the stage's output is exactly the
    configured reports."""
    for stale in sorted(set(q.name for q in out.iterdir() if q.is_dir()) - set(names)):
        shutil.rmtree(out / stale)


def tuned_pipeline(thresholds: Path, cache, submission: Path, data: DataConfig, test_images: int) -> Subject:
    """The tuned pipeline's OOF masks, and the submitted test masks."""
    tuned = load_tuned(thresholds, "oof")
    truth = OofTruth(cache, tuned.ids, Path(tuned.chosen["seg1"]) / "oof.csv")
    test = _submitted(submission, data, test_images, cache.classes)
    how = f"the tuned pipeline of {thresholds}"
    return Subject(Masks(tuned.ids, tuned.masks, tuned.blocks), truth, how, dict(tuned.chosen["classes"]), test)


def model_subject(folder: Path, name: str, cache, tune: TuneConfig, thresholds: Path | None = None) -> Subject:
    """A segmentation model's masks under its own best rule per class, fitted on its OOF maps (tune's
    seg1 rules, read from `thresholds`, when the model is the seg1 tune fitted them on)."""
    if read_meta(folder).get("role") == "classifier":
        raise DataError(f"{name!r} is a classifier; report.models takes ensemble or segmentation models")
    ids, probs = read_masks(folder, "oof")
    truth = OofTruth(cache, ids, folder / "oof.csv")
    fitted = tuned_seg1_rules(thresholds, folder, cache.classes)
    if fitted is None:
        fitted = fit_model_rules(probs, truth, oof_histograms(folder, probs, truth), tune)
    oof = model_masks(folder, "oof", fitted)
    how = f"{folder}, its own best rule per class on its OOF maps"
    rules = {c: r.__dict__ for c, r in zip(cache.classes, fitted)}
    return Subject(oof, truth, how, rules, model_masks(folder, "test", fitted))


def model_masks(folder: Path, split: str, rules: list[ClassRule]) -> Masks:
    ids, probs = read_masks(folder, split)

    def blocks() -> Iterator[tuple[slice, list[np.ndarray]]]:
        for rows, (maps,) in read_ahead([probs]):
            yield rows, [postprocess(m, rules) for m in maps]

    return Masks(ids, lambda i: postprocess(probs[i], rules), blocks)


def tuned_seg1_rules(thresholds: Path | None, folder: Path, classes: tuple[str, ...]) -> list[ClassRule] | None:
    """The rules tune fitted for seg1 alone, if `folder` is that seg1 and its maps have not changed
    since (the same search with the same tune params: the stage's params include them); else None."""
    if thresholds is None or not thresholds.exists():
        return None
    chosen = read_thresholds(thresholds)
    rules = chosen.get("seg1_rules")
    same = (
        Path(chosen["seg1"]).resolve() == folder.resolve() and isinstance(rules, dict) and list(rules) == list(classes)
    )
    if not same or chosen["fitted_on"].get(chosen["seg1"]) != fingerprint(folder):
        return None
    if not all(isinstance(r, dict) and all(type(r.get(k)) is int for k in RULE_FIELDS) for r in rules.values()):
        raise DataError(
            f"{thresholds}: seg1_rules are not whole numbers {', '.join(RULE_FIELDS)}; rerun `dvc repro tune`"
        )
    return [ClassRule(r["level"], r["min_area"], r["min_component"]) for r in rules.values()]


def fit_model_rules(probs, truth: OofTruth, hist: np.ndarray, tune: TuneConfig) -> list[ClassRule]:
    """Per class, the model's best level x min_area (x min_component) on its OOF maps (with their
    histograms): tune's seg1 search."""
    levels = component_levels(tune.component_thresholds)
    rules = []
    for c in model_counts(probs, truth, hist, tune.min_components, levels):
        found = best(c, tune.min_areas, tune.metric)
        rules.append(ClassRule(found.level, found.min_area, found.min_component))
    return rules


def _counts(name: str, subject: Subject, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(N, C) intersections, predicted and true areas of the OOF masks, and their RLEs in row order."""
    n = len(subject.oof.ids)
    inter, area, t_area = (np.zeros((n, k), np.int64) for _ in range(3))
    rles = []
    with progress(f"report {name}", n, "images") as advance:
        for rows, masks in subject.oof.blocks():
            truths = subject.truth[rows]
            for i, pred, packed in zip(range(rows.start, rows.stop), masks, truths):
                pred, t = pred != 0, unpack_masks(packed, k) != 0
                inter[i], area[i], t_area[i] = (pred & t).sum((1, 2)), pred.sum((1, 2)), t.sum((1, 2))
                rles += [encode(m) for m in pred]
            advance(len(masks))
    return inter, area, t_area, rles


def _confusion(decided: np.ndarray, actual: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Per class, the empty/non-empty decisions against the truth, from (N, C) bools."""
    return {
        c: {
            "tp": int((decided[:, j] & actual[:, j]).sum()),
            "fp": int((decided[:, j] & ~actual[:, j]).sum()),
            "fn": int((~decided[:, j] & actual[:, j]).sum()),
            "tn": int((~decided[:, j] & ~actual[:, j]).sum()),
        }
        for j, c in enumerate(classes)
    }


def _per_image(ids: list[str], folds: pd.Series, per_map: np.ndarray, classes: tuple[str, ...]) -> pd.DataFrame:
    per_image = pd.DataFrame({"image_id": ids, "fold": folds.reindex(ids).to_numpy()})
    for j, c in enumerate(classes):
        per_image[c] = per_map[:, j].round(6)
    per_image["dice"] = per_map.mean(1).round(6)
    return per_image


def _per_class(per_map: np.ndarray, report: dict, metric: str, classes: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        {"class": list(classes), "dice": per_map.mean(0)}
        | ({} if metric == "dice" else {metric: [round(report[f"{metric}_{c}"], 6) for c in classes]})
    )


def _confusion_table(confusion: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [(c, t, p, v[key]) for c, v in confusion.items() for t, p, key in DECISIONS],
        columns=["class", "truth", "predicted", "images"],
    )


def _submitted(submission: Path, data: DataConfig, count: int, classes: tuple[str, ...]) -> Masks:
    """The first `count` test images of a Kaggle-format submission file, decoded."""
    wide = to_wide(read_labels(submission, data.score_size, classes), classes).head(count)
    rows = wide.to_numpy()
    return Masks(list(wide.index), lambda i: np.stack([decode(r, data.score_size) for r in rows[i]]))


def _draw_worst(folder: Path, worst: pd.DataFrame, oof: Masks, truth: OofTruth, source: Source, cfg) -> None:
    folder.mkdir()
    row_of = {image_id: i for i, image_id in enumerate(oof.ids)}
    classes = source.classes
    for rank, r in enumerate(worst.itertuples(), 1):
        i = row_of[r.image_id]
        image = source.rgb("train", source.train_ids.index(r.image_id))
        title = f"#{rank} worst OOF: {r.image_id}  fold {r.fold}  mean Dice {r.dice:.3f}"
        write_png(
            folder / f"{rank:02d}_{Path(r.image_id).stem}.png",
            panel(image, unpack_masks(truth[i], len(classes)), oof.masks(i), title, cfg.tile, classes),
        )


def _draw_test(folder: Path, test: Masks, source: Source, cfg, name: str) -> None:
    folder.mkdir()
    for i, image_id in enumerate(test.ids[: cfg.test_images]):
        title = f"test {image_id}: {'submitted' if name == 'ensemble' else name} masks"
        image = source.rgb("test", source.test_ids.index(image_id))
        write_png(
            folder / f"{Path(image_id).stem}.png", panel(image, None, test.masks(i), title, cfg.tile, source.classes)
        )


def _draw_confusion(path: Path, confusion: dict, name: str) -> None:
    fig = figure(8.0, 2.6)
    axes = np.atleast_1d(fig.subplots(1, len(confusion)))
    for ax, (c, v) in zip(axes, confusion.items()):
        table = np.array([[v["tn"], v["fp"]], [v["fn"], v["tp"]]])
        ax.imshow(table, cmap="Blues", vmin=0)
        for (i, j), count in np.ndenumerate(table):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > table.max() / 2 else "black")
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["empty", "mask"],
            yticklabels=["empty", "mask"],
            xlabel="predicted",
            title=c,
        )
        if ax is axes[0]:
            ax.set_ylabel("truth")
    fig.suptitle(f"{name}: empty / non-empty decisions per class (OOF images)")
    save_figure(fig, path)
