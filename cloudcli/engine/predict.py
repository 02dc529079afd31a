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
from cloudcli.models.factory import Classifier, build_network, has_class_head

STRIDE = 32  # the encoders' output stride: a network's input sides are multiples of it
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
    head = has_class_head(settings.get("loss"))
    net = build_network(settings["role"], cfg, settings.get("in_channels", 3), len(settings["classes"]), head)
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
    scales: tuple[float, ...] = (1.0,),
) -> torch.Tensor:
    """Mean sigmoid probabilities over models, TTA views and scales: (B, C, *out_size) masks, or
    (B, C) for a classifier (a segmentation network's class head, when it has one).

    `dtype`: autocast (CUDA) to bf16 or fp16. `stacked`: all views of a scale in one forward of
    len(tta) * B. `scales`: input sizes, x's times each (padded to multiples of 32, the padding
    cropped from the masks), whose masks are resized back to x's size before the mean.
    """
    masks, classes = predict_parts(nets, x, tta, out_size, dtype, stacked, scales)
    if role == "classifier":
        if classes is None:
            raise DataError(f"a {role} needs class probabilities, and this network has no class head")
        return classes
    return masks


@torch.no_grad()
def predict_parts(
    nets: list[nn.Module],
    x: torch.Tensor,
    tta: tuple[str, ...],
    out_size: tuple[int, int] | None,
    dtype: torch.dtype | None = None,
    stacked: bool = False,
    scales: tuple[float, ...] = (1.0,),
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(masks, classes): the mean sigmoid probabilities of the networks' masks (B, C, *out_size),
    at x's size without out_size (a class head asked for its classes), None for a classifier, and
    of their class scores (B, C): a classifier's, a class head's, None without either; each summed
    over nets, scales and views in that order, then divided."""
    masks = classes = None
    autocast = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else nullcontext()
    for net in nets:
        for scale in scales:
            for name, out in _views(net, x, tta, stacked, autocast, scale):
                logits, class_logits = _parts(out)
                if logits is not None:
                    probs = TTA[name][1](_resized(torch.sigmoid(logits), x.shape[-2:]))
                    masks = probs if masks is None else masks + probs
                if class_logits is not None:
                    probs = torch.sigmoid(class_logits)
                    classes = probs if classes is None else classes + probs
    n = len(nets) * len(tta) * len(scales)
    if masks is not None:
        masks = masks / n
        if out_size is not None:
            masks = F.interpolate(masks, size=out_size, mode="bilinear", align_corners=False)
    return masks, None if classes is None else classes / n


def _views(net: nn.Module, x: torch.Tensor, tta: tuple[str, ...], stacked: bool, autocast, scale: float = 1.0):
    """(view name, raw output) of `net` on every TTA view of `x` at `scale` (_scaled_input), masks
    cropped back to the scaled size; one forward for all views when `stacked`. A classifier's input
    is not padded: it pools whatever size it gets, and padding would weigh the edges more."""
    size, pad = scaled_size(x.shape[-2:], scale), not isinstance(net, Classifier)
    if not stacked:
        for name in tta:
            yield name, _cropped(_forward(net, _scaled_input(TTA[name][0](x), size, pad), autocast), size)
        return
    out = _forward(net, torch.cat([_scaled_input(TTA[name][0](x), size, pad) for name in tta]), autocast)
    out = _cropped(out, size)
    parts = [o.chunk(len(tta)) for o in out] if isinstance(out, tuple) else [out.chunk(len(tta))]
    for j, name in enumerate(tta):
        yield name, tuple(p[j] for p in parts) if isinstance(out, tuple) else parts[0][j]


def _parts(out) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mask logits, class logits) of a network's output: (B, C, H, W) masks, (B, C) classifier
    logits, or both from a segmentation network with a class head."""
    if isinstance(out, tuple):
        return out
    return (None, out) if out.ndim == 2 else (out, None)


def scaled_size(size: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(H, W) of an input `scale` times `size`, each side rounded to a pixel (at least 1)."""
    return tuple(max(1, round(s * scale)) for s in size[-2:])


def _scaled_input(x: torch.Tensor, size: tuple[int, int], pad: bool = True) -> torch.Tensor:
    """`x` resized to `size` (bilinear), then (`pad`) padded at the bottom and right, edge pixels
    repeated, to multiples of STRIDE, as the segmentation decoders need; unchanged at its own size
    of such multiples."""
    x = _resized(x, size)
    if not pad:
        return x
    pad_h, pad_w = -size[0] % STRIDE, -size[1] % STRIDE
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def _cropped(out, size: tuple[int, int]):
    """A network's output with its masks cut back to `size` (the padding of _scaled_input dropped)."""
    if isinstance(out, tuple):
        return (_cropped(out[0], size), out[1])
    return out[..., : size[0], : size[1]] if out.ndim == 4 else out


def _resized(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_folds(
    nets: list[nn.Module],
    x: torch.Tensor,
    tta: tuple[str, ...],
    role: str,
    out_size: tuple[int, int] | None,
    dtype: torch.dtype | None = None,
    stacked: bool = False,
    scales: tuple[float, ...] = (1.0,),
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(mean, each): every fold model's probabilities on its own (`predict` with one net), and their
    mean. infer's test maps and a bundle's predictions are both this mean, bit for bit."""
    each = [predict([net], x, tta, role, out_size, dtype, stacked, scales) for net in nets]
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


def _forward(net: nn.Module, x: torch.Tensor, autocast):
    with autocast:
        out = net(x)
    return tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()


def to_uint8(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities 0..1 -> uint8 levels round(p * 255)."""
    return (probs * 255).round_().clamp_(0, 255).to(torch.uint8)
