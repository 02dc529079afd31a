"""Checkpoint averaging (train.swa): the average itself, the BatchNorm pass, and tiny real runs on CPU
whose best.pt is checked against the weights each epoch offered and against a brute-force pass."""

import copy
import dataclasses
import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from torch import nn

from cloudcli.config import SwaConfig, load_params, resolve_model
from cloudcli.data.cache import open_cache
from cloudcli.engine import checkpoint, loop
from cloudcli.engine.distributed import Context
from cloudcli.engine.loaders import build_loaders, split_indices
from cloudcli.engine.swa import Averager, update_bn
from cloudcli.engine.validate import monitored, validate
from cloudcli.models.factory import build_network
from cloudcli.models.losses import build_loss
from cloudcli.stages import train

CPU = Context(rank=0, world=1, device=torch.device("cpu"))
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 2, generator=g), "bn.num_batches_tracked": torch.tensor(seed)}


def mean_of(offers: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([o[k].float() for o in offers]).mean(0) for k in offers[0]}


def test_last_k_averages_the_last_k_offers_and_resumes_from_its_state() -> None:
    a = Averager(SwaConfig(epochs=3), epochs=5)
    for epoch in range(3):
        a.offer(epoch, 0.0, weights(epoch))
    b = Averager(SwaConfig(epochs=3), epochs=5)  # a resumed run: the state last.pt carries
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for avg in (a, b):
        for epoch in range(3, 5):
            avg.offer(epoch, 0.0, weights(epoch))
        assert avg.chosen() == [2, 3, 4]
        out = avg.average()
        assert torch.allclose(out["w"], mean_of([weights(e) for e in (2, 3, 4)])["w"], rtol=1e-6, atol=1e-7)
        assert out["bn.num_batches_tracked"].item() == 4  # a counter is not averaged: the latest
    assert all(torch.equal(a.average()[k], b.average()[k]) for k in a.average())


def test_best_k_averages_the_k_best_epochs_ties_to_the_earlier() -> None:
    a = Averager(SwaConfig(best=2), epochs=5)
    for epoch, value in enumerate([0.1, 0.5, 0.3, 0.5, 0.2]):
        a.offer(epoch, value, weights(epoch))
    assert a.chosen() == [1, 3]
    assert torch.allclose(a.average()["w"], mean_of([weights(1), weights(3)])["w"], rtol=1e-6, atol=1e-7)


def test_offer_copies_the_weights() -> None:
    a, w = Averager(SwaConfig(epochs=1), epochs=1), weights(0)
    a.offer(0, 0.0, w)
    w["w"].add_(1.0)  # training goes on in place
    assert torch.equal(a.average()["w"], weights(0)["w"])


def test_update_bn_is_the_mean_over_batches_of_batch_statistics_and_skips_frozen_layers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5))
    frozen = net[1]
    with torch.no_grad():
        frozen.running_mean.fill_(7.0)
    g = torch.Generator().manual_seed(1)
    batches = [{"image": torch.randn(n, 3, 6, 5, generator=g) * 2 + 1} for n in (3, 2, 4)]
    seen = []  # brute force: the input of the second BatchNorm in each batch, in training mode
    handle = net[4].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    assert update_bn(net, batches, CPU, channels_last=False, frozen=(frozen,)) == 3
    handle.remove()
    means = torch.stack([x.mean((0, 2, 3)) for x in seen]).mean(0)
    variances = torch.stack([x.var((0, 2, 3), unbiased=True) for x in seen]).mean(0)
    assert torch.allclose(net[4].running_mean, means, rtol=1e-5, atol=1e-6)
    assert torch.allclose(net[4].running_var, variances, rtol=1e-5, atol=1e-6)
    assert net[4].momentum == 0.1 and net[4].num_batches_tracked.item() == 3
    assert torch.equal(frozen.running_mean, torch.full((4,), 7.0))  # frozen: kept as loaded
    assert not frozen.training


