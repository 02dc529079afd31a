"""Train one model on one fold: seed, load the fold, build the network, run the loop, write the results.

Writes `out` once every epoch has run, replacing an earlier run's folder in one step: config.json
(resolved config, versions), best.pt (weights of the best epoch by the role's monitored metric) and
summary.json. Until then the training state lives in its resume folder (checkpoint.resume_dir: last.pt
after every epoch, best.pt so far; last.pt holds the curves too), outside the stage's outputs: a run
with the same settings resumes after its last completed epoch; the folder is removed when the run ends.

The parts: loaders.py (the fold's data), loop.py (the epochs and optimiser steps), live.py
(DVCLive curves and the per-epoch log line), checkpoint.py (last.pt, best.pt, resume).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cloudcli.config import AugmentConfig, ResolvedModel
from cloudcli.data.cache import Cache, open_cache
from cloudcli.data.pseudo import PseudoSet
from cloudcli.engine.checkpoint import State, drop_other_states, resume, resume_dir, resume_root
from cloudcli.engine.distributed import Context
from cloudcli.engine.live import open_live, restore_curves
from cloudcli.engine.loaders import build_loaders, pseudo_set, split_indices
from cloudcli.engine.loop import Trainer, build_trainer, run_epochs
from cloudcli.engine.validate import MONITOR
from cloudcli.io import atomic_path, private_dir, write_json
from cloudcli.models.factory import build_network, freeze_encoder_stages, has_class_head, normalization
from cloudcli.models.losses import build_loss
from cloudcli.ui import info
from cloudcli.versions import versions


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
    states: Path | None = None,
) -> dict:
    """Train `spec` on every fold but `fold` (plus any pseudo-labelled test images in `pseudo_dir`),
    validating on `fold`; the summary of its best epoch, also written to out/summary.json. The
    resume state goes under `states` (default checkpoint.resume_root())."""
    cfg = spec.train
    torch.manual_seed(cfg.seed)
    if ctx.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    loss_fn = build_loss(spec.role, spec.loss)
    cache = open_cache(cache_dir)  # meta and tables only: bands and classes size the network
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), folds_csv, fold)  # before any download
    net = build_network(spec.role, spec.network, cache.channels, len(cache.classes), has_class_head(spec.loss))
    frozen = freeze_encoder_stages(net, spec.network.freeze_encoder_stages)
    pseudo = None if pseudo_dir is None else pseudo_set(pseudo_dir, cache, fold)
    loaders = build_loaders(spec, augment, cache, train_idx, valid_idx, ctx, pseudo)
    settings = _settings(spec, augment, fold, cache, train_idx, valid_idx, frozen, pseudo)
    _describe(spec, fold, len(train_idx), len(valid_idx), pseudo, loaders[0], ctx, frozen)
    trainer = build_trainer(net, loss_fn, cfg, ctx, len(loaders[0]), frozen)
    config_hash = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    run_name = (f"{pseudo_dir.name}-" if pseudo_dir is not None else "") + f"{spec.name}-fold{fold}"
    work = resume_dir(states or resume_root(), run_name, config_hash)
    state = _start(work, restart, config_hash, trainer, live_dir, ctx.main)
    live = open_live(live_dir, resume=state.epoch >= 0) if ctx.main else None
    state, swa = run_epochs(trainer, spec, loaders, cache, state, ctx, work, live, config_hash, settings)
    if live is not None:
        live.end()
    summary = _summary(spec, settings, state, swa)
    if ctx.main:
        run = {"processes": ctx.world, "device": ctx.device.type}  # how it ran; not part of the resume check
        with atomic_path(out, is_dir=True) as tmp:  # the three files replace an earlier run's at once
            write_json(tmp / "config.json", settings | run | {"versions": versions(), "config_sha1": config_hash})
            shutil.copyfile(work / "best.pt", tmp / "best.pt")
            write_json(tmp / "summary.json", summary)
        drop_state(work)
    return summary


def drop_state(work: Path) -> None:
    """The resume folder of a run that ended, and its run's folder once empty."""
    shutil.rmtree(work)
    if not any(work.parent.iterdir()):
        work.parent.rmdir()


