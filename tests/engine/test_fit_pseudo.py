"""Training with a pseudo-labelled set: test images join the training part of a fold, never its validation."""

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cloudcli import CLASSES
from cloudcli.config import AugmentConfig, load_params, resolve_model
from cloudcli.data.cache import open_cache, pack_masks, unpack_masks
from cloudcli.data.dataset import CacheDataset, ConcatWithEpoch
from cloudcli.data.pseudo import read_pseudo
from cloudcli.engine.distributed import Context
from cloudcli.engine.loaders import build_loaders, pseudo_set, split_indices
from cloudcli.errors import DataError
from cloudcli.models.factory import normalization
from cloudcli.stages import train

NO_AUG = AugmentConfig(0, 0, 0, 0.1, 0.1, 10, 0, 0)  # every transform's probability 0
CPU = Context(0, 1, torch.device("cpu"))
TEST_ROWS = [5, 0, 3, 2]  # cache test rows of the pseudo-labelled images, not in order


def set_sha1(folder) -> str:
    """The set's fingerprint: meta.json, images.csv and the masks themselves."""
    return hashlib.sha1(
        b"".join((folder / f).read_bytes() for f in ("meta.json", "images.csv", "masks.npy"))
    ).hexdigest()


def cache_of(tiny_cache: Path):
    return open_cache(tiny_cache / "artifacts/preprocessed")


def spec_of(tiny_cache: Path, model: str = "seg1", **train_changes):
    p = load_params(tiny_cache / "params.yaml")
    spec = resolve_model(model, p.network, p.train, p.models)
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, **train_changes))


def write_pseudo(folder: Path, ids: list[str], test_rows: list[int], masks: np.ndarray) -> pd.DataFrame:
    """A pseudo-labelled set in the format cloudcli.data.pseudo documents; masks (K, 4, h, w) 0/1."""
    folder.mkdir(parents=True, exist_ok=True)
    presence = masks.any((2, 3)).astype(int)
    images = pd.DataFrame({"image_id": ids, "test_row": test_rows}).assign(
        **{c: presence[:, k] for k, c in enumerate(CLASSES)}, confidence=0.1
    )
    images.to_csv(folder / "images.csv", index=False)
    np.save(folder / "masks.npy", pack_masks(masks))
    (folder / "meta.json").write_text(json.dumps({"rule": "classifier", "images": len(ids)}))
    return images


