"""Checkpoints written atomically; every one loads with torch.load(weights_only=True)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cloudcli.ui import info


@dataclass
class State:
    """What survives an epoch: the resume point and the best epoch so far."""

    epoch: int = -1  # last completed epoch
    best_value: float = -float("inf")
    best_epoch: int = -1
    best_metrics: dict = field(default_factory=dict)


def save(obj: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_training(out, epoch, improved, net, ema, opt, sched, scaler, state, config_hash, settings) -> None:
    """last.pt: everything to resume after `epoch`; best.pt too when this epoch improved."""
    weights = (ema.module if ema else net).state_dict()
    if improved:
        save(
            {
                "model": weights,
                "epoch": epoch + 1,
                "monitor": settings["monitor"],
                "value": state.best_value,
                "settings": json.dumps(settings),
            },
            out / "best.pt",
        )
    save(
        {
            "epoch": epoch,
            "model": net.state_dict(),
            "ema": ema.state_dict() if ema else None,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched else None,
            "scaler": scaler.state_dict() if scaler else None,
            "rng": torch.get_rng_state(),
            "best": json.dumps(asdict(state)),
            "config_sha1": config_hash,
        },
        out / "last.pt",
    )


def resume(path, config_hash, net, opt, sched, scaler, ema) -> State:
    """Restore a training state in place from last.pt; a fresh State if made with other settings."""
    ckpt = load(path)
    if ckpt.get("config_sha1") != config_hash:
        info(f"{path}: made with other settings, starting afresh")
        return State()
    net.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    for obj, key in ((sched, "scheduler"), (scaler, "scaler"), (ema, "ema")):
        if obj is not None and ckpt[key] is not None:
            obj.load_state_dict(ckpt[key])
    torch.set_rng_state(ckpt["rng"])
    state = State(**json.loads(ckpt["best"]))
    info(f"{path}: resuming after epoch {state.epoch + 1}")
    return state