def _describe(spec, fold, n_train, n_valid, pseudo: PseudoSet | None, train_loader: DataLoader, ctx, frozen) -> None:
    info(
        f"{spec.name} fold {fold}: {n_train} train"
        + (f" + {len(pseudo.images)} pseudo-labelled" if pseudo is not None else "")
        + f" / {n_valid} valid images, "
        f"{len(train_loader)} steps/epoch on {ctx.device}"
        + (f" x {ctx.world} processes" if ctx.world > 1 else "")
        + (f", frozen encoder stages: {', '.join(frozen)}" if frozen else "")
    )


def _settings(
    spec: ResolvedModel,
    augment: AugmentConfig,
    fold: int,
    cache: Cache,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    frozen: list[str],
    pseudo: PseudoSet | None = None,
) -> dict:
    """Everything that shapes the run: a last.pt made with other settings is not resumed."""
    mean, std = normalization(spec.network, cache.band_stats)
    return (
        {
            "model": spec.name,
            "role": spec.role,
            "fold": fold,
            "loss": spec.loss,
            "network": asdict(spec.network),
            "train_config": asdict(spec.train),
            "augment": asdict(augment),
            "input_size": list(spec.train.input_size or cache.cache_size),
            "normalization": {"mean": list(mean), "std": list(std)},
            "in_channels": cache.channels,
            "classes": list(cache.classes),
            "monitor": MONITOR[spec.role],
            "n_train": len(train_idx),
            "n_valid": len(valid_idx),
            "frozen_encoder_stages": frozen,
            "valid_ids_sha1": hashlib.sha1(" ".join(cache.train["image_id"].iloc[valid_idx]).encode()).hexdigest(),
        }
        | ({"nodata": True} if cache.has_valid else {})
        | (
            {}
            if pseudo is None
            else {"pseudo": {"folder": str(pseudo.folder), "images": len(pseudo.images), "sha1": pseudo.sha1}}
        )
    )


def _start(work: Path, restart: bool, config_hash: str, t: Trainer, live_dir: Path, main: bool) -> State:
    """A fresh state, or the one in `work` restored into `t` (and its curves into `live_dir`).
    Starting afresh, the main process removes the states of this run made with other settings."""
    state = State()
    if restart and main:
        shutil.rmtree(work, ignore_errors=True)
    elif not restart and (work / "last.pt").exists():
        state, curves = resume(work / "last.pt", config_hash, t.net, t.opt, t.sched, t.scaler, t.ema, t.swa)
        if main and state.epoch >= 0:
            restore_curves(curves, live_dir)
    if main:
        if state.epoch < 0 and drop_other_states(work):
            info(f"{work.parent}: the saved state was made with other settings, starting afresh")
        private_dir(work)
        info(f"resume state: {work}")
    return state


def _summary(spec: ResolvedModel, settings: dict, state: State, swa: dict | None) -> dict:
    """What best.pt scores: its epoch's or, with train.swa, the average's `best` value and `metrics`
    (then `best_epoch` stays the best single epoch, `swa` says which epochs were averaged)."""
    swa_part = {} if swa is None else {"swa": {k: swa[k] for k in ("mode", "epochs", "value")}}
    return {
        "model": spec.name,
        "role": spec.role,
        "fold": settings["fold"],
        "monitor": MONITOR[spec.role],
        "best": state.best_value if swa is None else swa["value"],
        "best_epoch": state.best_epoch + 1,
        "epochs": spec.train.epochs,
        "n_valid": settings["n_valid"],
        "metrics": state.best_metrics if swa is None else swa["metrics"],
    } | swa_part
