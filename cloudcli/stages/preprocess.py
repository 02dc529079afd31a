"""Stage `preprocess`: decode images and labels once into a compact memory-mappable cache.

Any dataset kind (cloudcli.data.sources) becomes the folder described in cloudcli.data.cache;
also a metrics file of label statistics.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import DataConfig, PreprocessConfig
from cloudcli.data.cache import PARTS, array_path, pack_masks, resize_image, resize_mask
from cloudcli.data.sources import Source, open_source
from cloudcli.errors import DataError
from cloudcli.io import atomic_paths, new_array, write_csv, write_json
from cloudcli.parallel import pmap
from cloudcli.ui import info
from cloudcli.versions import versions

PARAMS = ("data", "preprocess")
_ARRAYS: dict[str, np.ndarray] = {}  # per-process memory maps of the cache being written
_SOURCE: list[Source] = []  # per-process: the dataset being read (sent once per worker, not per image)


def _open(folder: Path, source: Source) -> None:
    for path in folder.glob("*/*.npy"):
        _ARRAYS[f"{path.parent.name}_{path.stem}"] = np.load(path, mmap_mode="r+")
    _SOURCE[:] = [source]


def _process(job: tuple) -> np.ndarray | None:
    """Write one image (and its masks) into the cache; (C,) mask areas at full size, for training images."""
    split, i, cfg, score_size, truth = job
    source = _SOURCE[0]
    (image, valid), target = source.image_and_valid(split, i), _ARRAYS[f"{split}_images"]
    if image.shape[2] != target.shape[3]:
        raise DataError(
            f"{source.root}: {split} image {source.ids(split)[i]} has {image.shape[2]} bands (channels), the first "
            f"training image {target.shape[3]}; every image of a dataset needs the same bands"
        )
    target[i] = resize_image(image, cfg.cache_size)
    if valid is not None:  # data.nodata: where each size has data
        _ARRAYS[f"{split}_valid"][i] = resize_mask(valid, cfg.cache_size)
        _ARRAYS[f"{split}_valid_score"][i] = valid_score = resize_mask(valid, score_size)
    if split == "test" and not truth:
        return None
    masks = source.masks(split, i)  # (C, H, W) at full size
    if split == "train":
        _ARRAYS["train_masks"][i] = pack_masks(np.stack([resize_mask(m, cfg.cache_size) for m in masks]))
    packed = pack_masks(np.stack([resize_mask(m, score_size) for m in masks]))
    _ARRAYS[f"{split}_truth"][i] = packed if valid is None else packed * valid_score  # no class where no data
    return masks.reshape(len(masks), -1).sum(1)


def run(data: DataConfig, cfg: PreprocessConfig, out: Path, metrics: Path) -> None:
    source = open_source(data).fit_limits()  # checks the layout; band limits from the training pixels
    n, m, (h, w), (sh, sw) = len(source.train_ids), len(source.test_ids), cfg.cache_size, data.score_size
    bands = source.image("train", 0).shape[2]
    info(
        f"preprocess: {data.kind}, {n} train + {m} test images {data.raw_size[0]}x{data.raw_size[1]}x{bands} -> "
        f"{h}x{w}, {len(source.classes)} classes, truth masks at {sh}x{sw}, {cfg.workers} workers"
    )
    shapes = {
        "train_images": (n, h, w, bands),
        "train_masks": (n, h, w),
        "train_truth": (n, sh, sw),
        "test_images": (m, h, w, bands),
    }
    if source.has_test_truth:
        shapes["test_truth"] = (m, sh, sw)  # the demo's hidden test labels, for the test score
    if source.nodata is not None:  # 1 where a pixel has data, at the cache and at the scoring size
        for part, count in (("train", n), ("test", m)):
            shapes |= {f"{part}_valid": (count, h, w), f"{part}_valid_score": (count, sh, sw)}
    with atomic_paths((out, True), (metrics, False)) as (tmp, metrics_tmp):  # both or neither
        for name, shape in shapes.items():
            array_path(tmp, name).parent.mkdir(exist_ok=True)
            new_array(array_path(tmp, name), shape).flush()
        jobs = [("train", i, cfg, data.score_size, True) for i in range(n)]
        jobs += [("test", i, cfg, data.score_size, source.has_test_truth) for i in range(m)]
        areas = pmap(_process, jobs, cfg.workers, "preprocess", "images", _open, (tmp, source))[:n]
        _ARRAYS.clear(), _SOURCE.clear()
        areas = np.stack(areas)  # (N, C) mask pixels at full size
        classes = list(source.classes)
        table = pd.DataFrame((areas > 0).astype(np.uint8), columns=classes).assign(image_id=list(source.train_ids))
        write_csv(tmp / "train" / "index.csv", table[["image_id", *classes]])
        write_csv(tmp / "test" / "index.csv", pd.DataFrame({"image_id": list(source.test_ids)}))
        for part in PARTS:
            write_json(tmp / part / "meta.json", _meta(source, data, cfg, shapes, tmp, part))
        write_json(metrics_tmp, label_stats(areas > 0, m, source.classes))
    info(f"preprocess: wrote {out}")


def _meta(source: Source, data: DataConfig, cfg: PreprocessConfig, shapes: dict, folder: Path, part: str) -> dict:
    """meta.json of one part: what made it. Nothing of the other part goes in, so a part's files
    change only when its own images do (the training stages depend on the training part alone)."""
    meta = {"kind": source.kind, "classes": list(source.classes), "bands": list(source.bands) or None}
    if part == "train":
        images = np.load(array_path(folder, "train_images"), mmap_mode="r")
        every = max(1, len(images) // 64)
        stats = images[::every].reshape(-1, images.shape[-1]) / 255.0  # a sample's statistics
        if "train_valid" in shapes:  # data.nodata: of the pixels with data
            stats = stats[np.load(array_path(folder, "train_valid"), mmap_mode="r")[::every].reshape(-1) != 0]
            stats = stats if len(stats) else np.zeros((1, images.shape[-1]))
        meta |= {
            "mask_bits": {c: 1 << k for k, c in enumerate(source.classes)},
            "band_limits": None if source.limits is None else source.limits.round(3).tolist(),
            "band_mean": stats.mean(0).round(4).tolist(),
            "band_std": np.maximum(stats.std(0), 1e-3).round(4).tolist(),
        }
    arrays = {k: list(v) for k, v in shapes.items() if k.startswith(f"{part}_")}
    params = {"data": asdict(data), "preprocess": asdict(cfg)}
    return meta | {"arrays": arrays, "params": params, "versions": versions()}


def label_stats(present: np.ndarray, n_test: int, classes: tuple[str, ...]) -> dict:
    """Label statistics of an (N, C) presence matrix, for `dvc metrics show`."""
    return {
        "n_train": len(present),
        "n_test": int(n_test),
        "labels_non_empty": round(float(present.mean()), 4),
        "classes_per_image": round(float(present.sum(1).mean()), 4),
        **{f"share_{c}": round(float(present[:, k].mean()), 4) for k, c in enumerate(classes)},
    }
