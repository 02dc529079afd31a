import pytest
from helpers import REPO

from cloudcli.config import load_params
from cloudcli.engine.optim import build_optimizer, build_scheduler
from cloudcli.models.factory import build_network


def train_cfg(**changes):
    import dataclasses

    return dataclasses.replace(load_params(REPO / "params.yaml").train, **changes)


@pytest.fixture(scope="module")
def net():
    from cloudcli.config import NetworkConfig

    return build_network("seg1", NetworkConfig("FPN", "resnet18", None, 0), 3, 4)


@pytest.mark.parametrize("name", ["adam", "adamw", "radam", "sgd"])
def test_encoder_learning_rate_is_scaled(net, name: str) -> None:
    opt = build_optimizer(net, train_cfg(optimizer=name, lr=1e-3, encoder_lr_mult=0.1))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"encoder": 1e-4, "decoder": 1e-3})
    n_encoder = sum(p.numel() for p in opt.param_groups[0]["params"])
    assert n_encoder == sum(p.numel() for p in net.encoder.parameters())


def test_plateau_follows_the_metric_direction(net) -> None:
    opt = build_optimizer(net, train_cfg())
    sched = build_scheduler(opt, train_cfg(scheduler="plateau", plateau_patience=0, plateau_factor=0.5), 10, "max")
    sched.step(0.5)
    sched.step(0.6)  # improved: no change
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    sched.step(0.55)  # worse for a maximised metric: halve
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_onecycle_steps_every_optimizer_step(net) -> None:
    cfg = train_cfg(scheduler="onecycle", epochs=2)
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, 5, "max")
    lrs = []
    for _ in range(10):  # 2 epochs x 5 steps: exactly the planned total
        lrs.append(opt.param_groups[1]["lr"])  # the lr this optimizer step uses
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(1e-3, rel=0.05) and lrs[0] < 1e-4 and lrs[-1] < 1e-8


@pytest.mark.parametrize(
    ("name", "kind"),
    [("cosine", "CosineAnnealingLR"), ("cosine_restarts", "CosineAnnealingWarmRestarts"), ("none", "NoneType")],
)
def test_epoch_schedulers(net, name: str, kind: str) -> None:
    opt = build_optimizer(net, train_cfg())
    assert type(build_scheduler(opt, train_cfg(scheduler=name), 5, "max")).__name__ == kind
