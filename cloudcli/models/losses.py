"""Losses on logits. Segmentation: (B, C, H, W) logits and 0/1 targets; classifier: (B, C).

A loss spec maps names to weights, {bce: 0.5, dice: 0.5}: the weighted sum is minimised. The term
`class_head` gives a segmentation network a class-presence head (smp's aux_params, the 1st place's
"Model A"): the network then returns (masks, class logits), and the term is BCE of the class
logits against each class's presence in the target masks; the other terms see the masks.
"""

from __future__ import annotations

from collections.abc import Callable

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from cloudcli.config import CLASS_HEAD


def soft_dice_pairs(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice of every (image, class) pair: (B, C) in 0..1."""
    probs = torch.sigmoid(logits.float()).flatten(2)
    target = target.float().flatten(2)
    inter = (probs * target).sum(-1)
    return (2 * inter + smooth) / (probs.sum(-1) + target.sum(-1) + smooth)


class PositiveDiceLoss(nn.Module):
    """1 - soft Dice over the (image, class) pairs whose truth is non-empty; 0 when there is none."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positive = target.flatten(2).amax(-1) > 0  # (B, C)
        if not positive.any():
            return logits.sum() * 0.0  # keeps the graph, contributes nothing
        return 1 - soft_dice_pairs(logits, target)[positive].mean()


class SoftKLLoss(nn.Module):
    """Mean KL divergence from the target's Bernoulli distribution to the prediction's, per pixel:
    BCE minus the target's entropy, so 0 when the probabilities match; made for soft labels."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.float().clamp(0, 1)
        bce = F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
        entropy = -(torch.special.xlogy(t, t) + torch.special.xlogy(1 - t, 1 - t))
        return (bce - entropy).mean()


class BalancedBCELoss(nn.Module):
    """BCE with positive and negative labels weighted equally: 0.5 mean over each group."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        pos, neg = target > 0.5, target <= 0.5
        terms = [per[group].mean() for group in (pos, neg) if group.any()]
        return sum(terms) / len(terms)


class LovaszHingeLoss(nn.Module):
    """Lovasz hinge (Berman et al. 2018) of every (image, class) map on its own, averaged over the
    maps: the Lovasz extension of each map's Jaccard loss. One batched sort, no loop over maps."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, labels = logits.float().flatten(2), target.float().flatten(2)  # (B, C, P)
        errors = 1 - logits * (2 * labels - 1)
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

    def forward(self, class_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        presence = target.float().flatten(2).amax(-1).clamp(0, 1)
        return F.binary_cross_entropy_with_logits(class_logits.float(), presence)


def split_outputs(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(masks, class logits or None) of a network's output: a tensor, or (masks, class logits) from
    a network with a class head."""
    return (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)


SEG_LOSSES: dict[str, Callable[[], nn.Module]] = {
    "bce": nn.BCEWithLogitsLoss,
    "kl": SoftKLLoss,
    "dice": lambda: smp.losses.DiceLoss("multilabel", from_logits=True),
    "dice_pos": PositiveDiceLoss,
    "focal": lambda: smp.losses.FocalLoss("multilabel"),
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

    def forward(self, out: torch.Tensor | tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        logits, class_logits = split_outputs(out)
        if (class_logits is None) == (CLASS_HEAD in self.terms):
            raise ValueError("the loss's class_head term needs a network with a class head, and only such a one")
        values = {
            name: term((class_logits if name == CLASS_HEAD else logits).float(), target.float())
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
