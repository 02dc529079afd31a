import math

import pytest
import torch

from cloudcli import config
from cloudcli.models.losses import (
    CLASSIFIER_LOSSES,
    SEG_LOSSES,
    BalancedBCELoss,
    LovaszHingeLoss,
    PositiveDiceLoss,
    build_loss,
    soft_dice_pairs,
)

BIG = 100.0  # sigmoid(+-100) is exactly 1 / 0 in float32


def test_registries_match_the_names_config_accepts() -> None:
    assert tuple(SEG_LOSSES) == config.SEG_LOSSES and tuple(CLASSIFIER_LOSSES) == config.CLASSIFIER_LOSSES


def test_soft_dice_pairs_known_answer() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # inter = 0.5 + 0.5 = 1, sum p = 2, sum t = 2: (2 * 1 + 1) / (2 + 2 + 1)
    assert soft_dice_pairs(logits, target).item() == pytest.approx(3 / 5)


def test_positive_dice_ignores_empty_pairs() -> None:
    target = torch.zeros(1, 2, 2, 2)
    target[0, 0, 0] = 1  # class 0 positive (2 px); class 1 empty
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = BIG  # a wrong prediction on the empty pair must not count
    assert PositiveDiceLoss()(logits, target).item() == pytest.approx(1 - 3 / 5)


def test_positive_dice_without_positives_is_zero_with_a_graph() -> None:
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = PositiveDiceLoss()(logits, torch.zeros(2, 4, 3, 3))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_balanced_bce_known_answers() -> None:
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert BalancedBCELoss()(torch.zeros(1, 4), target).item() == pytest.approx(math.log(2))
    logits = torch.tensor([[0.0, -BIG, -BIG, -BIG]])  # negatives perfect, the positive at p = 0.5
    assert BalancedBCELoss()(logits, target).item() == pytest.approx(0.5 * math.log(2))
    # plain BCE would weigh the one positive 1/4, balanced weighs it 1/2
    assert torch.nn.BCEWithLogitsLoss()(logits, target).item() == pytest.approx(0.25 * math.log(2))


@pytest.mark.parametrize("name", [n for n in SEG_LOSSES if n != "class_head"])
def test_perfect_segmentation_has_zero_loss_and_others_have_gradients(name: str) -> None:
    target = torch.zeros(2, 4, 8, 8)
    target[0, 0, :4] = 1
    target[1, 2, :, 2:5] = 1
    loss = build_loss("seg1", {name: 1.0})
    assert loss(torch.where(target > 0, BIG, -BIG), target).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    value = loss(logits, target)
    value.backward()
    assert value.item() > 0 and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(CLASSIFIER_LOSSES))
def test_perfect_classification_has_zero_loss(name: str) -> None:
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    loss = build_loss("classifier", {name: 1.0})
    assert loss(torch.where(target > 0, BIG, -BIG), target).item() == pytest.approx(0.0, abs=1e-6)


def test_weighted_sum_of_losses() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 6, 6), (torch.rand(2, 4, 6, 6) > 0.5).float()
    combo = build_loss("seg1", {"bce": 0.3, "dice_pos": 0.7})
    expected = 0.3 * torch.nn.BCEWithLogitsLoss()(logits, target) + 0.7 * PositiveDiceLoss()(logits, target)
    assert combo(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(combo.last) == {"bce", "dice_pos"}
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in combo.last.values())
    assert combo.last_values() == pytest.approx(
        {
            "bce": float(torch.nn.BCEWithLogitsLoss()(logits, target)),
            "dice_pos": float(PositiveDiceLoss()(logits, target)),
        }
    )


def lovasz_hinge_reference(logits: list[float], labels: list[int]) -> float:
    """Berman et al. 2018, Alg. 1, in plain Python for one map: sort the hinge errors in decreasing
    order, take the gradient of the Jaccard loss along that order, dot it with the relu'd errors."""
    errors = [1 - x * (2 * y - 1) for x, y in zip(logits, labels, strict=True)]
    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    gts, seen_pos, seen_neg, previous, total = sum(labels), 0, 0, 0.0, 0.0
    for i in order:
        seen_pos, seen_neg = seen_pos + labels[i], seen_neg + 1 - labels[i]
        jaccard = 1 - (gts - seen_pos) / (gts + seen_neg)
        total += max(errors[i], 0.0) * (jaccard - previous)
        previous = jaccard
    return total


