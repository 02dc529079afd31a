import random

import numpy as np
import pytest
import torch

from cloudcli.config import AugmentConfig
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.data.dataset import CacheDataset, NoSingletonBatchSampler, ShardSampler, build_transform

NO_AUG = AugmentConfig(0, 0, 0, 0.1, 0.1, 10, 0, 0)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def dataset(tiny_cache, aug, **kw) -> CacheDataset:
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    labels = cache.train.drop(columns="image_id").to_numpy()
    return CacheDataset(
        cache.path("train_images"),
        np.arange(len(labels)),
        labels,
        build_transform(aug, (32, 64), (32, 64), MEAN, STD),
        **kw,
    )


def test_item_is_normalised_image_masks_and_labels(tiny_cache) -> None:
    ds = dataset(tiny_cache, None)
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    item = ds[3]
    image = cache.array("train_images")[3].astype(np.float32) / 255
    np.testing.assert_allclose(item["image"].numpy(), ((image - 0.5) / 0.25).transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_array_equal(item["masks"].numpy(), unpack_masks(cache.array("train_masks")[3], 4))
    assert item["labels"].tolist() == cache.train.iloc[3, 1:].astype(float).tolist() and item["index"] == 3


def test_flip_moves_image_and_masks_together(tiny_cache) -> None:
    plain, flipped = dataset(tiny_cache, None)[5], dataset(tiny_cache, AugmentConfig(1, 0, 0, 0.1, 0.1, 10, 0, 0))[5]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(flipped["masks"], plain["masks"].flip(-1))


def test_augmentation_is_a_function_of_seed_epoch_and_index(tiny_cache) -> None:
    aug = AugmentConfig(0.5, 0.5, 1.0, 0.1, 0.1, 15, 0.5, 0.5)
    a, b = dataset(tiny_cache, aug, seed=1), dataset(tiny_cache, aug, seed=1)
    _ = b[0], b[7]  # other items drawn first must not matter
    assert torch.equal(a[2]["image"], b[2]["image"]) and torch.equal(a[2]["masks"], b[2]["masks"])
    b.set_epoch(1)
    assert not torch.equal(a[2]["image"], b[2]["image"])


def test_each_transform_draws_on_its_own(tiny_cache) -> None:
    """hflip and vflip at 0.5 each: all four combinations occur (one seed per transform made them
    fire together, so training saw hvflip but never hflip or vflip alone)."""
    plain, ds = dataset(tiny_cache, None), dataset(tiny_cache, AugmentConfig(0.5, 0.5, 0, 0.1, 0.1, 10, 0, 0))
    views = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, image = plain[i]["image"], ds[i]["image"]
            views |= {name for name, y in VIEWS.items() if torch.equal(image, y(x))}
    assert views == set(VIEWS)


VIEWS = {
    "none": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "hv": lambda x: x.flip(-2, -1),
}


def square_sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return np.arange(48, dtype=np.uint8).reshape(4, 4, 3), rng.integers(0, 2, (4, 4, 2), dtype=np.uint8)


def test_transpose_moves_image_and_masks_together() -> None:
    image, masks = square_sample()
    aug = AugmentConfig(0, 0, 0, 0.1, 0.1, 10, 0, 0, transpose=1.0)
    out = build_transform(aug, (4, 4), (4, 4), (0, 0, 0), (1, 1, 1))(image=image, mask=masks)
    np.testing.assert_allclose(out["image"].numpy(), image.transpose(2, 1, 0) / 255, atol=1e-6)  # (C, W, H)
    np.testing.assert_array_equal(out["mask"].numpy(), masks.transpose(2, 1, 0))


def test_rotate90_turns_image_and_masks_by_the_same_quarter_turns() -> None:
    image, masks = square_sample()
    transform = build_transform(
        AugmentConfig(0, 0, 0, 0.1, 0.1, 10, 0, 0, rotate90=1.0), (4, 4), (4, 4), (0,) * 3, (1,) * 3
    )
    turns = []
    for seed in range(40):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = transform(image=image, mask=masks)
        got = (out["image"].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)
        (k,) = [k for k in range(4) if np.array_equal(got, np.rot90(image, k))]
        np.testing.assert_array_equal(out["mask"].numpy(), np.rot90(masks, k).transpose(2, 0, 1))
        turns.append(k)
    assert set(turns) == {0, 1, 2, 3}


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (5, 1)])
def test_shards_cover_every_item_once(n: int, world: int) -> None:
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            sampler = ShardSampler(n, rank, world, shuffle=True, seed=3)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler)
        assert sorted(i for shard in shards for i in shard) == list(range(n))
    s0, s1 = ShardSampler(n, 0, world, True, 3), ShardSampler(n, 0, world, True, 3)
    s1.set_epoch(1)
    assert n < 3 or list(s0) != list(s1)  # reshuffled each epoch


@pytest.mark.parametrize(("n", "batch", "sizes"), [(9, 4, [4, 5]), (8, 4, [4, 4]), (10, 4, [4, 4, 2]), (1, 4, [1])])
def test_a_singleton_tail_joins_the_previous_batch(n: int, batch: int, sizes: list) -> None:
    batches = list(NoSingletonBatchSampler(ShardSampler(n, shuffle=False), batch))
    assert [len(b) for b in batches] == sizes and len(NoSingletonBatchSampler(ShardSampler(n), batch)) == len(sizes)
    assert sorted(i for b in batches for i in b) == list(range(n))


def test_soft_targets_are_read_as_probabilities(tiny_cache, tmp_path) -> None:
    """A soft-label file (K, C, h, w) uint8 p * 255 comes out as masks in 0..1, augmented with the image."""
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    h, w = cache.test_size
    soft = np.zeros((2, 4, h, w), np.uint8)
    soft[0, 1, :, : w // 2] = 51  # p = 0.2 on the left half of class 1
    soft[1, 3] = 255
    np.save(tmp_path / "soft.npy", soft)
    transform = build_transform(None, (h, w), (h, w), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    ds = CacheDataset(
        cache.path("test_images"), np.array([0, 1]), np.array([[0, 1, 0, 0], [0, 0, 0, 1]]), transform,
        masks=tmp_path / "soft.npy", mask_rows=np.array([0, 1]), soft=True,
    )  # fmt: skip
    first, second = ds[0]["masks"], ds[1]["masks"]
    assert first.shape == (4, h, w) and float(first[1, :, : w // 2].min()) == pytest.approx(0.2)
    assert float(first[1, :, w // 2 :].max()) == 0.0 and float(first.sum()) == pytest.approx(0.2 * h * (w // 2))
    assert float(second[3].min()) == 1.0 and float(second[:3].max()) == 0.0
