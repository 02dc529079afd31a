"""Torch datasets over the preprocessed cache, with albumentations transforms from params.

Each sample's augmentation is seeded from (seed, epoch, index): the same run gives the same
batches whatever the number of loader workers, and a resumed run continues exactly.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import BatchSampler, Dataset, Sampler

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
    """Rows `indices` of the cache: dict(image (3, H, W) float, masks (4, H, W) float, labels (4,), index)."""

    def __init__(
        self,
        folder: str | Path,
        indices: np.ndarray,
        labels: np.ndarray,
        transform: A.Compose,
        seed: int = 0,
        with_masks: bool = True,
        images: str = "train_images",  # or "test_images" (then with_masks=False)
    ) -> None:
        self.folder, self.indices, self.labels, self.images = Path(folder), np.asarray(indices), labels, images
        self.transform, self.seed, self.epoch, self.with_masks = transform, seed, 0, with_masks
        self._images: np.ndarray | None = None  # memory maps, opened lazily in each worker
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, j: int) -> dict:
        if self._images is None:
            self._images = np.load(self.folder / f"{self.images}.npy", mmap_mode="r")
            self._masks = np.load(self.folder / "train_masks.npy", mmap_mode="r") if self.with_masks else None
        i = int(self.indices[j])
        seed = np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(1)[0]
        self.transform.set_random_seed(int(seed))
        sample = {"image": np.array(self._images[i])}
        if self.with_masks:
            sample["mask"] = unpack_masks(self._masks[i]).transpose(1, 2, 0)  # (h, w, 4)
        out = self.transform(**sample)
        item = {"image": out["image"], "labels": torch.from_numpy(self.labels[i].astype(np.float32)), "index": i}
        if self.with_masks:
            item["masks"] = out["mask"].float()
        return item


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
