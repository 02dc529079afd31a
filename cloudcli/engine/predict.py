"""Prediction with fold models and test-time augmentation (TTA)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cloudcli.config import NetworkConfig
from cloudcli.engine import checkpoint
from cloudcli.errors import DataError
from cloudcli.models.factory import build_network

Flip = Callable[[torch.Tensor], torch.Tensor]
TTA: dict[str, tuple[Flip, Flip]] = {  # name -> (transform of the input, inverse for masks)
    "none": (lambda x: x, lambda y: y),
    "hflip": (lambda x: x.flip(-1), lambda y: y.flip(-1)),
    "vflip": (lambda x: x.flip(-2), lambda y: y.flip(-2)),
    "hvflip": (lambda x: x.flip(-2, -1), lambda y: y.flip(-2, -1)),
    "transpose": (lambda x: x.transpose(-2, -1), lambda y: y.transpose(-2, -1)),  # square inputs only
}


def load_fold_net(folder: Path, device: torch.device) -> tuple[nn.Module, dict]:
    """The best.pt weights of a trained fold and the settings they were trained with; in the memory
    format it trained in (train.channels_last; channels_last for checkpoints that do not say)."""
    path = folder / "best.pt"
    if not path.exists():
        raise DataError(f"{path}: missing; train it first (dvc repro train)")
    ckpt = checkpoint.load(path)
    settings = checkpoint.settings_of(ckpt, path)
    return trained_net(settings, ckpt["model"], device), settings


def trained_net(settings: dict, weights: dict, device: torch.device) -> nn.Module:
    """The network `settings` describe (a checkpoint's), with `weights`, for inference on `device`:
    built without pretrained weights (no download), in the memory format it trained in."""
    cfg = dataclasses.replace(NetworkConfig(**settings["network"]), encoder_weights=None)
    net = build_network(settings["role"], cfg, settings.get("in_channels", 3), len(settings["classes"]))
    net.load_state_dict(weights)
    return net.to(device, memory_format=memory_format(settings)).eval()


def memory_format(settings: dict) -> torch.memory_format:
    """The memory format a trained model's inputs take: the one it trained with."""
    channels_last = settings.get("train_config", {}).get("channels_last", True)
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.no_grad()
def predict(
    nets: list[nn.Module],
    x: torch.Tensor,
    tta: tuple[str, ...],
    role: str,
    out_size: tuple[int, int] | None,
    dtype: torch.dtype | None = None,
    stacked: bool = False,
) -> torch.Tensor:
    """Mean sigmoid probabilities over models and TTA: (B, 4, *out_size) masks, or (B, 4) for a classifier.

    `dtype`: autocast (CUDA) to bf16 or fp16. `stacked`: all views in one forward of len(tta) * B.
    """
    total = None
    autocast = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else nullcontext()
    for net in nets:
        if stacked:
            with autocast:
                out = net(torch.cat([TTA[name][0](x) for name in tta])).float()
            views = zip(tta, out.chunk(len(tta)))
        else:
            views = ((name, _forward(net, TTA[name][0](x), autocast)) for name in tta)
        for name, logits in views:
            probs = torch.sigmoid(logits)
            probs = probs if role == "classifier" else TTA[name][1](probs)
            total = probs if total is None else total + probs
    mean = total / (len(nets) * len(tta))
    if role != "classifier":
        mean = F.interpolate(mean, size=out_size, mode="bilinear", align_corners=False)
    return mean


@torch.no_grad()
def predict_folds(
    nets: list[nn.Module],
    x: torch.Tensor,
    tta: tuple[str, ...],
    role: str,
    out_size: tuple[int, int] | None,
    dtype: torch.dtype | None = None,
    stacked: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(mean, each): every fold model's probabilities on its own (`predict` with one net), and their
    mean. infer's test maps and a bundle's predictions are both this mean, bit for bit."""
    each = [predict([net], x, tta, role, out_size, dtype, stacked) for net in nets]
    return mean_of(each), each


def mean_of(each: list[torch.Tensor]) -> torch.Tensor:
    """The mean of the fold models' probabilities, summed in fold order and divided on the host:
    the same bits whether the folds ran together or one after the other (infer.fold_models), on
    any device (CUDA divides by a scalar as a multiplication by its inverse)."""
    total = each[0].detach().to("cpu", copy=True)
    for probs in each[1:]:
        total += probs.to("cpu")
    return total / len(each)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of infer.precision on `device`: bf16 or fp16 on CUDA; None (fp32) elsewhere."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if device.type == "cuda" else None


def _forward(net: nn.Module, x: torch.Tensor, autocast) -> torch.Tensor:
    with autocast:
        return net(x).float()


def to_uint8(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities 0..1 -> uint8 levels round(p * 255)."""
    return (probs * 255).round_().clamp_(0, 255).to(torch.uint8)
