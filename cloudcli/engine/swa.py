"""Checkpoint averaging (SWA), as the 1st place of Understanding Clouds averaged 5 checkpoints: the
weights of K epochs averaged into the model best.pt holds, then its BatchNorm statistics recomputed
on the training data (averaged running statistics do not describe the averaged weights).

`train.swa: {epochs: K}` averages the last K epochs (a running sum: one copy of the weights);
`{best: K}` the K best epochs by the monitored metric (K copies, kept until the run ends). The
weights averaged are those best.pt would otherwise hold: the EMA copy when train.ema is on. The sums
and copies live on the host and in last.pt, so a resumed run averages the same weights. Every process
averages its own weights (DDP keeps them identical) and the BatchNorm pass reduces its statistics
over processes, so all end with the same model; only the main process writes.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from cloudcli.config import ResolvedModel, SwaConfig
from cloudcli.engine.checkpoint import State, save_best
from cloudcli.engine.distributed import Context, all_sum
from cloudcli.engine.validate import MONITOR, monitored, validate
from cloudcli.ui import info

if TYPE_CHECKING:
    from cloudcli.data.cache import Cache
    from cloudcli.engine.loop import Trainer

Weights = dict[str, torch.Tensor]


class Averager:
    """The weights of the epochs chosen so far: offered after every epoch, averaged at the end."""

    def __init__(self, cfg: SwaConfig, epochs: int) -> None:
        self.mode, self.k, self.first = cfg.mode, cfg.k, epochs - cfg.k  # first: the first of the last K
        self.epochs: list[int] = []  # epochs mode: the epochs summed so far (0-based)
        self.total: Weights = {}  # epochs mode: their sum (integer counters: the latest value)
        self.kept: list[dict] = []  # best mode: {epoch, value, weights} of the K best so far, best first

    def offer(self, epoch: int, value: float, weights: Weights) -> None:
        host = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        if self.mode == "best":
            self.kept.append({"epoch": epoch, "value": value, "weights": host})
            self.kept.sort(key=lambda s: (-s["value"], s["epoch"]))  # a tie keeps the earlier epoch
            del self.kept[self.k :]
        elif epoch >= self.first:
            _accumulate(self.total, host)
            self.epochs.append(epoch)

    def chosen(self) -> list[int]:
        """The epochs averaged (0-based), in order."""
        return sorted(s["epoch"] for s in self.kept) if self.mode == "best" else list(self.epochs)

    def average(self) -> Weights:
        """The mean of the chosen epochs' weights (summed in epoch order)."""
        total = self.total
        if self.mode == "best":
            total = {}
            for snapshot in sorted(self.kept, key=lambda s: s["epoch"]):
                _accumulate(total, snapshot["weights"])
        n = len(self.chosen())
        return {k: v / n if v.is_floating_point() else v for k, v in total.items()}

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs), "total": self.total, "kept": self.kept}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.total, self.kept = list(state["epochs"]), dict(state["total"]), list(state["kept"])


def _accumulate(total: Weights, weights: Weights) -> None:
    for key, value in weights.items():
        if key in total and value.is_floating_point():
            total[key] += value
        else:  # the first epoch, or an integer counter (BatchNorm's num_batches_tracked): the latest
            total[key] = value.clone()


@torch.no_grad()
def update_bn(
    net: nn.Module,
    loader: DataLoader,
    ctx: Context,
    autocast: AbstractContextManager | None = None,
    channels_last: bool = True,
    frozen: tuple[nn.Module, ...] = (),
) -> int:
    """Recompute the running statistics of `net`'s BatchNorm layers (but those inside `frozen`, kept
    as loaded) in one pass over `loader` in training mode: each becomes the mean over every batch of
    every process of the batch mean and (unbiased) variance, as torch.optim.swa_utils.update_bn.
    The batches seen, over every process."""
    net.train()
    for module in frozen:
        module.eval()
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    norms = [m for m in norms if m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative mean over the batches
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batches = 0
    for batch in loader:
        with autocast or nullcontext():
            net(batch["image"].to(ctx.device, non_blocking=True, memory_format=fmt))
        batches += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    if ctx.world > 1:
        batches = _reduce_bn(norms, batches, ctx)
    return batches


def _reduce_bn(norms: list[nn.Module], batches: int, ctx: Context) -> int:
    """Each process's running statistics (means over its own batches) -> the means over every batch."""
    stats = [s for m in norms for s in (m.running_mean, m.running_var)]
    local = np.concatenate([s.double().cpu().numpy() * batches for s in stats] + [[batches]])
    total = all_sum(local, ctx)
    n = int(total[-1])
    at = 0
    for s in stats:
        s.copy_(torch.from_numpy(total[at : at + s.numel()] / max(n, 1)).view_as(s))
        at += s.numel()
    for m in norms:
        m.num_batches_tracked.fill_(n)
    return n


def finish(
    t: Trainer,
    spec: ResolvedModel,
    loaders: tuple[DataLoader, DataLoader],
    cache: Cache,
    ctx: Context,
    work,
    live,
    settings: dict,
) -> dict:
    """Load the average of the chosen epochs into t.net (training is over), recompute its BatchNorm
    statistics on the training loader, validate it; the main process logs its metrics (DVCLive
    `swa/...` and the summary) and writes it as best.pt. Its record: epochs (1-based), value, metrics."""
    start, cfg = time.perf_counter(), spec.train
    epochs = t.swa.chosen()
    t.net.load_state_dict(t.swa.average())
    train_loader, valid_loader = loaders
    train_loader.batch_sampler.set_epoch(cfg.epochs)  # one more epoch's order and augmentations
    train_loader.dataset.set_epoch(cfg.epochs)
    update_bn(t.net, train_loader, ctx, t.autocast, cfg.channels_last, t.frozen)
    truth = cache.array("train_truth")
    valid = cache.valid("train")  # as run_epochs validates an epoch: no-data pixels left out
    metrics = validate(t.net, valid_loader, t.loss_fn, spec.role, truth, ctx, t.autocast, cache.classes,
                       cfg.channels_last, valid)  # fmt: skip
    value = monitored(metrics, spec.role)
    record = {"mode": cfg.swa.mode, "epochs": [e + 1 for e in epochs], "value": value, "metrics": metrics}
    if ctx.main:
        live.summary["swa"] = {k: v for k, v in metrics.items() if k != "sums" and v is not None}
        live.make_summary()
        best = State(cfg.epochs - 1, record["value"], cfg.epochs - 1, metrics)
        save_best(work, t.net.state_dict(), best, settings, {"mode": record["mode"], "epochs": record["epochs"]})
        info(
            f"{spec.name} fold {settings['fold']} swa of epochs {record['epochs']}: "
            f"val_loss {metrics['loss']:.4f} {MONITOR[spec.role]} {record['value']:.4f} "
            f"{time.perf_counter() - start:.1f}s"
        )
    return record
