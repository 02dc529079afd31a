"""Stage `preprocess`: decode JPEGs and RLEs once into a compact memory-mappable cache.

Writes the folder described in cloudcli.data.cache, and a metrics file of label statistics.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli import CLASSES
from cloudcli.config import DataConfig, PreprocessConfig
from cloudcli.data.cache import pack_masks, resize_mask
from cloudcli.data.kaggle import SUBMISSION_CSV, TRAIN_CSV, image_paths, presence, read_image, read_labels, to_wide
from cloudcli.io import atomic_path, write_csv, write_json
from cloudcli.parallel import pmap
from cloudcli.rle import decode
from cloudcli.ui import info
from cloudcli.versions import versions

PARAMS = ("data", "preprocess")
_ARRAYS: dict[str, np.ndarray] = {}  # per-process memory maps of the cache being written


def _open_arrays(folder: Path) -> None:
    for path in folder.glob("*.npy"):
        _ARRAYS[path.stem] = np.load(path, mmap_mode="r+")


def _process(job: tuple) -> None:
    split, i, path, rles, data, cfg = job
    image = read_image(path, data.image_size)
    _ARRAYS[f"{split}_images"][i] = cv2.resize(image, cfg.image_size[::-1], interpolation=cv2.INTER_AREA)
    if split == "train":
        masks = [decode(rle, data.image_size) for rle in rles]  # (H, W) each, at full size
        _ARRAYS["train_masks"][i] = pack_masks(np.stack([resize_mask(m, cfg.image_size) for m in masks]))
        _ARRAYS["train_truth"][i] = pack_masks(np.stack([resize_mask(m, data.score_size) for m in masks]))


def run(data: DataConfig, cfg: PreprocessConfig, out: Path, metrics: Path) -> None:
    raw = Path(data.raw)
    train = to_wide(read_labels(raw / TRAIN_CSV, data.image_size))  # validates every RLE first
    test_ids = list(pd.unique(read_labels(raw / SUBMISSION_CSV)["image_id"]))
    train_paths, test_paths = image_paths(raw, "train", list(train.index)), image_paths(raw, "test", test_ids)
    n, m, (h, w), (sh, sw) = len(train), len(test_ids), cfg.image_size, data.score_size
    info(
        f"preprocess: {n} train + {m} test images {data.image_size[0]}x{data.image_size[1]} -> {h}x{w}, "
        f"truth masks at {sh}x{sw}, {cfg.workers} workers"
    )
    shapes = {
        "train_images": (n, h, w, 3),
        "train_masks": (n, h, w),
        "train_truth": (n, sh, sw),
        "test_images": (m, h, w, 3),
    }
    with atomic_path(out, is_dir=True) as tmp:
        for name, shape in shapes.items():
            np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape).flush()
        jobs = [("train", i, p, tuple(train.iloc[i]), data, cfg) for i, p in enumerate(train_paths)]
        jobs += [("test", i, p, None, data, cfg) for i, p in enumerate(test_paths)]
        pmap(_process, jobs, cfg.workers, "preprocess", "images", _open_arrays, (tmp,))
        _ARRAYS.clear()
        present = presence(train)
        table = pd.DataFrame(present.astype(np.uint8), columns=list(CLASSES)).assign(image_id=list(train.index))
        write_csv(tmp / "train.csv", table[["image_id", *CLASSES]])
        write_csv(tmp / "test.csv", pd.DataFrame({"image_id": test_ids}))
        write_json(
            tmp / "meta.json",
            {
                "classes": list(CLASSES),
                "mask_bits": {c: 1 << k for k, c in enumerate(CLASSES)},
                "arrays": {k: list(v) for k, v in shapes.items()},
                "params": {"data": asdict(data), "preprocess": asdict(cfg)},
                "versions": versions(),
            },
        )
    write_json(metrics, label_stats(present, m))
    info(f"preprocess: wrote {out}")


def label_stats(present: np.ndarray, n_test: int) -> dict:
    """Label statistics of an (N, 4) presence matrix, for `dvc metrics show`."""
    return {
        "n_train": len(present),
        "n_test": int(n_test),
        "labels_non_empty": round(float(present.mean()), 4),
        "classes_per_image": round(float(present.sum(1).mean()), 4),
        **{f"share_{c}": round(float(present[:, k].mean()), 4) for k, c in enumerate(CLASSES)},
    }
