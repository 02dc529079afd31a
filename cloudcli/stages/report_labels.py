"""Stage `report_labels`: the training labels the out-of-fold predictions contradict most confidently.

reports/labels/suspects.csv ranks the training images by their confident disagreement with the
models of report_labels.models (and, optionally, a classifier): cloudcli.suspects says how it is
measured and why. The first report_labels.top are drawn as overlays (the label outlined, the
confident prediction filled); metrics/labels.json counts them. A person reads the overlays and
copies the ids of the labels they confirm wrong into the exclude file (data.exclude).

The maps and the truth are read a batch at a time: memory does not grow with the images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import DataConfig, ReportLabelsConfig
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.data.folds import read_folds
from cloudcli.data.maps import Maps, read_ahead
from cloudcli.data.predictions import OofTruth, aligned_masks, classes_of, model_folder, read_classifier, read_meta
from cloudcli.data.sources import open_source
from cloudcli.errors import DataError
from cloudcli.io import atomic_paths, write_csv, write_json
from cloudcli.suspects import KINDS, Disagreement, Ranked, confident_levels, confident_masks, disagreement, judge
from cloudcli.ui import info, progress
from cloudcli.viz import panel, write_png

PARAMS = ("data", "report.tile", "report_labels")
SHARES = (0.01, 0.05, 0.1, 0.25)  # metrics count the images whose score reaches each share of the image


@dataclass(frozen=True)
class _Oof:
    """What judges the labels: the models' OOF maps and their truth (read a batch at a time), and
    the classifier's OOF probabilities."""

    ids: list[str]
    maps: list[Maps]  # each model's (N, C, H, W) uint8, in the rows of `ids`
    truth: OofTruth
    probs: np.ndarray | None  # (N, C)


def run(
    cfg: ReportLabelsConfig,
    tile: tuple[int, int],
    data: DataConfig,
    predictions: Path,
    cache_dir: Path,
    folds_csv: Path,
    out: Path,
    metrics: Path,
) -> dict:
    """Write reports/labels (`out`, replaced whole) and the metrics file."""
    cache = open_cache(cache_dir)
    classes = cache.classes
    oof = _read_oof(cfg, predictions, cache)
    train_ids = list(cache.train["image_id"])
    folds = pd.Series(read_folds(folds_csv, train_ids), index=train_ids).reindex(oof.ids).to_numpy()
    below, above = confident_levels(cfg.low, cfg.high)
    found = _judge(oof, below, above, len(classes))
    table = suspects_table(oof.ids, folds, found, classes)
    listed = table[table["score"] > 0].head(cfg.rows)
    summary = _summary(cfg, table, listed, classes)
    with atomic_paths((out, True), (metrics, False)) as (tmp, tmp_metrics):
        write_csv(tmp / "suspects.csv", listed)
        _draw(tmp / "overlays", listed.head(cfg.top), oof, data, cache, tile, above)
        write_json(tmp_metrics, summary)
    info(
        f"report labels: {summary['disagreeing']} of {len(oof.ids)} OOF images disagree with "
        f"{' + '.join(cfg.models)}; {len(listed)} listed in {out / 'suspects.csv'}, {summary['drawn']} drawn"
    )
    return summary


def _read_oof(cfg: ReportLabelsConfig, predictions: Path, cache) -> _Oof:
    folders = [model_folder(m, predictions) for m in cfg.models]
    for name, folder in zip(cfg.models, folders):
        if read_meta(folder).get("role") == "classifier":
            raise DataError(f"{folder}: {name!r} is a classifier; report_labels.models takes segmentation models")
        if classes_of(folder) != cache.classes:
            raise DataError(
                f"{folder / 'meta.json'}: classes {list(classes_of(folder))}, the cache has {list(cache.classes)}; "
                f"rerun `dvc repro infer@{name}`"
            )
    ids, maps = aligned_masks(folders, "oof")
    truth = OofTruth(cache, ids, folders[0] / "oof.csv")
    expected = (len(ids), len(cache.classes), *cache.score_size)
    if maps[0].shape != expected:
        raise DataError(
            f"{maps[0].path}: maps of shape {maps[0].shape}, the cache's truth is {expected} (images, classes, "
            "data.score_size); rerun `dvc repro infer`"
        )
    probs = None
    if cfg.classifier is not None:
        folder = model_folder(cfg.classifier, predictions)
        probs = read_classifier(folder, "oof", ids)
        if probs.shape[1] != len(cache.classes):
            raise DataError(
                f"{folder / 'oof.csv'}: {probs.shape[1]} class columns, the cache has {len(cache.classes)}; "
                f"rerun `dvc repro infer@{cfg.classifier}`"
            )
    return _Oof(ids, maps, truth, probs)


