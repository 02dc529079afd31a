"""Build any smp segmentation network or an encoder-based classifier from a NetworkConfig."""

from __future__ import annotations

import difflib

import segmentation_models_pytorch as smp
import torch
from torch import nn

from cloudcli.config import CLASS_HEAD, NetworkConfig
from cloudcli.errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEAD_DROPOUT = 0.2  # dropout before the linear layer of a class-presence head, as the Classifier's


def has_class_head(loss: dict) -> bool:
    """Whether a model's loss spec (a ResolvedModel's, or the `loss` a checkpoint's settings record)
    trains a class-presence head on its segmentation network."""
    return CLASS_HEAD in (loss or {})


class Classifier(nn.Module):
    """Multi-label classifier: an smp/timm encoder, global average pooling, a linear head."""

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(encoder.out_channels[-1], n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])  # (B, n_classes) logits


def build_network(
    role: str, cfg: NetworkConfig, in_channels: int, n_classes: int, class_head: bool = False
) -> nn.Module:
    """seg1/seg2: smp `cfg.arch` with `cfg.encoder`, one output channel per class; with `class_head`,
    also smp's classification head on the encoder's last features (forward then returns (masks,
    class logits)); classifier: Classifier. With pretrained weights and in_channels != 3, smp
    adapts the first convolution."""
    _check_names(role, cfg)
    try:
        if role == "classifier":
            encoder = smp.encoders.get_encoder(
                cfg.encoder, in_channels=in_channels, depth=5, weights=cfg.encoder_weights
            )
            return Classifier(encoder, n_classes)
        head = {"aux_params": {"classes": n_classes, "dropout": HEAD_DROPOUT}} if class_head else {}
        return smp.create_model(
            cfg.arch, encoder_name=cfg.encoder, encoder_weights=cfg.encoder_weights, in_channels=in_channels,
            classes=n_classes, **head,
        )  # fmt: skip
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        if cfg.encoder_weights is None:
            raise
        raise ConfigError(
            f"network.encoder_weights: could not load {cfg.encoder_weights!r} weights for encoder {cfg.encoder!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). They are downloaded from the Hugging Face hub "
            "on first use: run once with network access (they are then cached in ~/.cache/huggingface), "
            "or set network.encoder_weights: null to train from scratch offline"
        ) from None


def _check_names(role: str, cfg: NetworkConfig) -> None:
    archs = sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())
    if role != "classifier" and cfg.arch.lower() not in {a.lower() for a in archs}:
        raise ConfigError(f"network.arch: unknown architecture {cfg.arch!r}; choose from {', '.join(archs)}")
    if cfg.encoder.startswith("tu-"):
        import timm

        if not timm.list_models(cfg.encoder[3:]):
            raise ConfigError(f"network.encoder: timm has no model {cfg.encoder[3:]!r}; see timm.list_models()")
        return
    names = smp.encoders.get_encoder_names()
    if cfg.encoder not in names:
        close = difflib.get_close_matches(cfg.encoder, names, n=3)
        raise ConfigError(
            f"network.encoder: unknown encoder {cfg.encoder!r}; did you mean {', '.join(close) or '?'}? "
            "(any smp encoder, or a timm model as 'tu-<name>')"
        )


def normalization(cfg: NetworkConfig, band_stats: tuple | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in 0..1. RGB: the encoder's pretrained weights', ImageNet's otherwise; other band
    counts: the cache's own per-band statistics (`band_stats`)."""
    if band_stats is not None and len(band_stats[0]) != 3:
        return tuple(band_stats[0]), tuple(band_stats[1])
    if cfg.encoder_weights is None:
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        p = smp.encoders.get_preprocessing_params(cfg.encoder, cfg.encoder_weights)
    except Exception:
        return IMAGENET_MEAN, IMAGENET_STD
    scale = 255.0 if p["input_range"][1] > 1 else 1.0
    return tuple(m / scale for m in p["mean"]), tuple(s / scale for s in p["std"])


def encoder_stages(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """The encoder's parameterised top-level modules in order (descending through single wrappers):
    resnet: conv1, bn1, layer1..layer4; densenet: conv0, norm0, denseblock1, ..."""
    module, prefix = encoder, ""
    while True:
        children = [(n, m) for n, m in module.named_children() if any(True for _ in m.parameters())]
        if len(children) != 1:
            return [(prefix + n, m) for n, m in children]
        name, module = children[0]
        prefix += name + "."


def freeze_encoder_stages(net: nn.Module, n: int) -> list[str]:
    """Stop gradients in the first `n` encoder stages; returns their names."""
    stages = encoder_stages(net.encoder)[:n]
    for _, module in stages:
        module.requires_grad_(False)
    return [name for name, _ in stages]
