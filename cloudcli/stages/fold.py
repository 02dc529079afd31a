"""Stage `fold`: assign every training image to one validation fold, stratified on its classes
(and on the metadata groups of fold.stratify)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cloudcli.config import DataConfig, FoldConfig
from cloudcli.data.folds import group_balance, make_folds, read_metadata, strata
from cloudcli.data.sources import open_source
from cloudcli.io import atomic_paths, write_csv, write_json
from cloudcli.ui import info

PARAMS = ("data", "fold")


def run(data: DataConfig, cfg: FoldConfig, out: Path, metrics: Path) -> None:
    source = open_source(data, labels_only=True)
    present, areas = source.presence_and_areas("coverage" in cfg.stratify)  # (N, C) bool, (N, C) or None
    where = None if data.metadata is None else Path(data.raw) / data.metadata
    metadata = None if where is None else read_metadata(where, source.train_ids)
    groups = strata(cfg.stratify, metadata, areas, cfg.bins, str(where)) if cfg.stratify else None
    folds = make_folds(present, cfg.n_splits, cfg.seed, groups)
    classes = list(source.classes)
    table = pd.DataFrame(present, columns=classes).assign(fold=folds)
    share = table.groupby("fold")[classes].mean()  # (K, C) share of images with each class
    sizes = table.groupby("fold").size()
    report = {
        "n_splits": cfg.n_splits,
        "images_per_fold": {str(k): int(v) for k, v in sizes.items()},
        "max_class_share_gap": round(float((share - present.mean(0)).abs().to_numpy().max()), 4),
    }
    if groups is not None:
        report["max_group_share_gap"] = group_balance(groups, folds)
    with atomic_paths((out, False), (metrics, False)) as (out_tmp, metrics_tmp):  # both or neither
        write_csv(out_tmp, pd.DataFrame({"image_id": list(source.train_ids), "fold": folds}))
        write_json(metrics_tmp, report)
    balanced = f", balanced on {', '.join(cfg.stratify)}" if cfg.stratify else ""
    info(f"fold: {len(folds)} images in {cfg.n_splits} folds of {sizes.min()}..{sizes.max()} images{balanced} -> {out}")