def pseudo_masks(shape: tuple[int, int], k: int = len(TEST_ROWS)) -> np.ndarray:
    """(k, 4, h, w): rectangles of a few classes each, image 1 with none at all."""
    rng = np.random.default_rng(3)
    masks = np.zeros((k, 4, *shape), np.uint8)
    for i in range(k):
        if i == 1:
            continue
        for c in rng.choice(4, rng.integers(1, 4), replace=False):
            y, x = rng.integers(0, shape[0] // 2), rng.integers(0, shape[1] // 2)
            masks[i, c, y : y + rng.integers(3, shape[0] // 2), x : x + rng.integers(3, shape[1] // 2)] = 1
    return masks


@pytest.fixture
def pseudo_dir(tiny_cache, tmp_path) -> tuple[Path, pd.DataFrame, np.ndarray]:
    cache = cache_of(tiny_cache)
    h, w = cache.test_size
    ids = [cache.test["image_id"][r] for r in TEST_ROWS]
    masks = pseudo_masks((h, w))
    folder = tmp_path / "pseudo"
    return folder, write_pseudo(folder, ids, TEST_ROWS, masks), masks


def normalised(image: np.ndarray, spec) -> np.ndarray:
    mean, std = normalization(spec.network)
    return ((image.astype(np.float32) / 255 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_pseudo_images_join_training_and_never_validation(tiny_cache, pseudo_dir, fold: int) -> None:
    folder, images, masks = pseudo_dir
    cache, spec = cache_of(tiny_cache), spec_of(tiny_cache)
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), tiny_cache / "artifacts/folds.csv", fold)
    folds = pd.read_csv(tiny_cache / "artifacts/folds.csv", dtype={"image_id": str}).set_index("image_id")["fold"]
    assert (folds.loc[cache.train["image_id"].iloc[valid_idx]] == fold).all()
    pseudo = pseudo_set(folder, cache)
    train_loader, valid_loader = build_loaders(spec, NO_AUG, cache, train_idx, valid_idx, CPU, pseudo)

    # validation: exactly the fold's training-image rows, from train_images and train_masks
    valid = valid_loader.dataset
    assert (
        isinstance(valid, CacheDataset) and valid.images_file == cache.path("train_images") and valid.mask_rows is None
    )
    assert valid.masks_file == cache.path("train_masks")
    np.testing.assert_array_equal(valid.indices, valid_idx)
    seen = torch.cat([b["index"] for b in valid_loader]).numpy()
    assert sorted(seen) == sorted(valid_idx)
    assert not set(cache.train["image_id"].iloc[seen]) & set(images["image_id"])
    train_images = cache.array("train_images")
    for j in range(len(valid)):
        item = valid[j]
        np.testing.assert_allclose(item["image"].numpy(), normalised(train_images[valid_idx[j]], spec), atol=1e-5)

    # training: the fold's training rows, then the K pseudo-labelled test images with their own masks
    data = train_loader.dataset
    assert isinstance(data, ConcatWithEpoch) and len(data) == len(train_idx) + len(images)
    assert len(train_loader.batch_sampler.sampler) == len(train_idx) + len(images)
    n = len(train_idx)
    for j in (0, n - 1):
        assert data[j]["index"] == train_idx[j]
    test_images = cache.array("test_images")
    for j in range(len(images)):
        item = data[n + j]
        assert item["index"] == TEST_ROWS[j]
        np.testing.assert_allclose(item["image"].numpy(), normalised(test_images[TEST_ROWS[j]], spec), atol=1e-5)
        np.testing.assert_array_equal(item["masks"].numpy(), masks[j])
        np.testing.assert_array_equal(item["masks"].numpy(), unpack_masks(np.load(folder / "masks.npy")[j], 4))
        assert item["labels"].tolist() == images.loc[j, list(CLASSES)].astype(float).tolist()
    assert masks[1].sum() == 0 and data[n + 1]["labels"].sum() == 0  # an image with no cloud is a label too

    data.set_epoch(3)
    assert [part.epoch for part in data.datasets] == [3, 3]


def test_classifier_training_reads_pseudo_labels_without_masks(tiny_cache, pseudo_dir) -> None:
    folder, images, _ = pseudo_dir
    cache, spec = cache_of(tiny_cache), spec_of(tiny_cache, "classifier")
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), tiny_cache / "artifacts/folds.csv", 0)
    train_loader, _ = build_loaders(spec, NO_AUG, cache, train_idx, valid_idx, CPU, pseudo_set(folder, cache))
    item = train_loader.dataset[len(train_idx) + 2]
    assert "masks" not in item and item["index"] == TEST_ROWS[2]
    assert item["labels"].tolist() == images.loc[2, list(CLASSES)].astype(float).tolist()


def test_empty_pseudo_set_adds_nothing(tiny_cache, tmp_path) -> None:
    cache, spec = cache_of(tiny_cache), spec_of(tiny_cache)
    h, w = cache.test_size
    write_pseudo(tmp_path / "empty", [], [], np.zeros((0, 4, h, w), np.uint8))
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), tiny_cache / "artifacts/folds.csv", 0)
    pseudo = pseudo_set(tmp_path / "empty", cache)
    train_loader, _ = build_loaders(spec, NO_AUG, cache, train_idx, valid_idx, CPU, pseudo)
    assert len(train_loader.dataset) == len(train_idx)


def test_training_images_in_a_pseudo_set_are_refused(tiny_cache, pseudo_dir, tmp_path) -> None:
    folder, _, masks = pseudo_dir
    cache = cache_of(tiny_cache)
    assert len(pseudo_set(folder, cache).images) == len(TEST_ROWS)
    train_id = cache.train["image_id"][4]
    test = cache.test.copy()
    test.loc[TEST_ROWS[0], "image_id"] = train_id  # a cache whose test list holds a training image
    clashing = dataclasses.replace(cache)
    clashing.__dict__["test"] = test  # the test list is read lazily (a cached property): set it
    ids = [test["image_id"][r] for r in TEST_ROWS]
    write_pseudo(tmp_path / "clash", ids, TEST_ROWS, masks)
    assert len(read_pseudo(tmp_path / "clash", list(test["image_id"]), masks.shape[2:], CLASSES).images) == len(
        TEST_ROWS
    )
    with pytest.raises(DataError, match=re.escape(f"1 images are training images (e.g. {train_id})")):
        pseudo_set(tmp_path / "clash", clashing)


