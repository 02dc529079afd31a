"""A synthetic dataset in the exact Kaggle format, deterministic for a seed.

Each class is a visual texture inside box- or blob-shaped regions, so a small CNN can learn it:
Fish = bright oblique streaks, Flower = large soft puffs, Gravel = dense mid-size grains,
Sugar = faint fine speckle, over a dark sea. Label statistics follow the real training set:
every image has 1-4 classes (mean ~2.1), so about half of the (image, class) rows are empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli import CLASSES
from cloudcli.data.demo_noise import corrupt
from cloudcli.data.kaggle import IMAGE_DIRS, SUBMISSION_CSV, TEST_TRUTH_CSV, TRAIN_CSV
from cloudcli.errors import DataError
from cloudcli.io import atomic_path
from cloudcli.parallel import pmap
from cloudcli.rle import encode
from cloudcli.ui import info

N_CLASSES_P = (0.24, 0.43, 0.28, 0.05)  # P(1, 2, 3, 4 classes in an image), as in train.csv
CLASS_P = np.array([2781, 2365, 2939, 3751]) / 11836  # Fish, Flower, Gravel, Sugar label counts
JPEG_QUALITY = 85
NOISE_KEY, TRAIN_TRUTH_CSV = "label_noise.csv", "train_truth.csv"  # --label-noise's answer key: never read


@dataclass(frozen=True)
class DemoSpec:
    n_train: int = 120
    n_test: int = 40
    seed: int = 0
    height: int = 1400
    width: int = 2100
    label_noise: float = 0.0  # share of training images given wrong labels (cloudcli.data.demo_noise)


def sample_classes(rng: np.random.Generator) -> np.ndarray:
    """Sorted class indices present in one image: 1-4 of them, never none."""
    k = rng.choice(4, p=N_CLASSES_P) + 1
    return np.sort(rng.choice(len(CLASSES), size=k, replace=False, p=CLASS_P))


def region_mask(rng: np.random.Generator, claimed: np.ndarray) -> np.ndarray:
    """(H, W) uint8 mask of 1-2 box or blob regions, each 20-50% of the image per side, placed
    where they overlap the `claimed` pixels (other classes) least among 8 candidate positions."""
    height, width = claimed.shape
    mask = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(1, 3)):
        h, w = (rng.uniform(0.2, 0.5, 2) * (height, width)).astype(int)
        blob = rng.random() < 0.5  # else a box, as the crowd-sourced labels mostly are
        radius = rng.uniform(0.75, 1.0, 24)  # a blob is an ellipse with a wobbly outline
        ys, xs = rng.integers(0, height - h + 1, 8), rng.integers(0, width - w + 1, 8)
        overlap = [claimed[y : y + h, x : x + w].sum() for y, x in zip(ys, xs)]
        y, x = ys[int(np.argmin(overlap))], xs[int(np.argmin(overlap))]
        if blob:
            angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            pts = np.stack([x + w / 2 * (1 + radius * np.cos(angles)), y + h / 2 * (1 + radius * np.sin(angles))], 1)
            cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
        else:
            mask[y : y + h, x : x + w] = 1
    return mask


def _blurred_noise(rng: np.random.Generator, shape: tuple[int, int], density: float, sigma: float) -> np.ndarray:
    """Random impulses blurred into grains of size ~sigma, scaled to 0..1."""
    impulses = (rng.random(shape) < density).astype(np.float32)
    grains = cv2.GaussianBlur(impulses, (0, 0), max(sigma, 0.5))
    return grains / max(float(grains.max()), 1e-6)


def texture(rng: np.random.Generator, k: int, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 grey levels of one class texture, sized relative to the image width."""
    h, w = shape
    if k == 0:  # Fish: bright streaks at a random angle, ~18 per image width
        theta = rng.uniform(-0.5, 0.5)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi * 18 / w)
        return 120 + 110 * (0.5 + 0.5 * np.sin(phase)) ** 2
    if k == 1:  # Flower: large soft puffs
        return 80 + 160 * _blurred_noise(rng, shape, 150 / (w * h), w / 60)
    if k == 2:  # Gravel: dense grains
        return 90 + 120 * _blurred_noise(rng, shape, 0.02, w / 300)
    return 100 + 60 * _blurred_noise(rng, shape, 0.3, w / 800)  # Sugar: faint fine speckle


