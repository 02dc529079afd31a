"""What one fold trains and validates on: the fold's rows of the cache, the pseudo-labelled test
images, and the data loaders over them (sharded across processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from cloudcli.config import AugmentConfig, ResolvedModel
from cloudcli.data.cache import Cache
from cloudcli.data.dataset import (
    CacheDataset,
    ConcatWithEpoch,
    NoSingletonBatchSampler,
    ShardSampler,
    build_transform,
)
from cloudcli.data.folds import read_split
from cloudcli.data.pseudo import PseudoSet, read_pseudo
from cloudcli.engine.distributed import Context
from cloudcli.errors import DataError
from cloudcli.models.factory import normalization
from cloudcli.parallel import worker_cap


def split_indices(cache_train_ids: list[str], folds_csv: Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, valid rows) of the cache for `fold`, from the folds table; images it marks
    excluded (data.exclude) are in neither."""
    folds, excluded = read_split(folds_csv, cache_train_ids, need=(fold,))
    return np.flatnonzero((folds != fold) & ~excluded), np.flatnonzero((folds == fold) & ~excluded)


def pseudo_set(folder: Path, cache: Cache, fold: int | None = None) -> PseudoSet:
    """The pseudo-labelled set of `fold` (a round's folder holds one per fold, fold<k>/; a folder
    with its own images.csv is one set for every fold), checked to hold test images only: they
    never reach a validation fold."""
    folder = Path(folder)
    if fold is not None and not (folder / "images.csv").exists():
        folder = folder / f"fold{fold}"
    pseudo = read_pseudo(folder, list(cache.test["image_id"]), cache.test_size, cache.classes)
    clash = set(pseudo.images["image_id"]) & set(cache.train["image_id"])
    if clash:
        raise DataError(
            f"{folder / 'images.csv'}: {len(clash)} images are training images (e.g. {sorted(clash)[0]}); "
            "pseudo labels are for test images only"
        )
    return pseudo


def build_loaders(
    spec: ResolvedModel,
    augment: AugmentConfig,
    cache: Cache,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    ctx: Context,
    pseudo: PseudoSet | None = None,
) -> tuple[DataLoader, DataLoader]:
    """(train, valid) loaders: augmented, reshuffled batches (never of one image) over the training
    rows and any pseudo-labelled test images; the validation rows in order, unaugmented."""
    cfg, cache_size = spec.train, cache.cache_size
    size = cfg.input_size or cache_size
    mean, std = normalization(spec.network, cache.band_stats)
    labels = cache.train[list(cache.classes)].to_numpy()
    masks = spec.role != "classifier"
    augmented = build_transform(augment, size, cache_size, mean, std)
    valid = cache.path("train_valid") if cache.has_valid else None  # data.nodata: the loss skips pixels without
    train_ds = CacheDataset(cache.path("train_images"), train_idx, labels, augmented, cfg.seed, masks, valid=valid)
    if pseudo is not None and len(pseudo.images):  # test images: the training part only, never validation
        train_ds = ConcatWithEpoch([train_ds, _pseudo_dataset(cache, pseudo, augmented, cfg.seed, masks)])
    plain = build_transform(None, size, cache_size, mean, std)
    valid_ds = CacheDataset(cache.path("train_images"), valid_idx, labels, plain, cfg.seed, masks, valid=valid)
    common = {"num_workers": worker_cap(cfg.workers), "pin_memory": ctx.device.type == "cuda"}
    common["persistent_workers"] = False
    train_batches = NoSingletonBatchSampler(
        ShardSampler(len(train_ds), ctx.rank, ctx.world, True, cfg.seed), cfg.batch_size
    )
    return (
        DataLoader(train_ds, batch_sampler=train_batches, **common),
        DataLoader(
            valid_ds,
            sampler=ShardSampler(len(valid_ds), ctx.rank, ctx.world, False),
            batch_size=cfg.batch_size,
            **common,
        ),
    )


def _pseudo_dataset(cache: Cache, pseudo: PseudoSet, augmented, seed: int, masks: bool) -> CacheDataset:
    """The pseudo-labelled test images as a second stream of training samples."""
    return CacheDataset(
        cache.path("test_images"),
        pseudo.images["test_row"].to_numpy(),
        pseudo.labels,
        augmented,
        seed,
        masks,
        masks=pseudo.targets,
        soft=pseudo.soft,
        mask_rows=np.arange(len(pseudo.images)),
        stream=1,
        valid=cache.path("test_valid") if cache.has_valid else None,
    )
