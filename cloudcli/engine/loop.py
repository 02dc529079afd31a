"""The training loop: the network set up for the run (DDP, torch.compile, mixed precision, EMA), the
epochs, the optimiser steps within one, and the schedulers' steps."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from cloudcli.config import ResolvedModel, TrainConfig
from cloudcli.data.cache import Cache
from cloudcli.engine.checkpoint import State, save_training
from cloudcli.engine.distributed import Context, accumulator, all_min, all_sum
from cloudcli.engine.live import curves, log_epoch
from cloudcli.engine.optim import STEP_SCHEDULERS, build_optimizer, build_scheduler
from cloudcli.engine.swa import Averager, finish
from cloudcli.engine.validate import monitored, validate
from cloudcli.ui import progress, warn

STALL_EPOCHS = 3  # epochs with the same validation loss that mean a stalled (saturated) model


@dataclass
class Trainer:
    """What the optimiser steps touch. `wrapped` runs forward (`net` in DDP and/or compiled);
    `net` is the bare network whose weights are saved and averaged; `ddp` the DDP module inside
    `wrapped` (also under torch.compile: its join() and no_sync() stay reachable); `frozen` the
    frozen encoder stages, kept in eval mode so their BatchNorm statistics stay as loaded; `swa` the
    checkpoint average (train.swa)."""

    wrapped: nn.Module
    net: nn.Module
    loss_fn: nn.Module
    opt: torch.optim.Optimizer
    sched: object | None  # a torch scheduler, or None for a constant lr
    scaler: torch.amp.GradScaler | None  # fp16 on CUDA only
    ema: AveragedModel | None
    autocast: AbstractContextManager
    ddp: DistributedDataParallel | None = None  # several processes
    frozen: tuple[nn.Module, ...] = ()
    swa: Averager | None = None

    def train_mode(self) -> None:
        """Training mode, but for the frozen stages (train() would let their BatchNorm update)."""
        self.wrapped.train()
        for module in self.frozen:
            module.eval()


def build_trainer(
    net: nn.Module,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    ctx: Context,
    steps_per_epoch: int,
    frozen: Sequence[str] = (),
) -> Trainer:
    """Move `net` to the device and wrap it; its optimiser, scheduler, grad scaler, EMA copy and
    checkpoint average.
    `frozen`: names of the frozen encoder stages (freeze_encoder_stages)."""
    net.to(ctx.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    ddp = DistributedDataParallel(net) if ctx.world > 1 else None
    wrapped: nn.Module = net if ddp is None else ddp
    if cfg.compile:
        wrapped = torch.compile(wrapped)
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, -(-steps_per_epoch // cfg.accumulate), "max")
    cuda = ctx.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if cuda and cfg.precision == "fp16" else None
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    autocast = torch.autocast(ctx.device.type, dtype=dtype) if cuda and dtype else nullcontext()
    stages = tuple(net.encoder.get_submodule(name) for name in frozen)
    swa = Averager(cfg.swa, cfg.epochs) if cfg.swa else None
    return Trainer(wrapped, net, loss_fn, opt, sched, scaler, ema, autocast, ddp, stages, swa)


def run_epochs(
    t: Trainer,
    spec: ResolvedModel,
    loaders: tuple[DataLoader, DataLoader],
    cache: Cache,
    state: State,
    ctx: Context,
    work: Path,
    live,
    config_hash: str,
    settings: dict,
) -> tuple[State, dict | None]:
    """Train the epochs after state.epoch; after each: validate, step the epoch scheduler, offer the
    weights to the checkpoint average, and on the main process log the curves, then save them,
    last.pt and (when it improved) best.pt in the resume folder `work`. With train.swa, best.pt
    becomes the average at the end (swa.finish). (The best epoch, the average's record or None.)"""
    cfg, fold = spec.train, settings["fold"]
    train_loader, valid_loader = loaders
    truth = cache.array("train_truth")
    val_losses: list[float] = []
    for epoch in range(state.epoch + 1, cfg.epochs):
        start = time.perf_counter()
        train_loader.batch_sampler.set_epoch(epoch)  # reshuffle
        train_loader.dataset.set_epoch(epoch)  # new augmentations
        train_loss, seen = train_epoch(t, train_loader, spec, ctx, f"{spec.name} fold {fold} epoch {epoch + 1}")
        evaluated = t.ema.module if t.ema else t.net
        metrics = validate(
            evaluated, valid_loader, t.loss_fn, spec.role, truth, ctx, t.autocast, cache.classes, cfg.channels_last,
            cache.valid("train"),
        )  # fmt: skip
        value = monitored(metrics, spec.role)
        val_losses.append(metrics["loss"])
        if ctx.main and stalled(val_losses) and not stalled(val_losses[:-1]):
            _warn_stalled(spec, fold, metrics["loss"])
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(t.opt.param_groups)}  # lr of this epoch
        step_epoch_scheduler(t.sched, cfg.scheduler, value)
        improved = value > state.best_value
        if improved:
            state = State(epoch, value, epoch, metrics)
        state.epoch = epoch
        if t.swa is not None:
            t.swa.offer(epoch, value, evaluated.state_dict())
        if ctx.main:  # the curves first: once last.pt says an epoch is done, its row is logged
            log_epoch(live, spec, fold, epoch, train_loss, seen, metrics, lrs, state, time.perf_counter() - start)
            save_training(work, epoch, improved, t, state, config_hash, settings, curves(live))
    return state, finish(t, spec, loaders, cache, ctx, work, live, settings) if t.swa is not None else None


