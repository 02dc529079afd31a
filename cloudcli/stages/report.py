"""Stages `report_data` and `report_predictions`, and `cloudcli show`: look before trusting a score.

Data report (reports/data/): class frequency, classes per image, class co-occurrence, mask area
per class, fold balance; each as a CSV (what `dvc plots` draws), a PNG, and all numbers in
summary.json. Areas are shares of the image (Kaggle: summed from the RLE run lengths of train.csv).

Prediction report (reports/predictions/NAME/), on out-of-fold predictions, NAME being `ensemble`
(the tuned two-stage pipeline that submit applies) or a segmentation model (its own best pixel
threshold x min_area x min_component per class, fitted on its OOF maps like tune's seg1 rule):
Dice per class and per image, the empty/non-empty decisions per class, the worst images drawn as
overlays, a few test images with their predicted masks, and the OOF masks as a Kaggle CSV.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import DataConfig, ReportConfig, TuneConfig
from cloudcli.data.cache import BITS, open_cache, resize_mask, unpack_masks
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.predictions import PSEUDO_PREDICTIONS, model_folder, oof_truth, read_masks, read_meta
from cloudcli.data.sources import Source, open_source
from cloudcli.errors import DataError
from cloudcli.io import atomic_path, write_csv, write_json
from cloudcli.metrics import dice_from_counts, metric_report
from cloudcli.post.rules import ClassRule, level_of, postprocess
from cloudcli.rle import decode, encode
from cloudcli.ui import info, progress
from cloudcli.viz import OKABE_ITO, panel, write_png

PARAMS = {  # two stages: the sections each reads
    "report_data": ("data",),
    "report_predictions": (
        "data",
        "report",
        "tune.metric",
        "tune.min_areas",
        "tune.min_components",
        "tune.component_thresholds",
    ),
}
AREA_BINS = np.linspace(0.0, 1.0, 21)  # mask area histogram: 5% of the image per bin
COLOURS = [tuple(c / 255 for c in colour) for colour in OKABE_ITO]  # class k's; matplotlib wants 0..1


# ----------------------------------------------------------------------------------------------
# data report


def label_table(source: Source) -> pd.DataFrame:
    """One row per training image: one column per class with the mask's share of the image."""
    return pd.DataFrame(source.areas(), index=pd.Index(source.train_ids, name="image_id"), columns=source.classes)


def data_summary(areas: pd.DataFrame, folds: pd.DataFrame) -> dict:
    """Every number the data report draws, from the (image x class) area table and the folds table."""
    present, classes = areas.to_numpy() > 0, list(areas.columns)
    n = len(areas)
    per_image = present.sum(1)
    co = present.T.astype(np.int64) @ present.astype(np.int64)
    fold_of = folds.set_index("image_id")["fold"]
    missing = set(areas.index) - set(fold_of.index)
    if missing:
        raise DataError(
            f"no fold for {len(missing)} training images, e.g. {sorted(missing)[0]}; rerun `dvc repro fold`"
        )
    fold = fold_of.loc[areas.index].to_numpy()
    balance = {}
    for f in sorted(set(fold.tolist())):
        rows = present[fold == f]
        balance[str(f)] = {
            "images": len(rows),
            **{c: round(float(rows[:, k].mean()), 6) for k, c in enumerate(classes)},
        }
    area = {}
    for k, c in enumerate(classes):
        values = areas.iloc[:, k].to_numpy()
        values = values[values > 0]
        hist = np.histogram(values, AREA_BINS)[0] if len(values) else np.zeros(len(AREA_BINS) - 1, np.int64)
        area[c] = {
            "masks": len(values),
            "mean": round(float(values.mean()), 6) if len(values) else None,
            "median": round(float(np.median(values)), 6) if len(values) else None,
            "histogram": hist.tolist(),
        }
    return {
        "images": n,
        "class_frequency": {
            c: {"images": int(present[:, k].sum()), "share": round(float(present[:, k].mean()), 6)}
            for k, c in enumerate(classes)
        },
        "classes_per_image": {str(j): int((per_image == j).sum()) for j in range(len(classes) + 1)},
        "cooccurrence": {a: {b: int(co[i, j]) for j, b in enumerate(classes)} for i, a in enumerate(classes)},
        "mask_area": {"bins": AREA_BINS.round(4).tolist(), **area},
        "folds": balance,
    }


