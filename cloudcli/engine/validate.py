"""Validation on the held-out fold: competition Dice at the scoring size, or classifier AUC.

Only running sums are kept (no predictions across batches for segmentation), reduced over
processes, so the metric is exact for any number of processes. Nothing is read back from the
device until the pass ends: the loss sum and the per-row pixel counts (classifier: probabilities)
stay there, then come back once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cloudcli.data.cache import unpack_masks
from cloudcli.engine.distributed import Context, accumulator, all_gather_rows, all_sum
from cloudcli.metrics import DiceSums, dice_from_counts, sums_report
from cloudcli.models.losses import split_outputs

MONITOR = {"seg1": "dice", "seg2": "dice_pos", "classifier": "auc"}  # all maximised


def monitored(metrics: dict, role: str) -> float:
    """The role's monitored metric; Dice over all rows when a fold has no positive row for dice_pos."""
    value = metrics[MONITOR[role]]
    return metrics["dice"] if value is None else value


def seg_row_counts(
    logits: torch.Tensor, truth: np.ndarray, threshold: float = 0.5, valid: np.ndarray | None = None
) -> torch.Tensor:
    """(3, B, C) intersection, predicted and true areas of sigmoid(logits) > threshold, resized to
    truth's (H, W), against truth (B, C, H, W); on the logits' device. `valid` (B, H, W): only the
    pixels where it is non-zero count (data.nodata)."""
    probs = F.interpolate(torch.sigmoid(logits.float()), size=truth.shape[-2:], mode="bilinear", align_corners=False)
    pred = probs > threshold
    t = torch.from_numpy(truth).to(pred.device, non_blocking=True).bool()
    if valid is not None:
        keep = torch.from_numpy(np.asarray(valid)[:, None] != 0).to(pred.device, non_blocking=True)
        pred, t = pred & keep, t & keep
    return torch.stack([(pred & t).sum((2, 3)), pred.sum((2, 3)), t.sum((2, 3))])


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
    channels_last: bool = True,
    valid: np.ndarray | None = None,
) -> dict:
    """Metrics of `net` on `loader`; `truth` is the cache's (N, H, W) bit-packed scoring masks.
    `channels_last`: the memory format of the inputs (train.channels_last). `valid`: the cache's
    (N, H, W) pixels with data at the scoring size (data.nodata): the others count in no score
    and, through the batches' own valid masks, in no loss."""
    net.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, n = accumulator(ctx), 0
    outputs, labels, empty = [], [], []  # per batch: (3, B, C) counts or (B, C) probs on the device; host flags
    # per batch: a class head's (B, C) probabilities on the device; None: the network has no head (every
    # process knows it from the network, so all gather alike, even one without a validation batch)
    heads = [] if getattr(net, "classification_head", None) is not None else None
    for batch in loader:
        x = batch["image"].to(ctx.device, non_blocking=True, memory_format=fmt)
        target = (batch["labels"] if role == "classifier" else batch["masks"]).to(ctx.device, non_blocking=True)
        extra = (batch["valid"].to(ctx.device, non_blocking=True),) if "valid" in batch else ()
        with autocast:
            out = net(x)
        loss_sum += loss_fn(out, target, *extra).detach().to(loss_sum.dtype) * len(x)
        n += len(x)
        logits, class_logits = split_outputs(out)
        if heads is not None:
            heads.append(torch.sigmoid(class_logits.float()))
        if role == "classifier":
            outputs.append(torch.sigmoid(logits.float()))
            labels.append(batch["labels"].float())
        else:
            rows = batch["index"].numpy()
            t = unpack_masks(truth[rows], len(classes))  # (B, C, H, W) at the scoring size
            outputs.append(seg_row_counts(logits, t, valid=None if valid is None else valid[rows]))
            empty.append(t.reshape(*t.shape[:2], -1).max(-1) == 0)
    if role == "classifier":
        total = all_sum(torch.stack([loss_sum, loss_sum.new_tensor(n)]), ctx)
        gathered = [all_gather_rows(_cat(x, (0, len(classes))), ctx) for x in (outputs, labels)]
        return {"loss": total[0] / max(total[1], 1)} | classifier_metrics(*gathered, classes)
    return _seg_metrics(outputs, empty, heads, (loss_sum, n), classes, ctx)


def _seg_metrics(outputs, empty, heads, loss: tuple, classes: tuple[str, ...], ctx: Context) -> dict:
    """A segmentation pass's metrics from its batches' (3, B, C) counts, truth-is-empty flags, class
    head probabilities and (loss sum, images), summed over processes."""
    total = all_sum(np.concatenate([_dice_sums(outputs, empty, len(classes)), [float(loss[0]), loss[1]]]), ctx)
    report = sums_report(total[:-2], classes)
    return (
        {"loss": total[-2] / max(total[-1], 1)}
        | _head_metrics(heads, empty, classes, ctx)
        | {
            "dice": report.mean,
            "dice_pos": report.non_empty,
            "dice_neg": report.empty,
            **{f"dice_{c}": v for c, v in report.per_class.items()},
            "sums": total[:-2].tolist(),
        }
    )


def _head_metrics(heads: list | None, empty: list[np.ndarray], classes: tuple[str, ...], ctx) -> dict:
    """A class head's AUC and accuracy against class presence at the scoring size, as head_auc,
    head_accuracy, head_auc_<class>; nothing for a network without a head."""
    if heads is None:
        return {}
    presence = torch.from_numpy(~np.concatenate(empty)).float() if empty else torch.zeros(0, len(classes))
    probs, truth = (all_gather_rows(x, ctx) for x in (_cat(heads, (0, len(classes))), presence))
    return {f"head_{k}": v for k, v in classifier_metrics(probs, truth, classes).items()}


def _dice_sums(counts: list[torch.Tensor], empty: list[np.ndarray], n_classes: int) -> np.ndarray:
    """The DiceSums vector of the batches' (3, B, C) pixel counts (read back in one go) and their
    (B, C) truth-is-empty flags, added batch by batch as they came."""
    sums = DiceSums(n_classes)
    host = torch.cat(counts, 1).cpu().numpy() if counts else np.zeros((3, 0, n_classes), np.int64)
    for lo, flags in zip(np.cumsum([0] + [len(f) for f in empty]), empty):
        sums.add(dice_from_counts(*host[:, lo : lo + len(flags)]), flags)
    return sums.vector


def _cat(rows: list[torch.Tensor], empty_shape: tuple[int, ...]) -> torch.Tensor:
    return torch.cat(rows) if rows else torch.zeros(empty_shape)


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