def train_epoch(t: Trainer, loader: DataLoader, spec: ResolvedModel, ctx: Context, title: str) -> tuple[float, int]:
    """One pass over `loader`, an optimiser step every train.accumulate batches (and at the end);
    (mean training loss, samples seen), summed over processes. The loss is summed on the device and
    read once, at the end: no step waits for the device.

    Each batch's loss is divided by the size of its accumulation group, so a short last group
    (10 batches, accumulate 4: 4 + 4 + 2) steps with its mean gradient too. Under DDP the gradients
    are all-reduced only on the steps that step the optimiser (no_sync on the others), except in the
    last group that some process may not complete (shards differ by up to one batch): every step of
    it syncs, so that all processes issue the same all-reduces."""
    cfg, n, k = spec.train, len(loader), spec.train.accumulate
    t.train_mode()
    t.opt.zero_grad(set_to_none=True)
    loss_sum, seen = accumulator(ctx), 0
    every_step = all_min(n, ctx) // k * k  # the first step of the groups that sync every step
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    join = t.ddp.join() if t.ddp is not None else nullcontext()
    with join, progress(title, n, "batches", lines=False, enabled=ctx.main) as advance:
        for step, batch in enumerate(loader):
            x = batch["image"].to(ctx.device, non_blocking=True, memory_format=fmt)
            target = (batch["labels"] if spec.role == "classifier" else batch["masks"]).to(
                ctx.device, non_blocking=True
            )
            extra = (batch["valid"].to(ctx.device, non_blocking=True),) if "valid" in batch else ()  # data.nodata
            group = min(k, n - step // k * k)  # batches in this step's accumulation group
            steps_optimizer = (step + 1) % k == 0 or step + 1 == n
            skip_sync = t.ddp is not None and not steps_optimizer and step < every_step
            with t.ddp.no_sync() if skip_sync else nullcontext():
                with t.autocast:
                    loss = t.loss_fn(t.wrapped(x), target, *extra)
                (t.scaler.scale(loss / group) if t.scaler else loss / group).backward()
            if steps_optimizer:
                optimizer_step(t.net, t.opt, t.scaler, cfg.clip_grad)
                if t.ema is not None:
                    t.ema.update_parameters(t.net)
                if t.sched is not None and cfg.scheduler in STEP_SCHEDULERS:
                    t.sched.step()
            loss_sum += loss.detach().to(loss_sum.dtype) * len(x)
            seen += len(x)
            advance(1)
    loss_sum, seen = all_sum(torch.stack([loss_sum, loss_sum.new_tensor(seen)]), ctx)
    return float(loss_sum) / max(seen, 1), int(seen)


def optimizer_step(net: nn.Module, opt: torch.optim.Optimizer, scaler, clip_grad: float) -> None:
    if clip_grad > 0:
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)


def step_epoch_scheduler(sched, name: str, monitored: float) -> None:
    """Step a per-epoch scheduler (plateau on the monitored metric); step schedulers step in train_epoch."""
    if sched is None or name in STEP_SCHEDULERS:
        return
    sched.step(monitored) if name == "plateau" else sched.step()


def stalled(val_losses: list[float], epochs: int = STALL_EPOCHS, rtol: float = 1e-6) -> bool:
    """True when the last `epochs` validation losses are equal (within rtol): nothing is learnt."""
    last = val_losses[-epochs:]
    return len(last) == epochs and max(last) - min(last) <= rtol * max(abs(v) for v in last)


def _warn_stalled(spec: ResolvedModel, fold: int, loss: float) -> None:
    warn(
        f"{spec.name} fold {fold}: the validation loss has been the same for {STALL_EPOCHS} epochs "
        f"({loss:.6f}): the outputs look saturated (sigmoid at 0 or 1 everywhere, no gradient). "
        f"A Dice-only loss can stall so: add bce to models.{spec.name}.loss (e.g. {{dice_pos: 1.0, bce: 0.5}}) "
        "or lower train.lr"
    )