def run_data(data: DataConfig, folds_csv: Path, out: Path) -> dict:
    """Write the data report to `out` (replaced whole) and return its numbers."""
    areas = label_table(open_source(data, labels_only=True))
    try:
        folds = pd.read_csv(folds_csv, dtype={"image_id": str})
    except FileNotFoundError:
        raise DataError(f"{folds_csv}: missing; run `dvc repro fold` (or `cloudcli fold`) first") from None
    summary = data_summary(areas, folds)
    with atomic_path(out, is_dir=True) as tmp:
        _write_data_tables(tmp, summary)
        _draw_data(tmp, summary)
        write_json(tmp / "summary.json", summary)
    freq = ", ".join(f"{c} {v['share']:.0%}" for c, v in summary["class_frequency"].items())
    info(f"report data: {summary['images']} images ({freq}); wrote {out}")
    return summary


def _write_data_tables(folder: Path, s: dict) -> None:
    freq = s["class_frequency"]
    write_csv(
        folder / "class_frequency.csv",
        pd.DataFrame(
            {
                "class": list(freq),
                "images": [v["images"] for v in freq.values()],
                "share": [v["share"] for v in freq.values()],
            }
        ),
    )
    per = s["classes_per_image"]
    write_csv(
        folder / "classes_per_image.csv", pd.DataFrame({"classes": list(map(int, per)), "images": list(per.values())})
    )
    co, classes = s["cooccurrence"], list(freq)
    write_csv(
        folder / "cooccurrence.csv",
        pd.DataFrame([(a, b, co[a][b]) for a in classes for b in classes], columns=["class", "with", "images"]),
    )
    bins = s["mask_area"]["bins"]
    table = {"area": [round((lo + hi) / 2, 4) for lo, hi in itertools.pairwise(bins)]}
    table.update({c: s["mask_area"][c]["histogram"] for c in classes})
    write_csv(folder / "mask_area.csv", pd.DataFrame(table))
    write_csv(
        folder / "fold_balance.csv",
        pd.DataFrame([{"fold": int(f), **v} for f, v in s["folds"].items()]),
    )


def _figure(width: float = 6.0, height: float = 3.6):
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> None:
    fig.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes


def _draw_data(folder: Path, s: dict) -> None:
    n, classes = s["images"], list(s["class_frequency"])
    fig, ax = _figure()
    shares = [v["share"] for v in s["class_frequency"].values()]
    bars = ax.barh(classes, shares, color=COLOURS[: len(classes)])
    ax.bar_label(bars, [f"{v['images']} ({v['share']:.0%})" for v in s["class_frequency"].values()], padding=3)
    ax.set(xlim=(0, 1.15), xlabel="share of images with the class", title=f"Class frequency ({n} images)")
    ax.invert_yaxis()
    _save(fig, folder / "class_frequency.png")

    fig, ax = _figure()
    per = s["classes_per_image"]
    bars = ax.bar(list(per), list(per.values()), color="#555555")
    ax.bar_label(bars, padding=2)
    ax.set(xlabel="classes in the image", ylabel="images", title="Classes per image")
    _save(fig, folder / "classes_per_image.png")

    fig, ax = _figure(5.0, 4.2)
    co = np.array([[s["cooccurrence"][a][b] for b in classes] for a in classes])
    ax.imshow(co, cmap="viridis")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j, i, str(co[i, j]), ha="center", va="center", color="white" if co[i, j] < co.max() / 2 else "black"
            )
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        title="Images with both classes (diagonal: with the class)",
    )
    _save(fig, folder / "cooccurrence.png")

    fig, ax = _figure()
    bins = np.asarray(s["mask_area"]["bins"])
    for k, c in enumerate(classes):
        hist = s["mask_area"][c]["histogram"]
        ax.stairs(hist, bins, color=COLOURS[k], linewidth=2, label=f"{c} ({s['mask_area'][c]['masks']} masks)")
    ax.set(xlabel="mask area (share of the image)", ylabel="masks", title="Mask area per class (non-empty masks)")
    ax.legend()
    _save(fig, folder / "mask_area.png")

    fig, ax = _figure()
    folds = list(s["folds"])
    width = 0.8 / len(classes)
    for k, c in enumerate(classes):
        x = np.arange(len(folds)) + (k - (len(classes) - 1) / 2) * width
        ax.bar(x, [s["folds"][f][c] for f in folds], width, color=COLOURS[k], label=c)
    ax.set_xticks(range(len(folds)), [f"fold {f}\n{s['folds'][f]['images']} images" for f in folds])
    ax.set(ylim=(0, 1), ylabel="share of images with the class", title="Fold balance")
    ax.legend(ncols=len(classes), loc="upper center")
    _save(fig, folder / "fold_balance.png")


# ----------------------------------------------------------------------------------------------
# prediction report


class Masks:
    """Binary masks of one report subject for one split: `ids`, and `masks(i)` -> (C, H, W)."""

    def __init__(self, ids: list[str], masks: Callable[[int], np.ndarray]) -> None:
        self.ids, self.masks = ids, masks


def model_masks(folder: Path, split: str, rules: list[ClassRule]) -> Masks:
    ids, probs = read_masks(folder, split)
    return Masks(ids, lambda i: postprocess(np.asarray(probs[i]), rules))