def test_lovasz_is_the_mean_of_per_class_hinges_not_one_pooled_hinge() -> None:
    import segmentation_models_pytorch as smp

    # one image, two classes of 2x2: class 0 is well predicted, class 1 is not
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -2.0]], [[-0.5, 1.5], [0.2, -0.3]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]])
    per_map = [
        lovasz_hinge_reference(logits[0, c].flatten().tolist(), target[0, c].flatten().int().tolist()) for c in range(2)
    ]
    expected = sum(per_map) / 2
    pooled = float(smp.losses.LovaszLoss("multilabel", per_image=True)(logits, target))
    assert abs(pooled - expected) > 0.05  # the example tells the two apart
    assert float(build_loss("seg1", {"lovasz": 1.0})(logits, target)) == pytest.approx(expected, rel=1e-6)


def test_lovasz_matches_the_reference_on_random_maps() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(3, 4, 5, 5), (torch.rand(3, 4, 5, 5) > 0.6).float()
    target[0, 1] = 0  # an empty map
    reference = [
        lovasz_hinge_reference(logits[b, c].flatten().tolist(), target[b, c].flatten().int().tolist())
        for b in range(3)
        for c in range(4)
    ]
    assert float(LovaszHingeLoss()(logits, target)) == pytest.approx(sum(reference) / len(reference), rel=1e-5)


def test_kl_is_bce_minus_the_target_entropy_and_zero_at_the_target() -> None:
    from cloudcli.models.losses import SoftKLLoss

    target = torch.tensor([[[[0.0, 0.25, 0.5, 1.0]]]])
    logits = torch.tensor([[[[-2.0, 0.0, 1.0, 3.0]]]])
    p, t = torch.sigmoid(logits), target
    by_hand = t * torch.log(t.clamp_min(1e-30) / p) + (1 - t) * torch.log((1 - t).clamp_min(1e-30) / (1 - p))
    assert float(SoftKLLoss()(logits, target)) == pytest.approx(float(by_hand.mean()), rel=1e-5)
    at_target = torch.logit(torch.tensor([[[[0.25, 0.5, 0.9]]]]))
    assert float(SoftKLLoss()(at_target, torch.sigmoid(at_target))) == pytest.approx(0.0, abs=1e-6)


def test_class_head_term_is_bce_of_the_head_against_class_presence() -> None:
    torch.manual_seed(0)
    masks, heads = torch.randn(2, 3, 4, 4), torch.randn(2, 3)
    target = torch.zeros(2, 3, 4, 4)
    target[0, 1, 2, 2] = 1  # image 0: class 1 present (one pixel); image 1: class 2 present
    target[1, 2] = 1
    presence = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    loss = build_loss("seg1", {"bce": 1.0, "class_head": 0.4})
    expected = torch.nn.BCEWithLogitsLoss()(masks, target) + 0.4 * torch.nn.BCEWithLogitsLoss()(heads, presence)
    assert loss((masks, heads), target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(loss.last_values()) == {"bce", "class_head"}
    perfect = torch.where(presence > 0, BIG, -BIG)  # a head that is right about presence costs nothing
    assert build_loss("seg1", {"class_head": 1.0})((masks, perfect), target).item() == pytest.approx(0, abs=1e-6)


def test_class_head_term_and_class_head_network_go_together() -> None:
    masks, target = torch.randn(1, 2, 3, 3), torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="class_head"):
        build_loss("seg1", {"bce": 1.0, "class_head": 1.0})(masks, target)
    with pytest.raises(ValueError, match="class_head"):
        build_loss("seg1", {"bce": 1.0})((masks, torch.zeros(1, 2)), target)
