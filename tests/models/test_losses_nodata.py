"""Segmentation losses with a valid mask (data.nodata): pixels without data change nothing, and
the loss is that of the pixels with data alone (brute force: the same loss on only those pixels)."""

import pytest
import torch

from cloudcli.models.losses import SEG_LOSSES, build_loss, soft_dice_pairs

MASK_LOSSES = [n for n in SEG_LOSSES if n != "class_head"]  # the terms on masks; class_head is on the head

B, C, H, W = 3, 2, 6, 5


def _batch(soft: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(B, C, H, W, generator=g) * 3
    target = torch.rand(B, C, H, W, generator=g) if soft else (torch.rand(B, C, H, W, generator=g) > 0.6).float()
    valid = torch.ones(B, 1, H, W)
    valid[0, :, :3, :2] = 0  # a corner without data
    valid[1, :, 2:, :] = 0  # most of an image
    target[1, 1, 2:, :] = 1  # class 1 of image 1 true only where there is no data
    target[1, 1, :2, :] = 0
    return logits, target, valid


def _valid_pixels(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) -> (1, C, P, 1): the pixels with data of every image, side by side."""
    keep = valid[:, 0].bool()
    return torch.stack([x[:, k][keep] for k in range(x.shape[1])])[None, :, :, None]


def _brute_force(name: str, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> float:
    """The plain loss (no valid mask) of the pixels with data alone."""
    plain = build_loss("seg1", {name: 1.0})
    if name == "dice_pos":  # per (image, class) pair: each image's pixels on their own
        scores, positive = [], []
        for b in range(len(logits)):
            x, t = (
                _valid_pixels(logits[b : b + 1], valid[b : b + 1]),
                _valid_pixels(target[b : b + 1], valid[b : b + 1]),
            )
            scores.append(soft_dice_pairs(x, t)[0])
            positive.append(t.flatten(2).amax(-1)[0] > 0)
        return float(1 - torch.cat(scores)[torch.cat(positive)].mean())
    if name == "lovasz":  # per map, then the mean over maps (every image has C of them)
        each = [
            plain(
                _valid_pixels(logits[b : b + 1], valid[b : b + 1]), _valid_pixels(target[b : b + 1], valid[b : b + 1])
            )
            for b in range(len(logits))
        ]
        return float(torch.stack(each).mean())
    return float(plain(_valid_pixels(logits, valid), _valid_pixels(target, valid)))  # pooled over the batch


@pytest.mark.parametrize("name", MASK_LOSSES)
def test_a_loss_with_valid_pixels_is_the_loss_of_those_pixels_alone(name: str) -> None:
    logits, target, valid = _batch(soft=name == "kl")
    loss = build_loss("seg1", {name: 1.0})
    value = float(loss(logits, target, valid))
    assert value == pytest.approx(_brute_force(name, logits, target, valid), rel=1e-5, abs=1e-6)
    assert value != pytest.approx(float(loss(logits, target)), rel=1e-4)  # the mask matters here


@pytest.mark.parametrize("name", MASK_LOSSES)
def test_predictions_and_labels_on_pixels_without_data_change_no_loss_nor_gradient(name: str) -> None:
    logits, target, valid = _batch(soft=name == "kl")
    loss = build_loss("seg1", {name: 0.7, "bce": 0.3} if name != "bce" else {name: 1.0})
    other = logits.clone()
    other[valid.expand_as(logits) == 0] = torch.linspace(-50, 50, int((valid == 0).sum()) * C)
    relabelled = torch.where(valid > 0, target, 1 - target)
    grads = []
    for x, t in ((logits, target), (other, relabelled)):
        x = x.clone().requires_grad_(True)
        value = loss(x, t, valid)
        value.backward()
        grads.append((float(value.detach()), x.grad))
    assert grads[0][0] == grads[1][0]
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-7)
    assert not grads[1][1][valid.expand_as(logits) == 0].any()  # no gradient where there is no data


def test_all_pixels_valid_is_the_plain_loss_and_none_valid_is_zero() -> None:
    logits, target, _ = _batch()
    loss = build_loss("seg1", {"bce": 0.5, "dice": 0.25, "focal": 0.25})
    ones = torch.ones(B, 1, H, W)
    assert float(loss(logits, target, ones)) == pytest.approx(float(loss(logits, target)), rel=1e-6)
    assert float(build_loss("seg1", {"bce": 1.0})(logits, target, torch.zeros(B, 1, H, W))) == 0.0


def test_labels_under_no_data_pixels_make_no_class_present_for_the_head() -> None:
    torch.manual_seed(0)
    masks, heads = torch.randn(1, 2, 4, 4), torch.randn(1, 2)
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, 0, 0] = 1  # class 0: one labelled pixel, under no data
    target[0, 1, 3, 3] = 1  # class 1: one labelled pixel with data
    valid = torch.ones(1, 1, 4, 4)
    valid[0, 0, 0, 0] = 0
    loss = build_loss("seg1", {"class_head": 1.0, "bce": 1.0})
    loss((masks, heads), target, valid)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(heads, torch.tensor([[0.0, 1.0]]))
    assert loss.last["class_head"].item() == pytest.approx(expected.item(), rel=1e-6)