def fit_model_rules(probs: np.ndarray, truth: np.ndarray, tune: TuneConfig) -> list[ClassRule]:
    """Per class, the model's best level x min_area (x min_component) on its OOF maps: tune's seg1 search."""
    from cloudcli.post.search import search

    levels = tuple(sorted({level_of(t) for t in tune.component_thresholds}))
    rules = []
    for k in range(probs.shape[1]):
        found = search(probs[:, k], (truth & BITS[k]) != 0, tune.min_areas, tune.min_components, levels, tune.metric)
        rules.append(ClassRule(found.level, found.min_area, found.min_component))
    return rules


def run_predictions(
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
    pseudo_predictions: Path = PSEUDO_PREDICTIONS,
) -> dict:
    """Write the report of `name` (ensemble or a segmentation model) to `out` (replaced whole)."""
    cache = open_cache(cache_dir)
    classes = cache.classes
    if name == "ensemble":
        from cloudcli.post.tuned import load_tuned

        tuned = load_tuned(thresholds, "oof")
        oof, how = Masks(tuned.ids, tuned.masks), f"the tuned pipeline of {thresholds}"
        truth = oof_truth(cache, tuned.ids, Path(tuned.chosen["seg1"]) / "oof.csv")
        rules = dict(tuned.chosen["classes"])
        test = _submitted(submission, data, cfg.test_images, classes)
    else:
        folder = model_folder(name, predictions, pseudo_predictions)
        if read_meta(folder).get("role") == "cls":
            raise DataError(f"{name!r} is a classifier; report.models takes ensemble or segmentation models")
        ids, probs = read_masks(folder, "oof")
        truth = oof_truth(cache, ids, folder / "oof.csv")
        fitted = fit_model_rules(probs, truth, tune)
        oof = Masks(ids, lambda i: postprocess(np.asarray(probs[i]), fitted))  # the maps read once
        how = f"{folder}, its own best rule per class on its OOF maps"
        rules = {c: r.__dict__ for c, r in zip(classes, fitted)}
        test = model_masks(folder, "test", fitted)
    folds = pd.read_csv(folds_csv, dtype={"image_id": str}).set_index("image_id")["fold"]

    n, k = len(oof.ids), len(classes)
    inter, area, t_area = (np.zeros((n, k), np.int64) for _ in range(3))
    rles = []
    with progress(f"report {name}", n, "images") as advance:
        for i in range(n):
            pred, t = oof.masks(i) != 0, unpack_masks(truth[i], k) != 0
            inter[i], area[i], t_area[i] = (pred & t).sum((1, 2)), pred.sum((1, 2)), t.sum((1, 2))
            rles += [encode(m) for m in pred]
            advance(1)
    per_map = dice_from_counts(inter, area, t_area)
    metric = tune.metric
    report = metric_report(metric, inter, area, t_area, classes)
    decided, actual = area > 0, t_area > 0
    confusion = {
        c: {
            "tp": int((decided[:, j] & actual[:, j]).sum()),
            "fp": int((decided[:, j] & ~actual[:, j]).sum()),
            "fn": int((~decided[:, j] & actual[:, j]).sum()),
            "tn": int((~decided[:, j] & ~actual[:, j]).sum()),
        }
        for j, c in enumerate(classes)
    }
    per_image = pd.DataFrame({"image_id": oof.ids, "fold": folds.reindex(oof.ids).to_numpy()})
    for j, c in enumerate(classes):
        per_image[c] = per_map[:, j].round(6)
    per_image["dice"] = per_map.mean(1).round(6)
    worst = per_image.sort_values(["dice", "image_id"], kind="stable").head(cfg.worst)

    with atomic_path(out, is_dir=True) as tmp:
        summary = {
            "name": name,
            "masks": how,
            "rules": rules,
            "images": n,
            **report,
            "confusion": confusion,
            "worst": [{"image_id": r.image_id, "dice": r.dice} for r in worst.itertuples()],
        }
        write_json(tmp / "summary.json", summary)
        write_csv(tmp / "per_image.csv", per_image)
        write_csv(
            tmp / "per_class.csv",
            pd.DataFrame(
                {"class": list(classes), "dice": per_map.mean(0)}
                | ({} if metric == "dice" else {metric: [round(report[f"{metric}_{c}"], 6) for c in classes]})
            ),
        )
        write_csv(
            tmp / "confusion.csv",
            pd.DataFrame(
                [
                    (c, t, p, v[key])
                    for c, v in confusion.items()
                    for t, p, key in (
                        ("mask", "mask", "tp"),
                        ("empty", "mask", "fp"),
                        ("mask", "empty", "fn"),
                        ("empty", "empty", "tn"),
                    )
                ],
                columns=["class", "truth", "predicted", "images"],
            ),
        )
        labels = [f"{i}_{c}" for i in oof.ids for c in classes]
        write_csv(tmp / "oof_masks.csv", pd.DataFrame({"Image_Label": labels, "EncodedPixels": rles}))
        _draw_confusion(tmp / "confusion.png", confusion, name)
        source = open_source(data).with_limits(cache.meta.get("band_limits"))
        _draw_worst(tmp / "worst", worst, oof, truth, source, cfg)
        _draw_test(tmp / "test", test, source, cfg, name)
    info(f"report {name}: OOF {metric} {report[metric]:.4f} over {n} images; wrote {out}")
    return summary