def render(seed_seq: np.random.SeedSequence, height: int, width: int) -> tuple[np.ndarray, list[str]]:
    """One image (H, W, 3) uint8 RGB and its 4 RLEs in CLASSES order ('' = absent)."""
    rng = np.random.default_rng(seed_seq)
    shape = (max(height // 4, 8), max(width // 4, 8))  # textures are drawn at 1/4 size, then upsampled
    sea = 35 + 25 * cv2.resize(rng.random((6, 9)).astype(np.float32), shape[::-1], interpolation=cv2.INTER_CUBIC)
    grey = cv2.resize(sea, (width, height), interpolation=cv2.INTER_LINEAR)
    rles = [""] * len(CLASSES)
    claimed = np.zeros((height, width), np.uint8)
    for k in sample_classes(rng):
        mask = region_mask(rng, claimed)
        claimed |= mask
        layer = cv2.resize(texture(rng, k, shape).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        grey = np.where(mask == 1, layer, grey)
        rles[k] = encode(mask)
    grey += cv2.resize(rng.normal(0, 4, shape).astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
    tint = np.array([0.92, 0.97, 1.05], np.float32)  # slightly blue, as the real images
    image = np.clip(grey[..., None] * tint, 0, 255).astype(np.uint8)
    return image, rles


def _write_one(job: tuple[Path, int, int, int, int, int]) -> list[str]:
    path, seed, split, index, height, width = job
    image, rles = render(np.random.SeedSequence([seed, split, index]), height, width)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise DataError(f"{path}: could not write image")
    return rles


def _labels(image_ids: list[str], rles: list[list[str]]) -> pd.DataFrame:
    rows = [(f"{i}_{c}", r) for i, per_class in zip(image_ids, rles) for c, r in zip(CLASSES, per_class)]
    return pd.DataFrame(rows, columns=["Image_Label", "EncodedPixels"])


def generate(out: str | Path, spec: DemoSpec = DemoSpec(), workers: int = 2, force: bool = False) -> None:
    """Write a complete Kaggle-format dataset to `out` (atomically): CSVs and JPEG folders."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: folder is not empty; pass --force to replace it")
    if spec.n_train < 1 or spec.n_test < 1 or min(spec.height, spec.width) < 8:
        raise DataError("demo data needs n_train >= 1, n_test >= 1 and images of at least 8x8 pixels")
    if not 0.0 <= spec.label_noise <= 1.0:
        raise DataError(f"--label-noise {spec.label_noise}: must be a share of the training images, 0 to 1")
    rng = np.random.default_rng(spec.seed)
    ids = [f"{n:07x}.jpg" for n in rng.choice(16**7, spec.n_train + spec.n_test, replace=False)]
    splits = {"train": sorted(ids[: spec.n_train]), "test": sorted(ids[spec.n_train :])}
    with atomic_path(out, is_dir=True) as tmp:
        labels = {}
        for code, (split, image_ids) in enumerate(splits.items()):
            (tmp / IMAGE_DIRS[split]).mkdir()
            jobs = [
                (tmp / IMAGE_DIRS[split] / image_id, spec.seed, code, i, spec.height, spec.width)
                for i, image_id in enumerate(image_ids)
            ]
            rles = pmap(_write_one, jobs, workers, f"demo {split} images", "images")
            labels[split] = _labels(image_ids, rles)
            if split == "train" and spec.label_noise > 0:
                noisy, key = corrupt(image_ids, rles, spec.label_noise, spec.seed, (spec.height, spec.width), CLASSES)
                labels["train_truth"], labels["train"] = labels["train"], _labels(image_ids, noisy)
        write = {
            TRAIN_CSV: labels["train"],
            TEST_TRUTH_CSV: labels["test"],
            SUBMISSION_CSV: labels["test"].assign(EncodedPixels="1 1"),
        }
        if spec.label_noise > 0:  # the answer key, for measuring a bad-label search; the pipeline never reads it
            write |= {TRAIN_TRUTH_CSV: labels["train_truth"], NOISE_KEY: key}
        for name, frame in write.items():
            frame.to_csv(tmp / name, index=False, lineterminator="\n")
    non_empty = (labels["train"]["EncodedPixels"] != "").mean()
    info(
        f"demo data: {spec.n_train} train + {spec.n_test} test images of {spec.height}x{spec.width} "
        f"in {out}; {non_empty:.0%} of train labels non-empty"
        + (
            f"; {len(key)} with wrong labels (answer key {NOISE_KEY}, {TRAIN_TRUTH_CSV})"
            if spec.label_noise > 0
            else ""
        )
    )
