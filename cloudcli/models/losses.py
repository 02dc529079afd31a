"""Losses on logits. Segmentation: (B, C, H, W) logits and 0/1 targets; classifier: (B, C).

A loss spec maps names to weights, {bce: 0.5, dice: 0.5}: the weighted sum is minimised. The term
`class_head` gives a segmentation network a class-presence head (smp's aux_params, the 1st place's
"Model A"): the network then returns (masks, class logits), and the term is BCE of the class
logits against each class's presence in the target masks; the other terms see the masks.

Every segmentation loss takes an optional `valid` (B, 1, H, W), 1 where a pixel has data and 0
where not (data.nodata): the loss is then that of the pixels with data alone, as if the others
were not there (per-pixel means over them; Dice and Lovasz with both prediction and target
dropped there). Without it each loss is exactly the library's or the plain formula.
"""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from cloudcli.config import CLASS_HEAD


def soft_dice_pairs(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Dice of every (image, class) pair: (B, C) in 0..1 (of the pixels with data, given `valid`)."""
    probs = torch.sigmoid(logits.float())
    target = target.float()
    if valid is not None:
        probs, target = probs * valid, target * valid
    probs, target = probs.flatten(2), target.flatten(2)
    inter = (probs * target).sum(-1)
    return (2 * inter + smooth) / (probs.sum(-1) + target.sum(-1) + smooth)


def masked_mean(per_pixel: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, C, H, W) per-pixel terms over the pixels with data (all of them without `valid`)."""
    if valid is None:
        return per_pixel.mean()
    valid = valid.to(per_pixel.dtype)
    return (per_pixel * valid).sum() / (valid.sum() * per_pixel.shape[1]).clamp_min(1)


class BCELoss(nn.Module):
    """Mean binary cross-entropy per pixel (torch's BCEWithLogitsLoss)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            return F.binary_cross_entropy_with_logits(logits, target)
        return masked_mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), valid)


class DiceLoss(nn.Module):
    """1 - soft Dice per class over the whole batch, averaged over the classes with a true pixel
    (segmentation_models_pytorch's multilabel DiceLoss); without data, neither prediction nor target."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = smp.losses.DiceLoss("multilabel", from_logits=True)
        self.masked = smp.losses.DiceLoss("multilabel", from_logits=True, ignore_index=-1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            return self.plain(logits, target)
        return self.masked(logits, torch.where(valid > 0, target, -1.0))  # -1: the ignored pixels


class FocalLoss(nn.Module):
    """Focal loss (gamma 2) per pixel, averaged (segmentation_models_pytorch's multilabel FocalLoss)."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = smp.losses.FocalLoss("multilabel")

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            return self.plain(logits, target)
        logpt = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return masked_mean((1.0 - torch.exp(-logpt)).pow(2) * logpt, valid)


class PositiveDiceLoss(nn.Module):
    """1 - soft Dice over the (image, class) pairs whose truth is non-empty; 0 when there is none."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        positive = (target if valid is None else target * valid).flatten(2).amax(-1) > 0  # (B, C)
        if not positive.any():
            return logits.sum() * 0.0  # keeps the graph, contributes nothing
        return 1 - soft_dice_pairs(logits, target, valid=valid)[positive].mean()


class SoftKLLoss(nn.Module):
    """Mean KL divergence from the target's Bernoulli distribution to the prediction's, per pixel:
    BCE minus the target's entropy, so 0 when the probabilities match; made for soft labels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        t = target.float().clamp(0, 1)
        bce = F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
        entropy = -(torch.special.xlogy(t, t) + torch.special.xlogy(1 - t, 1 - t))
        return masked_mean(bce - entropy, valid)


class BalancedBCELoss(nn.Module):
    """BCE with positive and negative labels weighted equally: 0.5 mean over each group."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        pos, neg = target > 0.5, target <= 0.5
        terms = [per[group].mean() for group in (pos, neg) if group.any()]
        return sum(terms) / len(terms)


class LovaszHingeLoss(nn.Module):
    """Lovasz hinge (Berman et al. 2018) of every (image, class) map on its own, averaged over the
    maps: the Lovasz extension of each map's Jaccard loss. One batched sort, no loop over maps.
    Pixels without data sort last with no error and no label: they change no term."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        logits, labels = logits.float(), target.float()
        errors = 1 - logits * (2 * labels - 1)
        if valid is not None:
            labels = labels * valid
            errors = torch.where(valid > 0, errors, float("-inf"))
        errors, labels = errors.flatten(2), labels.flatten(2)  # (B, C, P)
        errors_sorted, order = errors.sort(-1, descending=True)
        gt_sorted = labels.gather(-1, order)
        positives = gt_sorted.sum(-1, keepdim=True)  # (B, C, 1)
        # union >= 1 at every rank: either the map has positives or a negative has been counted
        jaccard = 1 - (positives - gt_sorted.cumsum(-1)) / (positives + (1 - gt_sorted).cumsum(-1))
        grad = torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], -1)
        return (F.relu(errors_sorted) * grad).sum(-1).mean()


class ClassHeadLoss(nn.Module):
    """BCE of a class-presence head's (B, C) logits against the presence of each class in the
    (B, C, H, W) target: its maximum (1 where any pixel is labelled; a soft target's peak)."""

    def forward(
        self, class_logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`valid` (B, 1, H, W): labels under pixels without data do not make a class present."""
        target = target.float() if valid is None else target.float() * valid
        presence = target.flatten(2).amax(-1).clamp(0, 1)
        return F.binary_cross_entropy_with_logits(class_logits.float(), presence)


Output = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # masks, or (masks, class logits) with a class head


def split_outputs(out: Output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(masks, class logits or None) of a network's output: a tensor, or (masks, class logits) from
    a network with a class head."""
    return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)


SEG_LOSSES: dict[str, Callable[[], nn.Module]] = {
    "bce": BCELoss,
    "kl": SoftKLLoss,
    "dice": DiceLoss,
    "dice_pos": PositiveDiceLoss,
    "focal": FocalLoss,
    "lovasz": LovaszHingeLoss,
    CLASS_HEAD: ClassHeadLoss,
}
CLASSIFIER_LOSSES: dict[str, Callable[[], nn.Module]] = {"bce": nn.BCEWithLogitsLoss, "bce_balanced": BalancedBCELoss}


class WeightedSum(nn.Module):
    """sum(weight * loss) over the spec. `last` holds each term of the last call as a detached
    tensor on the loss's device (no host sync per step); `last_values()` reads them as floats."""

    def __init__(self, spec: dict[str, float], registry: dict[str, Callable[[], nn.Module]]) -> None:
        super().__init__()
        self.weights = dict(spec)
        self.terms = nn.ModuleDict({name: registry[name]() for name in spec})
        self.last: dict[str, torch.Tensor] = {}

    def forward(
        self,
        out: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted sum; `out` a network's output (masks, or masks and class logits from a class
        head); `valid` (B, 1, H, W) (segmentation only): pixels where it is 0 count nowhere."""
        logits, class_logits = split_outputs(out)
        if (class_logits is None) == (CLASS_HEAD in self.terms):
            raise ValueError("the loss's class_head term needs a network with a class head, and only such a one")
        extra = () if valid is None else (valid.float(),)
        values = {
            name: term((class_logits if name == CLASS_HEAD else logits).float(), target.float(), *extra)
            for name, term in self.terms.items()
        }
        self.last = {name: v.detach() for name, v in values.items()}
        return sum(self.weights[name] * v for name, v in values.items())

    def last_values(self) -> dict[str, float]:
        """Each term of the last call as a float: one device-to-host copy, call it off the hot loop."""
        if not self.last:
            return {}
        values = torch.stack(list(self.last.values())).tolist()
        return dict(zip(self.last, values, strict=True))


def build_loss(role: str, spec: dict[str, float]) -> WeightedSum:
    """The weighted loss of a model role ('classifier' or a segmentation role)."""
    return WeightedSum(spec, CLASSIFIER_LOSSES if role == "classifier" else SEG_LOSSES)