def _judge(oof: _Oof, below: int, above: int, k: int) -> Ranked:
    parts = []
    with progress("report labels", len(oof.ids), "images") as advance:
        for rows, block in read_ahead(oof.maps):
            truth = unpack_masks(oof.truth[rows], k)
            probs = None if oof.probs is None else oof.probs[rows]
            parts.append(disagreement(block, truth, below, above, probs))
            advance(rows.stop - rows.start)
    return judge(Disagreement.concat(parts) if parts else Disagreement(*_empty(k)))


def _empty(k: int) -> tuple[np.ndarray, ...]:
    return np.zeros((0, k)), np.zeros((0, k)), np.zeros((0, k, k))


def suspects_table(ids: list[str], folds: np.ndarray, found: Ranked, classes: tuple[str, ...]) -> pd.DataFrame:
    """Every image, most suspect first (ties by image id): score, class, kind, the class the models
    see (wrong class), fold, then each class's score."""
    names = np.array(["", *classes], dtype=object)
    kinds = np.array(["", *KINDS], dtype=object)
    table = pd.DataFrame(
        {
            "image_id": ids,
            "score": found.score.round(6),
            "class": names[found.cls + 1],
            "kind": kinds[found.kind + 1],
            "seen_as": names[found.seen_as + 1],
            "fold": folds,
        }
    )
    for j, c in enumerate(classes):
        table[c] = found.class_scores[:, j].round(6)
    return table.sort_values(["score", "image_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _summary(cfg: ReportLabelsConfig, table: pd.DataFrame, listed: pd.DataFrame, classes: tuple[str, ...]) -> dict:
    scores = table["score"].to_numpy()
    return {
        "models": list(cfg.models),
        "classifier": cfg.classifier,
        "images": len(table),
        "disagreeing": int((scores > 0).sum()),
        **{f"over_{round(100 * s)}pct": int((scores >= s).sum()) for s in SHARES},
        "max_score": float(scores.max()) if len(scores) else 0.0,
        "listed": len(listed),
        "drawn": min(cfg.top, len(listed)),
        "kinds": {k: Counter(listed["kind"])[k] for k in KINDS},
        "classes": {c: Counter(listed["class"])[c] for c in classes},
    }


def _draw(folder: Path, top: pd.DataFrame, oof: _Oof, data: DataConfig, cache, tile, above: int) -> None:
    """The top suspects: each class's tile with the label outlined and the confident prediction filled."""
    folder.mkdir()
    if top.empty:
        return
    source = open_source(data).with_limits(cache.meta.get("band_limits"))
    row_of = {image_id: i for i, image_id in enumerate(oof.ids)}
    for rank, r in enumerate(top.to_dict("records"), 1):
        i = row_of[r["image_id"]]
        present, _ = confident_masks([m[i : i + 1] for m in oof.maps], 0, above)
        truth = unpack_masks(oof.truth[i : i + 1], len(cache.classes))[0]
        kind, cls = r["kind"], r["class"]
        what = f"{cls} labelled, seen as {r['seen_as']}" if kind == "wrong class" else f"{cls}: {kind}"
        title = f"#{rank} suspect: {r['image_id']}  fold {r['fold']}  {what}  score {r['score']:.3f}"
        image = source.rgb("train", source.train_ids.index(r["image_id"]))
        png = folder / f"{rank:02d}_{Path(r['image_id']).stem}.png"
        write_png(png, panel(image, truth, present[0], title, tile, cache.classes))
