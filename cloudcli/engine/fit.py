"""Train one model on one fold: the loop, checkpoints, resume, DVCLive logging.

Writes to `out`: last.pt (full training state, after every epoch), best.pt (weights of the best
epoch by the role's monitored metric), config.json (resolved config, versions), summary.json.
A run whose last.pt was made with the same settings resumes after its last completed epoch.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from cloudcli.config import AugmentConfig, ResolvedModel
from cloudcli.data.cache import open_cache
from cloudcli.data.dataset import (
    CacheDataset,
    ConcatWithEpoch,
    NoSingletonBatchSampler,
    ShardSampler,
    build_transform,
)
from cloudcli.data.pseudo import PseudoSet, read_pseudo
from cloudcli.engine.checkpoint import State, resume, save_training
from cloudcli.engine.distributed import Context, all_sum
from cloudcli.engine.optim import STEP_SCHEDULERS, build_optimizer, build_scheduler
from cloudcli.engine.validate import MONITOR, validate
from cloudcli.errors import DataError
from cloudcli.io import write_json
from cloudcli.models.factory import build_model, freeze_encoder_stages, normalization
from cloudcli.models.losses import build_loss
from cloudcli.ui import info, progress, warn
from cloudcli.versions import versions


def split_indices(cache_train_ids: list[str], folds_csv: Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, valid rows) of the cache for `fold`, from the folds table."""
    import pandas as pd

    table = pd.read_csv(folds_csv, dtype={"image_id": str}).set_index("image_id")["fold"]
    missing = set(cache_train_ids) - set(table.index)
    if missing:
        raise DataError(
            f"{folds_csv}: {len(missing)} cached images have no fold (e.g. {sorted(missing)[0]}); "
            "rerun `dvc repro fold`"
        )
    folds = table.loc[cache_train_ids].to_numpy()
    valid = np.flatnonzero(folds == fold)
    if len(valid) == 0:
        raise DataError(
            f"{folds_csv}: fold {fold} has no images (folds present: {sorted(set(folds))}); "
            "check cv.folds against fold.n_splits"
        )
    return np.flatnonzero(folds != fold), valid


def fit(
    spec: ResolvedModel,
    augment: AugmentConfig,
    cache_dir: Path,
    folds_csv: Path,
    fold: int,
    out: Path,
    live_dir: Path,
    ctx: Context,
    restart: bool = False,
    pseudo_dir: Path | None = None,
) -> dict:
    cfg = spec.train
    torch.manual_seed(cfg.seed)
    if ctx.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    loss_fn = build_loss(spec.role, spec.loss)
    cache = open_cache(cache_dir)  # meta and tables only: bands and classes size the model
    net = build_model(spec.role, spec.model, cache.channels, len(cache.classes))  # may download weights
    frozen = freeze_encoder_stages(net, spec.model.freeze_encoder_stages)
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), folds_csv, fold)
    pseudo = None if pseudo_dir is None else _pseudo_set(pseudo_dir, cache)
    loaders = _loaders(spec, augment, cache, train_idx, valid_idx, ctx, pseudo)
    settings = _settings(spec, augment, fold, cache, train_idx, valid_idx, frozen, pseudo)
    info(
        f"{spec.name} fold {fold}: {len(train_idx)} train"
        + (f" + {len(pseudo.images)} pseudo-labelled" if pseudo is not None else "")
        + f" / {len(valid_idx)} valid images, "
        f"{len(loaders[0])} steps/epoch on {ctx.device}"
        + (f" x {ctx.world} processes" if ctx.world > 1 else "")
        + (f", frozen encoder stages: {', '.join(frozen)}" if frozen else "")
    )
    return _train(spec, net, loss_fn, loaders, cache, settings, out, live_dir, ctx, restart)


def _pseudo_set(folder: Path, cache) -> PseudoSet:
    """The pseudo-labelled set, checked to hold test images only: they never reach a validation fold."""
    pseudo = read_pseudo(
        folder, list(cache.test["image_id"]), tuple(cache.meta["arrays"]["test_images"][1:3]), cache.classes
    )
    clash = set(pseudo.images["image_id"]) & set(cache.train["image_id"])
    if clash:
        raise DataError(
            f"{folder / 'images.csv'}: {len(clash)} images are training images (e.g. {sorted(clash)[0]}); "
            "pseudo labels are for test images only"
        )
    return pseudo