def test_read_pseudo_checks_the_set_against_the_cache(tiny_cache, pseudo_dir, tmp_path) -> None:
    folder, images, masks = pseudo_dir
    cache = cache_of(tiny_cache)
    test_ids, size = list(cache.test["image_id"]), tuple(cache.test_size)
    good = read_pseudo(folder, test_ids, size, CLASSES)
    assert good.masks.shape == (len(TEST_ROWS), *size)
    assert good.sha1 == set_sha1(folder)
    np.testing.assert_array_equal(good.labels, masks.any((2, 3)))

    def broken(name: str, rows=TEST_ROWS, mask_stack=None) -> Path:
        write_pseudo(tmp_path / name, [test_ids[r] for r in TEST_ROWS], rows, masks)
        if mask_stack is not None:
            np.save(tmp_path / name / "masks.npy", pack_masks(mask_stack))
        return tmp_path / name

    h, w = size
    cases = {
        "masks.npy: shape": [
            broken("small", mask_stack=masks[..., : h // 2, : w // 2]),  # another image size
            broken("few", mask_stack=masks[:-1]),  # one mask short
            broken("many", mask_stack=np.concatenate([masks, masks[:1]])),
        ],
        "test_row does not match": [
            broken("swapped", rows=[TEST_ROWS[1], TEST_ROWS[0], *TEST_ROWS[2:]]),
            broken("past_end", rows=[*TEST_ROWS[:-1], len(test_ids)]),
            broken("negative", rows=[-1, *TEST_ROWS[1:]]),
        ],
    }
    for message, folders in cases.items():
        for f in folders:
            with pytest.raises(DataError, match=re.escape(message)):
                read_pseudo(f, test_ids, size, CLASSES)
    (tmp_path / "swapped/images.csv").unlink()
    with pytest.raises(DataError, match=r"images\.csv: missing"):
        read_pseudo(tmp_path / "swapped", test_ids, size, CLASSES)
    images.drop(columns="Sugar").to_csv(tmp_path / "past_end/images.csv", index=False)
    with pytest.raises(DataError, match="no column Sugar"):
        read_pseudo(tmp_path / "past_end", test_ids, size, CLASSES)


def test_a_tiny_training_run_records_the_pseudo_set(tiny_cache, pseudo_dir, tmp_path) -> None:
    folder, images, _ = pseudo_dir
    p = load_params(tiny_cache / "params.yaml")
    spec = spec_of(tiny_cache, epochs=1, batch_size=32)  # one step: stays fast on a busy CPU
    train.run(
        spec,
        p.augment,
        tiny_cache / "artifacts/preprocessed",
        tiny_cache / "artifacts/folds.csv",
        0,
        tmp_path / "ckpt",
        tmp_path / "live",
        pseudo=folder,
    )
    config = json.loads((tmp_path / "ckpt/config.json").read_text())
    assert config["pseudo"] == {"folder": str(folder), "images": len(images), "sha1": set_sha1(folder)}
    samples = json.loads((tmp_path / "live/metrics.json").read_text())["train"]["samples"]
    assert samples == config["n_train"] + len(images)  # every training and pseudo-labelled image once


EXCLUDED_ROWS = [7, 2, 13]  # cache training rows data.exclude leaves out, relabelled; not in order


def write_mixed(folder: Path, cache, masks: np.ndarray) -> pd.DataFrame:
    """A set with pseudo.sources [test, excluded]: two test images, then the excluded training
    images, then one more test image; masks (K, 4, h, w) 0/1."""
    test_ids, train_ids = cache.test["image_id"], cache.train["image_id"]
    entries = [("test", 5), ("test", 0), *(("excluded", r) for r in EXCLUDED_ROWS), ("test", 3)]
    ids = [(test_ids if s == "test" else train_ids)[r] for s, r in entries]
    images = write_pseudo(folder, ids, [r for _, r in entries], masks)
    images = images.rename(columns={"test_row": "cache_row"})
    images.insert(1, "source", [s for s, _ in entries])
    images.to_csv(folder / "images.csv", index=False)
    return images


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_relabelled_excluded_images_train_and_never_validate(tiny_cache, tmp_path, fold: int) -> None:
    """pseudo.sources [test, excluded]: fold k's loaders train on its training rows, the set's test
    images (from test_images) and its relabelled training images (from train_images, with the set's
    masks and labels, not their own); validation is the fold's other rows, none of them relabelled."""
    cache, spec = cache_of(tiny_cache), spec_of(tiny_cache)
    table = pd.read_csv(tiny_cache / "artifacts/folds.csv", dtype={"image_id": str})
    out_ids = set(cache.train["image_id"].iloc[EXCLUDED_ROWS])
    table.assign(excluded=table["image_id"].isin(out_ids).astype(int)).to_csv(tmp_path / "folds.csv", index=False)
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), tmp_path / "folds.csv", fold)
    masks = pseudo_masks(cache.test_size, 6)
    images = write_mixed(tmp_path / "set", cache, masks)
    pseudo = pseudo_set(tmp_path / "set", cache)
    train_loader, valid_loader = build_loaders(spec, NO_AUG, cache, train_idx, valid_idx, CPU, pseudo)

    seen = torch.cat([b["index"] for b in valid_loader]).numpy()
    assert sorted(seen) == sorted(valid_idx) and not set(seen) & set(EXCLUDED_ROWS)
    folds = table.set_index("image_id")["fold"].loc[cache.train["image_id"]].to_numpy()
    assert sorted(valid_idx) == [r for r in np.flatnonzero(folds == fold) if r not in EXCLUDED_ROWS]

    data, n = train_loader.dataset, len(train_idx)
    assert [len(d) for d in data.datasets] == [n, 3, 3] and not set(train_idx) & set(EXCLUDED_ROWS)
    assert [d.images_file for d in data.datasets[1:]] == [cache.path("test_images"), cache.path("train_images")]
    expected = [
        ("test", 5, 0),
        ("test", 0, 1),
        ("test", 3, 5),
        *(("train", r, 2 + j) for j, r in enumerate(EXCLUDED_ROWS)),
    ]
    for j, (part, row, at) in enumerate(expected):
        item = data[n + j]
        assert item["index"] == row
        np.testing.assert_allclose(
            item["image"].numpy(), normalised(cache.array(f"{part}_images")[row], spec), atol=1e-5
        )
        np.testing.assert_array_equal(item["masks"].numpy(), masks[at])  # the set's labels, not the cache's
        assert item["labels"].tolist() == images.loc[at, list(CLASSES)].astype(float).tolist()


