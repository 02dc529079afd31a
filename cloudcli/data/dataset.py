"""Torch datasets over the preprocessed cache, with albumentations transforms from params.

Each sample's augmentation is seeded from (seed, epoch, index): the same run gives the same
batches whatever the number of loader workers, and a resumed run continues exactly.
"""

from __future__ import annotations

import random
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import BatchSampler, ConcatDataset, Dataset, Sampler

from cloudcli.config import AugmentConfig
from cloudcli.data.cache import unpack_masks


def build_transform(
    aug: AugmentConfig | None,
    size: tuple[int, int],
    cache_size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> A.Compose:
    """Resize (if the model size differs from the cache's), augment (train only), normalise."""
    steps: list = [] if tuple(size) == tuple(cache_size) else [A.Resize(*size, interpolation=cv2.INTER_AREA)]
    if aug is not None:
        steps += [
            A.HorizontalFlip(p=aug.hflip),
            A.VerticalFlip(p=aug.vflip),
            A.Transpose(p=aug.transpose),  # with rotate90: the dihedral group D4 (square inputs only)
            A.RandomRotate90(p=aug.rotate90),  # 0, 90, 180 or 270 degrees, each 1/4 of the time
            A.Affine(
                translate_percent=(-aug.shift_limit, aug.shift_limit),
                scale=(1 - aug.scale_limit, 1 + aug.scale_limit),
                rotate=(-aug.rotate_limit, aug.rotate_limit),
                border_mode=cv2.BORDER_CONSTANT,
                p=aug.shift_scale_rotate,
            ),
            A.GridDistortion(p=aug.grid_distortion),
            A.RandomBrightnessContrast(p=aug.brightness_contrast),
        ]
    steps += [A.Normalize(mean=mean, std=std, max_pixel_value=255.0), ToTensorV2(transpose_mask=True)]
    return A.Compose(steps)


class CacheDataset(Dataset):
    """Rows `indices` of the cache: dict(image (B, H, W) float, masks (C, H, W) float, labels (C,), index),
    and valid (1, H, W) float (1 where a pixel has data) when `valid` names the cache's valid file:
    it goes through the augmentation as one more mask channel, so it moves with the masks exactly.

    By default masks and labels are those of the same cache row. A pseudo-labelled set reads test
    images with masks from its own file: `masks` names the packed-mask file and `mask_rows` gives,
    for each item, its row there and in `labels`; `stream` keeps its augmentations apart from those
    of the training rows with the same index."""

    def __init__(
        self,
        images: str | Path,  # the cache's images file, e.g. Cache.path("train_images")
        indices: np.ndarray,
        labels: np.ndarray,
        transform: A.Compose,
        seed: int = 0,
        with_masks: bool = True,
        masks: str | Path | None = None,  # packed masks file [default: masks.npy beside `images`]
        mask_rows: np.ndarray | None = None,  # row of each item in `masks` and `labels` [default: its index]
        stream: int | None = None,
        soft: bool = False,  # `masks` holds (K, C, h, w) uint8 probabilities (soft labels), not packed bits
        valid: str | Path | None = None,  # the (N, h, w) 0/1 file of pixels with data, rows as in `images`
    ) -> None:
        self.images_file, self.indices, self.labels = Path(images), np.asarray(indices), labels
        self.transform, self.seed, self.epoch, self.with_masks = transform, seed, 0, with_masks
        self.masks_file = Path(masks) if masks is not None else self.images_file.with_name("masks.npy")
        self.mask_rows = None if mask_rows is None else np.asarray(mask_rows)
        self.stream, self.soft = stream, soft
        self.valid_file = Path(valid) if valid is not None and with_masks else None
        self._images: np.ndarray | None = None  # memory maps, opened lazily in each worker
        self._masks: np.ndarray | None = None
        self._valid: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, j: int) -> dict:
        if self._images is None:
            self._images = np.load(self.images_file, mmap_mode="r")
            self._masks = np.load(self.masks_file, mmap_mode="r") if self.with_masks else None
            self._valid = None if self.valid_file is None else np.load(self.valid_file, mmap_mode="r")
        i = int(self.indices[j])
        m = i if self.mask_rows is None else int(self.mask_rows[j])
        entropy = [self.seed, self.epoch, i] if self.stream is None else [self.seed, self.epoch, i, self.stream]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
        # One generator shared by every transform, each drawing from it in turn (set_random_seed would
        # give each its own copy of one seed: transforms of equal probability would fire together).
        self.transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        sample = {"image": np.array(self._images[i])}
        if self.with_masks:
            masks = np.asarray(self._masks[m]) if self.soft else unpack_masks(self._masks[m], self.labels.shape[1])
            if self._valid is not None:  # one more channel, on the masks' scale
                masks = np.concatenate([masks, self._valid[i][None] * np.uint8(255 if self.soft else 1)])
            sample["mask"] = masks.transpose(1, 2, 0)  # (h, w, C) uint8: 0/1, or p * 255 when soft
        out = self.transform(**sample)
        item = {"image": out["image"], "labels": torch.from_numpy(self.labels[m].astype(np.float32)), "index": i}
        if self.with_masks:
            masks = out["mask"].float() / (255.0 if self.soft else 1.0)
            item["masks"] = masks if self._valid is None else masks[:-1]
            if self._valid is not None:
                item["valid"] = masks[-1:]
        return item


class ConcatWithEpoch(ConcatDataset):
    """ConcatDataset whose set_epoch reaches every part (new augmentations each epoch)."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)


class ShardSampler(Sampler[int]):
    """Each of `world` processes gets every world-th item of a (shuffled) order: every item once
    per epoch across processes, no padding, no duplicates."""

    def __init__(self, n: int, rank: int = 0, world: int = 1, shuffle: bool = True, seed: int = 0) -> None:
        self.n, self.rank, self.world, self.shuffle, self.seed, self.epoch = n, rank, world, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def __iter__(self):
        return iter(self._order()[self.rank :: self.world].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


class NoSingletonBatchSampler(BatchSampler):
    """Batches of `batch_size`; a last batch of one sample joins the batch before it, since
    BatchNorm cannot train on one sample. Every sample still comes once per epoch."""

    def __init__(self, sampler: ShardSampler, batch_size: int) -> None:
        super().__init__(sampler, batch_size, drop_last=False)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        batches = list(super().__iter__())
        if len(batches) > 1 and len(batches[-1]) == 1:
            tail = batches.pop()
            batches[-1] = batches[-1] + tail
        return iter(batches)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if n > 1 and n % self.batch_size == 1 else -(-n // self.batch_size)
