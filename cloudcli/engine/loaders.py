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
from cloudcli.data.pseudo import PART, SOURCES, PseudoSet, read_pseudo
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
    with its own images.csv is one set for every fold), checked to hold test images that are not
    training images, and training images only as relabelled excluded ones (pseudo.sources):
    build_loaders checks that those reach no validation."""
    folder = Path(folder)
    if fold is not None and not (folder / "images.csv").exists():
        folder = folder / f"fold{fold}"
    train_ids = list(cache.train["image_id"])
    pseudo = read_pseudo(folder, list(cache.test["image_id"]), cache.test_size, cache.classes, train_ids)
    at, _ = pseudo.of_source("test")
    clash = set(pseudo.images["image_id"].iloc[at]) & set(train_ids)
    if clash:
        raise DataError(
            f"{folder / 'images.csv'}: {len(clash)} images are training images (e.g. {sorted(clash)[0]}); "
            "pseudo labels are for test images (and, as source excluded, the training images data.exclude leaves out)"
        )
    if len(pseudo.of_source("excluded")[0]) and cache.test_size != cache.cache_size:
        raise DataError(
            f"{folder / 'images.csv'}: relabelled training images, but the cache's test and training images differ "
            f"in size ({cache.test_size} and {cache.cache_size}); rerun `dvc repro preprocess pseudo`"
        )
    return pseudo


def _check_relabelled(pseudo: PseudoSet, train_idx: np.ndarray, valid_idx: np.ndarray) -> None:
    """Relabelled training images (source excluded) train only through the pseudo set: none is a
    validation row (nor a training row) of the fold; data.exclude keeps them out of both."""
    _, rows = pseudo.of_source("excluded")
    for where, idx in (("validation", valid_idx), ("training", train_idx)):
        both = np.intersect1d(rows, idx)
        if len(both):
            raise DataError(
                f"{pseudo.folder / 'images.csv'}: {len(both)} relabelled images are {where} images of the fold "
                f"(e.g. row {int(both[0])} of the cache): folds.csv no longer marks them excluded; "
                "rerun `dvc repro pseudo` after `dvc repro fold`"
            )


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
    if pseudo is not None and len(pseudo.images):  # the training part only, never validation
        _check_relabelled(pseudo, train_idx, valid_idx)
        train_ds = ConcatWithEpoch([train_ds, *_pseudo_datasets(cache, pseudo, augmented, cfg.seed, masks)])
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


def _pseudo_datasets(cache: Cache, pseudo: PseudoSet, augmented, seed: int, masks: bool) -> list[CacheDataset]:
    """The pseudo-labelled images as more streams of training samples: the test images (stream 1),
    then any relabelled excluded training images (stream 2), each read from its cache part."""
    out = []
    for stream, source in enumerate(SOURCES, 1):
        at, rows = pseudo.of_source(source)
        if not len(at):
            continue
        part = PART[source]
        dataset = CacheDataset(
            cache.path(f"{part}_images"),
            rows,
            pseudo.labels,
            augmented,
            seed,
            masks,
            masks=pseudo.targets,
            soft=pseudo.soft,
            mask_rows=at,
            stream=stream,
            valid=cache.path(f"{part}_valid") if cache.has_valid else None,
        )
        out.append(dataset)
    return out
