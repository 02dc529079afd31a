"""Stage `report_data`: the labels, looked at before trusting a score (reports/data/).

Class frequency, classes per image, class co-occurrence, mask area per class, fold balance; each
as a CSV (what `dvc plots` draws), a PNG, and all numbers in summary.json. Areas are shares of the
image (Kaggle: summed from the RLE run lengths of train.csv).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import DataConfig
from cloudcli.data.folds import read_folds
from cloudcli.data.sources import Source, open_source
from cloudcli.errors import DataError
from cloudcli.io import atomic_path, write_csv, write_json
from cloudcli.ui import info
from cloudcli.viz import OKABE_ITO, figure, save_figure

PARAMS = ("data",)
AREA_BINS = np.linspace(0.0, 1.0, 21)  # mask area histogram: 5% of the image per bin
COLOURS = [tuple(c / 255 for c in colour) for colour in OKABE_ITO]  # class k's; matplotlib wants 0..1


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


def run(data: DataConfig, folds_csv: Path, out: Path) -> dict:
    """Write the data report to `out` (replaced whole) and return its numbers."""
    areas = label_table(open_source(data, labels_only=True))
    ids = list(areas.index)
    folds = pd.DataFrame({"image_id": ids, "fold": read_folds(folds_csv, ids)})  # checked: a fold per image
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


def _axes(width: float = 6.0, height: float = 3.6):
    fig = figure(width, height)
    return fig, fig.add_subplot()


def _draw_data(folder: Path, s: dict) -> None:
    classes = list(s["class_frequency"])
    _draw_frequency(folder, s, classes)
    _draw_cooccurrence(folder, s, classes)
    _draw_mask_area(folder, s, classes)
    _draw_fold_balance(folder, s, classes)


def _draw_frequency(folder: Path, s: dict, classes: list[str]) -> None:
    fig, ax = _axes()
    shares = [v["share"] for v in s["class_frequency"].values()]
    bars = ax.barh(classes, shares, color=COLOURS[: len(classes)])
    ax.bar_label(bars, [f"{v['images']} ({v['share']:.0%})" for v in s["class_frequency"].values()], padding=3)
    ax.set(xlim=(0, 1.15), xlabel="share of images with the class", title=f"Class frequency ({s['images']} images)")
    ax.invert_yaxis()
    save_figure(fig, folder / "class_frequency.png")

    fig, ax = _axes()
    per = s["classes_per_image"]
    bars = ax.bar(list(per), list(per.values()), color="#555555")
    ax.bar_label(bars, padding=2)
    ax.set(xlabel="classes in the image", ylabel="images", title="Classes per image")
    save_figure(fig, folder / "classes_per_image.png")


def _draw_cooccurrence(folder: Path, s: dict, classes: list[str]) -> None:
    fig, ax = _axes(5.0, 4.2)
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
    save_figure(fig, folder / "cooccurrence.png")


def _draw_mask_area(folder: Path, s: dict, classes: list[str]) -> None:
    fig, ax = _axes()
    bins = np.asarray(s["mask_area"]["bins"])
    for k, c in enumerate(classes):
        hist = s["mask_area"][c]["histogram"]
        ax.stairs(hist, bins, color=COLOURS[k], linewidth=2, label=f"{c} ({s['mask_area'][c]['masks']} masks)")
    ax.set(xlabel="mask area (share of the image)", ylabel="masks", title="Mask area per class (non-empty masks)")
    ax.legend()
    save_figure(fig, folder / "mask_area.png")


def _draw_fold_balance(folder: Path, s: dict, classes: list[str]) -> None:
    fig, ax = _axes()
    folds = list(s["folds"])
    width = 0.8 / len(classes)
    for k, c in enumerate(classes):
        x = np.arange(len(folds)) + (k - (len(classes) - 1) / 2) * width
        ax.bar(x, [s["folds"][f][c] for f in folds], width, color=COLOURS[k], label=c)
    ax.set_xticks(range(len(folds)), [f"fold {f}\n{s['folds'][f]['images']} images" for f in folds])
    ax.set(ylim=(0, 1), ylabel="share of images with the class", title="Fold balance")
    ax.legend(ncols=len(classes), loc="upper center")
    save_figure(fig, folder / "fold_balance.png")