def _loaders(spec, augment, cache, train_idx, valid_idx, ctx, pseudo=None) -> tuple[DataLoader, DataLoader]:
    cfg, cache_size = spec.train, tuple(cache.meta["arrays"]["train_images"][1:3])
    size = cfg.image_size or cache_size
    mean, std = normalization(spec.model, cache.band_stats)
    labels = cache.train[list(cache.classes)].to_numpy()
    masks = spec.role != "cls"
    augmented = build_transform(augment, size, cache_size, mean, std)
    train_ds = CacheDataset(cache.folder, train_idx, labels, augmented, cfg.seed, masks)
    if pseudo is not None and len(pseudo.images):  # test images: the training part only, never validation
        extra = CacheDataset(
            cache.folder,
            pseudo.images["test_row"].to_numpy(),
            pseudo.labels,
            augmented,
            cfg.seed,
            masks,
            images="test_images",
            masks=pseudo.targets,
            soft=pseudo.soft,
            mask_rows=np.arange(len(pseudo.images)),
            stream=1,
        )
        train_ds = ConcatWithEpoch([train_ds, extra])
    valid_ds = CacheDataset(
        cache.folder, valid_idx, labels, build_transform(None, size, cache_size, mean, std), cfg.seed, masks
    )
    common = {"num_workers": cfg.workers, "pin_memory": ctx.device.type == "cuda", "persistent_workers": False}
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


def _settings(spec, augment, fold, cache, train_idx, valid_idx, frozen, pseudo=None) -> dict:
    mean, std = normalization(spec.model, cache.band_stats)
    return {
        "model": spec.name,
        "role": spec.role,
        "fold": fold,
        "loss": spec.loss,
        "model_config": asdict(spec.model),
        "train_config": asdict(spec.train),
        "augment": asdict(augment),
        "image_size": list(spec.train.image_size or cache.meta["arrays"]["train_images"][1:3]),
        "normalization": {"mean": list(mean), "std": list(std)},
        "in_channels": cache.channels,
        "classes": list(cache.classes),
        "monitor": MONITOR[spec.role],
        "n_train": len(train_idx),
        "n_valid": len(valid_idx),
        "frozen_encoder_stages": frozen,
        "valid_ids_sha1": hashlib.sha1(" ".join(cache.train["image_id"].iloc[valid_idx]).encode()).hexdigest(),
    } | (
        {}
        if pseudo is None
        else {"pseudo": {"folder": str(pseudo.folder), "images": len(pseudo.images), "sha1": pseudo.sha1}}
    )