# Tiny real runs: seg1 on fold 0 of the tiny cache, 3 epochs, the weights each epoch offers recorded.


def spec_of(tiny_cache: Path, **train_changes):
    p = load_params(tiny_cache / "params.yaml")
    spec = resolve_model("seg1", p.network, p.train, p.models)
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=3, **train_changes)), p.augment


def run(tiny_cache: Path, out: Path, **train_changes) -> dict:
    spec, augment = spec_of(tiny_cache, **train_changes)
    cache = tiny_cache / "artifacts/preprocessed"
    folds = tiny_cache / "artifacts/folds.csv"
    return train.run(spec, augment, cache, folds, 0, out / "ckpt", out / "live", states=out / "states")


def recorded_run(tiny_cache: Path, out: Path, monkeypatch, **train_changes) -> tuple[dict, list]:
    """A run's summary and (epoch, value, weights) of every offer to the average."""
    offers, offer = [], Averager.offer

    def record(self, epoch, value, w):
        offers.append((epoch, value, {k: v.detach().clone() for k, v in w.items()}))
        offer(self, epoch, value, w)

    with monkeypatch.context() as m:
        m.setattr(Averager, "offer", record)
        return run(tiny_cache, out, **train_changes), offers


@pytest.fixture(scope="module")
def last_two(tiny_cache, tmp_path_factory) -> tuple[Path, dict, list]:
    """seg1 averaging its last 2 of 3 epochs: (its folder, summary, offers)."""
    out = tmp_path_factory.mktemp("swa_last_two")
    with pytest.MonkeyPatch.context() as m:
        summary, offers = recorded_run(tiny_cache, out, m, swa=SwaConfig(epochs=2))
    return out, summary, offers


def rebuild(tiny_cache: Path, spec, augment):
    """The network, loaders and cache of fold 0, as the run built them."""
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), tiny_cache / "artifacts/folds.csv", 0)
    net = build_network(spec.role, spec.network, cache.channels, len(cache.classes))
    return net, build_loaders(spec, augment, cache, train_idx, valid_idx, CPU), cache


def is_bn_stat(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in BN_STATS


def test_best_pt_holds_the_mean_of_the_last_k_epochs(last_two) -> None:
    out, summary, offers = last_two
    best = checkpoint.load(out / "ckpt/best.pt")
    assert [e for e, _, _ in offers] == [0, 1, 2]
    mean = mean_of([w for e, _, w in offers if e >= 1])
    params = [k for k in mean if not is_bn_stat(k)]
    assert params and all(torch.allclose(best["model"][k], mean[k], rtol=1e-6, atol=1e-7) for k in params)
    assert best["swa"] == {"mode": "epochs", "epochs": [2, 3]} and best["epoch"] == 3
    assert summary["swa"] == {"mode": "epochs", "epochs": [2, 3], "value": summary["best"]}
    assert json.loads((out / "ckpt/summary.json").read_text()) == json.loads(json.dumps(summary))
    logged = json.loads((out / "live/metrics.json").read_text())["swa"]
    assert logged["dice"] == summary["metrics"]["dice"] == summary["best"] == best["value"]


def test_batchnorm_statistics_are_recomputed_on_the_training_data(last_two, tiny_cache) -> None:
    out, _, offers = last_two
    best = checkpoint.load(out / "ckpt/best.pt")["model"]
    mean = mean_of([w for e, _, w in offers if e >= 1])
    spec, augment = spec_of(tiny_cache, swa=SwaConfig(epochs=2))
    net, (train_loader, _), _ = rebuild(tiny_cache, spec, augment)
    net.load_state_dict(best)
    train_loader.batch_sampler.set_epoch(3)  # the pass after the last epoch
    train_loader.dataset.set_epoch(3)
    norms = {name: m for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    inputs = {name: [] for name in norms}
    for name, m in norms.items():
        m.register_forward_pre_hook(lambda m, args, name=name: inputs[name].append(args[0].detach().clone()))
    net.train()
    with torch.no_grad():
        for batch in train_loader:
            net(batch["image"])
    for name in norms:
        batch_means = torch.stack([x.mean((0, 2, 3)) for x in inputs[name]]).mean(0)
        batch_vars = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs[name]]).mean(0)
        assert torch.allclose(best[f"{name}.running_mean"], batch_means, rtol=1e-4, atol=1e-6), name
        assert torch.allclose(best[f"{name}.running_var"], batch_vars, rtol=1e-4, atol=1e-6), name
        assert not torch.allclose(best[f"{name}.running_var"], mean[f"{name}.running_var"]), name
        assert best[f"{name}.num_batches_tracked"].item() == len(train_loader)


