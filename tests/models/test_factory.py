import huggingface_hub
import pytest
import torch

from cloudcli.config import NetworkConfig
from cloudcli.errors import ConfigError
from cloudcli.models.factory import IMAGENET_MEAN, build_network, encoder_stages, freeze_encoder_stages, normalization


def cfg(**changes) -> NetworkConfig:
    base = {"arch": "FPN", "encoder": "resnet18", "encoder_weights": None, "freeze_encoder_stages": 0}
    return NetworkConfig(**(base | changes))


@pytest.mark.parametrize(
    ("role", "arch", "encoder", "shape"),
    [
        ("seg1", "FPN", "resnet18", (2, 4, 64, 96)),
        ("seg2", "Unet", "resnet18", (2, 4, 64, 96)),
        ("seg1", "FPN", "tu-mobilenetv3_small_100", (2, 4, 64, 96)),  # a timm encoder through smp
        ("classifier", "FPN", "resnet18", (2, 4)),
    ],
)
def test_outputs_and_every_parameter_gets_a_gradient(role, arch, encoder, shape) -> None:
    torch.manual_seed(0)
    net = build_network(role, cfg(arch=arch, encoder=encoder), 3, 4)
    out = net(torch.randn(2, 3, 64, 96))
    assert out.shape == shape
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"network.arch: unknown architecture 'FNP'; choose from .*FPN"):
        build_network("seg1", cfg(arch="FNP"), 3, 4)
    with pytest.raises(ConfigError, match=r"network.encoder: unknown encoder 'resnet19'; did you mean resnet18"):
        build_network("seg1", cfg(encoder="resnet19"), 3, 4)
    with pytest.raises(ConfigError, match="timm has no model 'nope_net'"):
        build_network("classifier", cfg(encoder="tu-nope_net"), 3, 4)


def test_imagenet_weights_offline_fail_clearly(monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"network.encoder_weights: could not load 'imagenet' weights.*null"):
        build_network("seg1", cfg(encoder_weights="imagenet"), 3, 4)


def test_freeze_first_stages() -> None:
    net = build_network("seg1", cfg(), 3, 4)
    assert [n for n, _ in encoder_stages(net.encoder)] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    assert freeze_encoder_stages(net, 3) == ["conv1", "bn1", "layer1"]
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("encoder.conv1", "encoder.bn1", "encoder.layer1")) for n in frozen)
    assert net.encoder.layer2[0].conv1.weight.requires_grad


def test_normalization_without_weights_is_imagenet() -> None:
    assert normalization(cfg())[0] == IMAGENET_MEAN
