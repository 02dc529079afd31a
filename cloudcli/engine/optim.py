"""Optimisers with separate encoder/decoder learning rates, and schedulers, from TrainConfig."""

from __future__ import annotations

import math

import torch
from torch import nn

from cloudcli.config import TrainConfig

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam, "sgd": torch.optim.SGD}
STEP_SCHEDULERS = {"onecycle"}  # stepped after every optimiser step; the others once per epoch


def build_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    encoder = {id(p) for p in net.encoder.parameters()}
    trainable = [p for p in net.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in encoder], "lr": cfg.lr * cfg.encoder_lr_mult, "name": "encoder"},
        {"params": [p for p in trainable if id(p) not in encoder], "lr": cfg.lr, "name": "decoder"},
    ]
    groups = [g for g in groups if g["params"]]
    extra = {"momentum": cfg.momentum, "nesterov": True} if cfg.optimizer == "sgd" else {}
    return OPTIMIZERS[cfg.optimizer](groups, weight_decay=cfg.weight_decay, **extra)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, mode: str):
    """None, or a torch scheduler; `mode` ('max' or 'min') is the monitored metric's direction."""
    if cfg.scheduler == "none":
        return None
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.scheduler == "cosine_restarts":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_epochs)
    max_lr = [g["lr"] for g in opt.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, epochs=cfg.epochs, steps_per_epoch=max(1, math.ceil(steps_per_epoch))
    )