def _train(spec, net, loss_fn, loaders, cache, settings, out, live_dir, ctx, restart) -> dict:
    cfg = spec.train
    net.to(ctx.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    model: nn.Module = DistributedDataParallel(net) if ctx.world > 1 else net
    if cfg.compile:
        model = torch.compile(model)
    train_loader, valid_loader = loaders
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, -(-len(train_loader) // cfg.accumulate), "max")
    cuda = ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda and cfg.precision == "fp16" else None
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    autocast = torch.autocast(ctx.device.type, dtype=dtype) if cuda and dtype else nullcontext()
    config_hash = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    state = State()
    out.mkdir(parents=True, exist_ok=True)
    if not restart and (out / "last.pt").exists():
        state = resume(out / "last.pt", config_hash, net, opt, sched, scaler, ema)
    if ctx.main:
        run = {"processes": ctx.world, "device": ctx.device.type}  # how it ran; not part of the resume check
        write_json(out / "config.json", settings | run | {"versions": versions(), "config_sha1": config_hash})
    live = _live(live_dir, resume=state.epoch >= 0) if ctx.main else None
    truth = cache.array("train_truth")
    val_losses: list[float] = []
    for epoch in range(state.epoch + 1, cfg.epochs):
        start = time.perf_counter()
        train_loader.batch_sampler.set_epoch(epoch)  # reshuffle
        train_loader.dataset.set_epoch(epoch)  # new augmentations
        train_loss, seen = _train_epoch(
            model,
            net,
            train_loader,
            loss_fn,
            opt,
            sched,
            scaler,
            ema,
            spec,
            ctx,
            autocast,
            f"{spec.name} fold {settings['fold']} epoch {epoch + 1}",
        )
        metrics = validate(
            ema.module if ema else net, valid_loader, loss_fn, spec.role, truth, ctx, autocast, cache.classes
        )
        value = _monitored(metrics, spec.role)
        val_losses.append(metrics["loss"])
        if ctx.main and stalled(val_losses) and not stalled(val_losses[:-1]):
            warn(
                f"{spec.name} fold {settings['fold']}: the validation loss has been the same for {STALL_EPOCHS} epochs "
                f"({metrics['loss']:.6f}): the outputs look saturated (sigmoid at 0 or 1 everywhere, no gradient). "
                f"A Dice-only loss can stall so: add bce to models.{spec.name}.loss (e.g. {{dice_pos: 1.0, bce: 0.5}}) "
                "or lower train.lr"
            )
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}  # lr of this epoch
        _step_epoch_scheduler(sched, cfg.scheduler, value)
        improved = value > state.best_value
        if improved:
            state = State(epoch, value, epoch, metrics)
        state.epoch = epoch
        if ctx.main:  # the curves first: once last.pt says an epoch is done, its row is logged
            _log(
                live, spec, settings["fold"], epoch, train_loss, seen, metrics, lrs, state, time.perf_counter() - start
            )
            save_training(out, epoch, improved, net, ema, opt, sched, scaler, state, config_hash, settings)
    if live is not None:
        live.end()
    summary = {
        "model": spec.name,
        "role": spec.role,
        "fold": settings["fold"],
        "monitor": MONITOR[spec.role],
        "best": state.best_value,
        "best_epoch": state.best_epoch + 1,
        "epochs": cfg.epochs,
        "n_valid": settings["n_valid"],
        "metrics": state.best_metrics,
    }
    if ctx.main:
        write_json(out / "summary.json", summary)
    return summary


STALL_EPOCHS = 3  # epochs with the same validation loss that mean a stalled (saturated) model


def stalled(val_losses: list[float], epochs: int = STALL_EPOCHS, rtol: float = 1e-6) -> bool:
    """True when the last `epochs` validation losses are equal (within rtol): nothing is learnt."""
    last = val_losses[-epochs:]
    return len(last) == epochs and max(last) - min(last) <= rtol * max(abs(v) for v in last)


def _train_epoch(model, net, loader, loss_fn, opt, sched, scaler, ema, spec, ctx, autocast, title):
    cfg = spec.train
    model.train()
    opt.zero_grad(set_to_none=True)
    loss_sum, seen = 0.0, 0
    join = model.join() if isinstance(model, DistributedDataParallel) else nullcontext()
    with join, progress(title, len(loader), "batches", lines=False, enabled=ctx.main) as advance:
        for step, batch in enumerate(loader):
            x = batch["image"].to(ctx.device, non_blocking=True, memory_format=torch.channels_last)
            target = (batch["labels"] if spec.role == "cls" else batch["masks"]).to(ctx.device, non_blocking=True)
            with autocast:
                loss = loss_fn(model(x), target)
            (scaler.scale(loss / cfg.accumulate) if scaler else loss / cfg.accumulate).backward()
            if (step + 1) % cfg.accumulate == 0 or step + 1 == len(loader):
                _optimizer_step(net, opt, scaler, cfg.clip_grad)
                if ema is not None:
                    ema.update_parameters(net)
                if sched is not None and cfg.scheduler in STEP_SCHEDULERS:
                    sched.step()
            loss_sum += float(loss.detach()) * len(x)
            seen += len(x)
            advance(1)
    loss_sum, seen = all_sum(np.array([loss_sum, seen], dtype=np.float64), ctx)
    return loss_sum / max(seen, 1), int(seen)


def _optimizer_step(net, opt, scaler, clip_grad: float) -> None:
    if clip_grad > 0:
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)


def _step_epoch_scheduler(sched, name: str, monitored: float) -> None:
    if sched is None or name in STEP_SCHEDULERS:
        return
    sched.step(monitored) if name == "plateau" else sched.step()


def _live(folder: Path, resume: bool):
    from dvclive import Live

    return Live(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def _monitored(metrics: dict, role: str) -> float:
    """The role's monitored metric; Dice over all rows when a fold has no positive row for dice_pos."""
    value = metrics[MONITOR[role]]
    return metrics["dice"] if value is None else value


def _log(live, spec, fold, epoch, train_loss, seen, metrics, lrs, state, seconds) -> None:
    live.step = epoch
    live.log_metric("train/loss", train_loss)
    live.log_metric("train/samples", seen)
    for key, value in metrics.items():
        if key != "sums" and value is not None:
            live.log_metric(f"val/{key}", value)
    for name, lr in lrs.items():
        live.log_metric(f"lr/{name}", lr)
    live.make_summary()
    monitor = MONITOR[spec.role]
    info(
        f"{spec.name} fold {fold} epoch {epoch + 1}/{spec.train.epochs}: train_loss {train_loss:.4f} "
        f"val_loss {metrics['loss']:.4f} {monitor} {_monitored(metrics, spec.role):.4f} (best {state.best_value:.4f} "
        f"@{state.best_epoch + 1}) lr {max(lrs.values()):.2e} {seconds:.1f}s"
    )
