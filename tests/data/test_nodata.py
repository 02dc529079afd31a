"""data.nodata on a chips dataset: the cache marks the pixels with data at both sizes, truth holds
no class where there is none, and the dataset moves the valid mask with the masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cloudcli.config import load_params
from cloudcli.config.presets import preset_params
from cloudcli.data.cache import open_cache, resize_mask, unpack_masks
from cloudcli.data.dataset import CacheDataset, build_transform
from cloudcli.data.demo_kinds import KindSpec, generate_kind, write_geotiff
from cloudcli.data.sources import open_source
from cloudcli.stages import preprocess

RAW, CACHE, SCORE = 64, 32, 48  # sizes: raw chips, cache, scoring


def chips_cache(root: Path, nodata: int | None) -> tuple:
    """A tiny chips demo with a no-data corner on chip 0 and a wedge of cloud under it, preprocessed."""
    generate_kind("chips", root / "data_chips", KindSpec(6, 2, 3, RAW, RAW), workers=1)
    features = root / "data_chips/train_features"
    chip = sorted(p.name for p in features.iterdir())[0]
    import tifffile

    for band in ("B02", "B03", "B04", "B08"):
        values = tifffile.imread(features / chip / f"{band}.tif")
        values[:24, :40] = 0
        write_geotiff(features / chip / f"{band}.tif", values, nodata=0)
    label = np.zeros((RAW, RAW), np.uint8)
    label[:40, :] = 1  # cloud in and out of the no-data corner
    write_geotiff(root / "data_chips/train_labels" / f"{chip}.tif", label)
    params = preset_params("chips")
    params["data"].update(raw_size=[RAW, RAW], score_size=[SCORE, SCORE], nodata=nodata)
    params["preprocess"].update(cache_size=[CACHE, CACHE], workers=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = load_params(root / "params.yaml")
    preprocess.run(p.data, p.preprocess, root / "cache", root / "metrics.json")
    return p, open_cache(root / "cache")


@pytest.fixture(scope="module")
def nodata_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("nodata")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield chips_cache(root, 0)


def test_cache_marks_pixels_with_data_at_both_sizes_and_truth_has_no_class_without(nodata_cache) -> None:
    p, cache = nodata_cache
    source = open_source(p.data)
    assert cache.has_valid and cache.valid("train").shape == (6, SCORE, SCORE)
    for part, n in (("train", 6), ("test", 2)):
        for i in range(n):
            raw = source.raw_image(part, i)
            valid = (~(raw == 0).all(-1)).astype(np.uint8)
            np.testing.assert_array_equal(cache.valid(part, score=False)[i], resize_mask(valid, (CACHE, CACHE)))
            np.testing.assert_array_equal(cache.valid(part)[i], resize_mask(valid, (SCORE, SCORE)))
    valid = cache.valid("train")[0]
    assert valid.sum() < SCORE * SCORE  # the corner
    truth = unpack_masks(cache.array("train_truth")[0], 1)[0]
    full = resize_mask(source.masks("train", 0)[0], (SCORE, SCORE))
    np.testing.assert_array_equal(truth, full * valid)
    assert (full * (1 - valid)).any()  # there was cloud under the corner


def test_dataset_yields_the_valid_mask_moved_with_the_masks(nodata_cache) -> None:
    p, cache = nodata_cache
    labels = cache.train[list(cache.classes)].to_numpy()
    plain = build_transform(None, (CACHE, CACHE), (CACHE, CACHE), (0.0,) * 4, (1.0,) * 4)
    ds = CacheDataset(cache.path("train_images"), np.arange(6), labels, plain, valid=cache.path("train_valid"))
    item = ds[0]
    np.testing.assert_array_equal(item["valid"][0].numpy(), cache.valid("train", score=False)[0])
    np.testing.assert_array_equal(item["masks"].numpy(), unpack_masks(cache.array("train_masks")[0], 1))
    aug = p.augment.__class__(**{**p.augment.__dict__, "hflip": 1.0, "vflip": 0.0, "transpose": 0.0,
                                 "rotate90": 0.0, "shift_scale_rotate": 0.0, "grid_distortion": 0.0})  # fmt: skip
    flipped = CacheDataset(
        cache.path("train_images"), np.arange(6), labels,
        build_transform(aug, (CACHE, CACHE), (CACHE, CACHE), (0.0,) * 4, (1.0,) * 4),
        valid=cache.path("train_valid"),
    )[0]  # fmt: skip
    np.testing.assert_array_equal(flipped["valid"].numpy(), item["valid"].numpy()[..., ::-1])
    np.testing.assert_array_equal(flipped["masks"].numpy(), item["masks"].numpy()[..., ::-1])
    classifier = CacheDataset(cache.path("train_images"), np.arange(6), labels, plain, with_masks=False,
                              valid=cache.path("train_valid"))  # fmt: skip
    assert "valid" not in classifier[0]


def test_without_nodata_the_cache_has_no_valid_arrays(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _, cache = chips_cache(tmp_path, None)
    assert not cache.has_valid and cache.valid("train") is None
    assert not list((tmp_path / "cache").glob("*/valid*.npy"))
