"""Stage `fold`: assign every training image to one validation fold, stratified on its classes
(and on the metadata strata of fold.stratify), keeping the groups of fold.group whole.

With data.exclude, the folds are the same (every image is split as without it) and an `excluded`
column (0/1) marks the listed images: train, infer and cv leave them out downstream."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cloudcli.config import DataConfig, FoldConfig
from cloudcli.data.exclude import check_folds_keep_images, read_exclude
from cloudcli.data.folds import group_of, make_folds, read_metadata, strata, strata_balance
from cloudcli.data.group_folds import group_report
from cloudcli.data.sources import open_source
from cloudcli.io import atomic_paths, write_csv, write_json
from cloudcli.ui import info

PARAMS = ("data", "fold")


def run(data: DataConfig, cfg: FoldConfig, out: Path, metrics: Path) -> None:
    source = open_source(data, labels_only=True)
    present, areas = source.presence_and_areas("coverage" in cfg.stratify)  # (N, C) bool, (N, C) or None
    where = None if data.metadata is None else Path(data.raw) / data.metadata
    metadata = None if where is None else read_metadata(where, source.train_ids)
    stratified = strata(cfg.stratify, metadata, areas, cfg.bins, str(where)) if cfg.stratify else None
    group = None if cfg.group is None else group_of(cfg.group, metadata, str(where))
    folds = make_folds(present, cfg.n_splits, cfg.seed, stratified, group)
    excluded = None if data.exclude is None else read_exclude(Path(data.exclude), list(source.train_ids))
    if excluded is not None:
        check_folds_keep_images(excluded, folds, f"{data.exclude} (data.exclude)")
    classes = list(source.classes)
    table = pd.DataFrame(present, columns=classes).assign(fold=folds)
    share = table.groupby("fold")[classes].mean()  # (K, C) share of images with each class
    sizes = table.groupby("fold").size()
    report = {
        "n_splits": cfg.n_splits,
        "images_per_fold": {str(k): int(v) for k, v in sizes.items()},
        "max_class_share_gap": round(float((share - present.mean(0)).abs().to_numpy().max()), 4),
    }
    if stratified is not None:
        report["max_stratum_share_gap"] = strata_balance(stratified, folds)
    if group is not None:
        report["group"] = group_report(cfg.group, group.to_numpy(), folds)
    written = pd.DataFrame({"image_id": list(source.train_ids), "fold": folds})
    if excluded is not None:
        written["excluded"] = excluded.astype(int)
        report["excluded_per_fold"] = {str(k): int(excluded[folds == k].sum()) for k in sizes.index}
    with atomic_paths((out, False), (metrics, False)) as (out_tmp, metrics_tmp):  # both or neither
        write_csv(out_tmp, written)
        write_json(metrics_tmp, report)
    balanced = f", balanced on {', '.join(cfg.stratify)}" if cfg.stratify else ""
    whole = "" if group is None else f", {report['group']['groups']} {cfg.group} groups each in one fold"
    info(
        f"fold: {len(folds)} images in {cfg.n_splits} folds of {sizes.min()}..{sizes.max()} images"
        f"{whole}{balanced}"
        + ("" if excluded is None else f", {int(excluded.sum())} excluded ({data.exclude})")
        + f" -> {out}"
    )
