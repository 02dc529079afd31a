"""The optimiser steps of one epoch, on tiny hand-made batches and networks (no data cache)."""

import copy
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cloudcli.engine.distributed import Context
from cloudcli.engine.loop import Trainer, train_epoch
from cloudcli.engine.validate import validate

CPU = Context(rank=0, world=1, device=torch.device("cpu"))


def spec(accumulate: int = 1, channels_last: bool = False) -> SimpleNamespace:
    """The parts of a ResolvedModel that train_epoch reads."""
    train = SimpleNamespace(accumulate=accumulate, channels_last=channels_last, clip_grad=0.0, scheduler="none")
    return SimpleNamespace(role="classifier", train=train)


def trainer(net: nn.Module, frozen: tuple[nn.Module, ...] = ()) -> Trainer:
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    return Trainer(net, net, nn.BCEWithLogitsLoss(), opt, None, None, None, nullcontext(), None, frozen)


def batches(n: int, size: int = 2, seed: int = 0) -> list[dict]:
    """`n` batches of (size, 3, 2, 3) images and (size, 2) 0/1 labels."""
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randn(size, 3, 2, 3, generator=g), "labels": (torch.rand(size, 2, generator=g) > 0.5).float()}
        for _ in range(n)
    ]


def linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(18, 2))


def test_a_short_last_accumulation_group_steps_with_its_mean_gradient() -> None:
    """10 batches, accumulate 4: groups of 4, 4 and 2 batches. Each optimiser step's gradient is the
    mean of its group's batch gradients, computed by hand at the weights the step saw; the last group
    divides by 2, not 4."""
    net, data = linear(), batches(10)
    t = trainer(net)
    steps = []  # (weights, gradients) when each optimiser step starts
    t.opt.register_step_pre_hook(
        lambda opt, args, kwargs: steps.append([(p.detach().clone(), p.grad.clone()) for p in net.parameters()])
    )
    _, seen = train_epoch(t, data, spec(accumulate=4), CPU, "test")
    assert len(steps) == 3 and seen == 20
    for (lo, hi), step in zip([(0, 4), (4, 8), (8, 10)], steps):
        ref = copy.deepcopy(net)
        with torch.no_grad():
            for p, (w, _) in zip(ref.parameters(), step):
                p.copy_(w)
        grads = [torch.zeros_like(p) for p in ref.parameters()]
        for b in data[lo:hi]:
            batch_grads = torch.autograd.grad(t.loss_fn(ref(b["image"]), b["labels"]), list(ref.parameters()))
            grads = [g + bg / (hi - lo) for g, bg in zip(grads, batch_grads)]
        for (_, got), expected in zip(step, grads):
            torch.testing.assert_close(got, expected)


def test_the_epoch_loss_is_the_sample_weighted_mean_of_the_batch_losses() -> None:
    """Summed on the device, read once: the same mean as reading each batch's loss as it came."""
    data = batches(3, size=3) + batches(1, size=2, seed=1)
    loss, seen = train_epoch(trainer(linear()), data, spec(), CPU, "test")
    ref, expected = linear(), 0.0  # by hand: the same steps, each batch's loss read as it comes
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for b in data:
        batch_loss = nn.BCEWithLogitsLoss()(ref(b["image"]), b["labels"])
        expected += float(batch_loss.detach()) * len(b["image"])
        batch_loss.backward()
        opt.step()
        opt.zero_grad()
    assert seen == 11 and loss == expected / 11


def memory_format_of(x: torch.Tensor) -> str:
    if x.is_contiguous():
        return "contiguous"
    return "channels_last" if x.is_contiguous(memory_format=torch.channels_last) else "other"


@pytest.mark.parametrize("channels_last", [False, True])
def test_inputs_take_the_memory_format_train_channels_last_asks_for(channels_last: bool) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(12, 2))
    formats = []
    net.register_forward_pre_hook(lambda m, args: formats.append(memory_format_of(args[0])))
    train_epoch(trainer(net), batches(2), spec(channels_last=channels_last), CPU, "test")
    metrics = validate(
        net,
        batches(2),
        nn.BCEWithLogitsLoss(),
        "classifier",
        np.zeros(0),
        CPU,
        nullcontext(),
        ("a", "b"),
        channels_last,
    )
    assert "auc" in metrics
    assert formats == ["channels_last" if channels_last else "contiguous"] * 4


def test_frozen_modules_stay_in_eval_mode_and_keep_their_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    frozen, free = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    frozen.requires_grad_(False)
    net = nn.Sequential(frozen, free, nn.Flatten(), nn.Linear(18, 2))
    t = trainer(net, frozen=(frozen,))
    train_epoch(t, batches(3), spec(), CPU, "test")
    assert not frozen.training and free.training
    assert torch.equal(frozen.running_mean, torch.zeros(3)) and torch.equal(frozen.running_var, torch.ones(3))
    assert not torch.equal(free.running_mean, torch.zeros(3))