def test_the_logged_score_is_that_of_best_pt(last_two, tiny_cache) -> None:
    out, summary, _ = last_two
    spec, augment = spec_of(tiny_cache, swa=SwaConfig(epochs=2))
    net, (_, valid_loader), cache = rebuild(tiny_cache, spec, augment)
    net.load_state_dict(checkpoint.load(out / "ckpt/best.pt")["model"])
    loss_fn = build_loss(spec.role, spec.loss)
    truth = cache.array("train_truth")
    metrics = validate(net, valid_loader, loss_fn, spec.role, truth, CPU, nullcontext(), cache.classes, False)
    assert metrics["sums"] == summary["metrics"]["sums"]
    assert monitored(metrics, spec.role) == pytest.approx(summary["best"], abs=1e-12)
    assert metrics["loss"] == pytest.approx(summary["metrics"]["loss"], rel=1e-5)


class Cut(Exception):
    """The run stops here, as if killed."""


def test_a_run_resumed_inside_the_window_ends_with_the_same_average(last_two, tiny_cache, tmp_path, monkeypatch):
    full, summary, _ = last_two
    save = loop.save_training

    def save_then_stop(out, epoch, *args):
        save(out, epoch, *args)
        if epoch == 1:  # the first epoch of the average is in last.pt
            raise Cut

    with monkeypatch.context() as m:
        m.setattr(loop, "save_training", save_then_stop)
        with pytest.raises(Cut):
            run(tiny_cache, tmp_path, swa=SwaConfig(epochs=2))
    (state,) = (tmp_path / "states/seg1-fold0").iterdir()
    assert checkpoint.load(state / "last.pt")["swa"]["epochs"] == [1]
    resumed = run(tiny_cache, tmp_path, swa=SwaConfig(epochs=2))
    a, b = checkpoint.load(full / "ckpt/best.pt"), checkpoint.load(tmp_path / "ckpt/best.pt")
    assert a.keys() == b.keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert resumed == summary


def test_best_k_with_ema_averages_the_ema_weights_of_the_best_epochs(tiny_cache, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("cloudcli.engine.fit.drop_state", lambda work: None)  # keep last.pt
    summary, offers = recorded_run(tiny_cache, tmp_path, monkeypatch, swa=SwaConfig(best=2), ema=0.9)
    (state,) = (tmp_path / "states/seg1-fold0").iterdir()
    ema = checkpoint.load(state / "last.pt")["ema"]
    _, _, last = offers[-1]
    assert all(torch.equal(last[k], ema[f"module.{k}"]) for k in last)  # what is offered: the EMA copy
    chosen = sorted(sorted(offers, key=lambda o: (-o[1], o[0]))[:2])
    assert summary["swa"]["epochs"] == [e + 1 for e, _, _ in chosen] and summary["swa"]["mode"] == "best"
    best = checkpoint.load(tmp_path / "ckpt/best.pt")["model"]
    mean = mean_of([w for _, _, w in chosen])
    assert all(torch.allclose(best[k], mean[k], rtol=1e-6, atol=1e-7) for k in mean if not is_bn_stat(k))
