"""Validation on the held-out fold: competition Dice at the scoring size, or classifier AUC.

Only running sums are kept (no predictions across batches for segmentation), reduced over
processes, so the metric is exact for any number of processes.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cloudcli.data.cache import unpack_masks
from cloudcli.engine.distributed import Context, all_gather, all_sum
from cloudcli.metrics import DiceSums, dice_from_counts, sums_report

MONITOR = {"seg1": "dice", "seg2": "dice_pos", "classifier": "auc"}  # all maximised


def monitored(metrics: dict, role: str) -> float:
    """The role's monitored metric; Dice over all rows when a fold has no positive row for dice_pos."""
    value = metrics[MONITOR[role]]
    return metrics["dice"] if value is None else value


def seg_row_dice(logits: torch.Tensor, truth: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(B, C) Dice of sigmoid(logits) > threshold, resized to truth's (H, W), against truth (B, C, H, W)."""
    probs = F.interpolate(torch.sigmoid(logits.float()), size=truth.shape[-2:], mode="bilinear", align_corners=False)
    pred = probs > threshold
    t = torch.from_numpy(truth).to(pred.device).bool()
    inter, p_area, t_area = ((pred & t).sum((2, 3)), pred.sum((2, 3)), t.sum((2, 3)))
    return dice_from_counts(inter.cpu().numpy(), p_area.cpu().numpy(), t_area.cpu().numpy())


@torch.no_grad()
def validate(
    net: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    role: str,
    truth: np.ndarray,
    ctx: Context,
    autocast: AbstractContextManager,
    classes: tuple[str, ...],
) -> dict:
    """Metrics of `net` on `loader`; `truth` is the cache's (N, H, W) bit-packed scoring masks."""
    net.eval()
    sums, loss_sum, n = DiceSums(len(classes)), 0.0, 0
    probs, labels = [], []
    for batch in loader:
        x = batch["image"].to(ctx.device, non_blocking=True, memory_format=torch.channels_last)
        target = (batch["labels"] if role == "classifier" else batch["masks"]).to(ctx.device, non_blocking=True)
        with autocast:
            logits = net(x)
        loss_sum += float(loss_fn(logits, target)) * len(x)
        n += len(x)
        if role == "classifier":
            probs.append(torch.sigmoid(logits.float()).cpu().numpy())
            labels.append(batch["labels"].numpy())
        else:
            t = unpack_masks(truth[batch["index"].numpy()], len(classes))  # (B, C, H, W) at the scoring size
            sums.add(seg_row_dice(logits, t), t.reshape(*t.shape[:2], -1).max(-1) == 0)
    total = all_sum(np.concatenate([sums.vector, [loss_sum, n]]), ctx)
    metrics = {"loss": total[-2] / max(total[-1], 1)}
    if role == "classifier":
        gathered = [all_gather(np.concatenate(x) if x else np.zeros((0, len(classes))), ctx) for x in (probs, labels)]
        return metrics | classifier_metrics(np.concatenate(gathered[0]), np.concatenate(gathered[1]), classes)
    report = sums_report(total[:-2], classes)
    return metrics | {
        "dice": report.mean,
        "dice_pos": report.non_empty,
        "dice_neg": report.empty,
        **{f"dice_{c}": v for c, v in report.per_class.items()},
        "sums": total[:-2].tolist(),
    }


def classifier_metrics(probs: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Mean AUC over the classes that have both labels, accuracy at 0.5, per-class AUC."""
    from sklearn.metrics import roc_auc_score  # here, not at the top: scikit-learn takes ~1 s to import

    aucs = {}
    for k, c in enumerate(classes):
        if 0 < labels[:, k].sum() < len(labels):
            aucs[c] = float(roc_auc_score(labels[:, k], probs[:, k]))
    return {
        "auc": float(np.mean(list(aucs.values()))) if aucs else 0.5,
        "accuracy": float(((probs > 0.5) == (labels > 0.5)).mean()),
        **{f"auc_{c}": v for c, v in aucs.items()},
    }