def _submitted(submission: Path, data: DataConfig, count: int, classes: tuple[str, ...]) -> Masks:
    """The first `count` test images of a Kaggle-format submission file, decoded."""
    wide = to_wide(read_labels(submission, data.score_size, classes), classes).head(count)
    rows = wide.to_numpy()
    return Masks(list(wide.index), lambda i: np.stack([decode(r, data.score_size) for r in rows[i]]))


def _draw_worst(folder: Path, worst: pd.DataFrame, oof: Masks, truth: np.ndarray, source: Source, cfg) -> None:
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
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 2.6), dpi=100, layout="constrained")
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
    _save(fig, path)


# ----------------------------------------------------------------------------------------------
# cloudcli show


def find_image(source: Source, image_id: str) -> tuple[str, int]:
    """(split, row) of an image id (a Kaggle id with or without ".jpg"), or a DataError naming the set."""
    found = source.find(image_id)
    if found is None:
        raise DataError(
            f"{image_id}: no such image among the {len(source.train_ids)} train and {len(source.test_ids)} test "
            f"images of {source.root} (data.raw in params.yaml); e.g. {source.train_ids[0]}"
        )
    return found


def show(
    image_id: str,
    source: Source,
    score_size: tuple[int, int],
    out: Path,
    pred_csv: Path | None,
    truth: bool,
    tile_size: tuple[int, int],
    band_limits: list | None = None,
) -> Path:
    """Draw one image of `source` with its truth (train images) and/or predicted masks (any
    Kaggle-format CSV at `score_size`) to the PNG `out`; returns the path written. `band_limits`:
    the cache's, for 16-bit bands."""
    split, row = find_image(source, image_id)
    image_id = source.ids(split)[row]
    if band_limits is None and source.raw_image(split, row).dtype != np.uint8:
        source = source.fit_limits()
    source = source.with_limits(band_limits)
    classes = source.classes
    true_masks = None
    if truth and split == "train":
        true_masks = np.stack([resize_mask(m, score_size) for m in source.masks(split, row)])
    pred = None
    if pred_csv is not None and not Path(pred_csv).is_file():
        raise DataError(f"{pred_csv}: file not found (--pred); give a Kaggle-format CSV of predicted masks")
    if pred_csv is not None:
        pred = _masks_of(pred_csv, image_id, score_size, classes)
        if pred is None:
            raise DataError(f"{pred_csv}: no rows for {image_id}; is it a prediction file of the {split} set?")
    what = ["truth"] * (true_masks is not None) + [f"{pred_csv}"] * (pred is not None)
    title = f"{split} {image_id}: {' vs '.join(what) if what else 'no masks'}"
    write_png(out, panel(source.rgb(split, row), true_masks, pred, title, tile_size, classes))
    return out


def default_prediction(image_id: str, source: Source, submission: Path, reports: Path) -> Path | None:
    """Where `show` finds predicted masks by default: the submission for test images, the
    ensemble report's OOF masks for training images; None if that file does not exist or has no
    row for the image (a training image outside cv.folds)."""
    split, row = find_image(source, image_id)
    path = submission if split == "test" else reports / "ensemble" / "oof_masks.csv"
    if not path.is_file():
        return None
    labels = pd.read_csv(path, usecols=["Image_Label"], dtype=str)["Image_Label"]
    return path if labels.str.startswith(f"{source.ids(split)[row]}_").any() else None


def _masks_of(csv: Path, image_id: str, size: tuple[int, int], classes: tuple[str, ...]) -> np.ndarray | None:
    """(C, H, W) masks of one image from a Kaggle-format CSV of masks at `size`; None if the file
    has no row for it."""
    wide = to_wide(read_labels(csv, None, classes), classes)
    if image_id not in wide.index:
        return None
    masks = []
    for c, rle in zip(classes, wide.loc[image_id]):
        try:
            masks.append(decode(rle, size))
        except ValueError as e:
            raise DataError(f"{csv} ({image_id}_{c}): malformed RLE for a {size[0]}x{size[1]} image: {e}") from None
    return np.stack(masks)