def test_relabelled_images_that_would_validate_are_refused(tiny_cache, tmp_path) -> None:
    """A set of relabelled images whose folds table no longer marks them excluded: an error, not a
    training that validates on images it trains on."""
    cache, spec = cache_of(tiny_cache), spec_of(tiny_cache)
    write_mixed(tmp_path / "set", cache, pseudo_masks(cache.test_size, 6))
    folds = pd.read_csv(tiny_cache / "artifacts/folds.csv", dtype={"image_id": str})
    fold = int(folds.set_index("image_id")["fold"][cache.train["image_id"][EXCLUDED_ROWS[0]]])
    train_idx, valid_idx = split_indices(list(cache.train["image_id"]), tiny_cache / "artifacts/folds.csv", fold)
    with pytest.raises(
        DataError, match=r"set/images.csv: 1 relabelled images are validation images of the fold \(e.g. row 7"
    ):
        build_loaders(spec, NO_AUG, cache, train_idx, valid_idx, CPU, pseudo_set(tmp_path / "set", cache))
    bad = pd.read_csv(tmp_path / "set/images.csv").assign(
        cache_row=lambda t: t["cache_row"].where(t["source"] == "test", 0)
    )
    bad.to_csv(tmp_path / "set/images.csv", index=False)
    with pytest.raises(DataError, match=r"cache_row does not match the cache's training images \(source excluded\)"):
        pseudo_set(tmp_path / "set", cache)
