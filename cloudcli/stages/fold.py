"""Stage `fold`: assign every training image to one validation fold, stratified on its classes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cloudcli import CLASSES
from cloudcli.config import DataConfig, FoldConfig
from cloudcli.data.folds import make_folds
from cloudcli.data.kaggle import TRAIN_CSV, presence, read_labels, to_wide
from cloudcli.io import write_csv, write_json
from cloudcli.ui import info

PARAMS = ("data", "fold")


def run(data: DataConfig, cfg: FoldConfig, out: Path, metrics: Path) -> None:
    wide = to_wide(read_labels(Path(data.raw) / TRAIN_CSV, data.image_size))
    present = presence(wide)
    folds = make_folds(present, cfg.n_splits, cfg.seed)
    write_csv(out, pd.DataFrame({"image_id": wide.index, "fold": folds}))
    table = pd.DataFrame(present, columns=list(CLASSES)).assign(fold=folds)
    share = table.groupby("fold")[list(CLASSES)].mean()  # (K, 4) share of images with each class
    sizes = table.groupby("fold").size()
    write_json(
        metrics,
        {
            "n_splits": cfg.n_splits,
            "images_per_fold": {str(k): int(v) for k, v in sizes.items()},
            "max_class_share_gap": round(float((share - present.mean(0)).abs().to_numpy().max()), 4),
        },
    )
    info(f"fold: {len(wide)} images in {cfg.n_splits} folds of {sizes.min()}..{sizes.max()} images -> {out}")
