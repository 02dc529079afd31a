"""Dataset kinds: chips (GeoTIFF bands) and image_mask readers on tiny hand-made files, their
errors, band scaling, and the kaggle_clouds source against the Kaggle CSV helpers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from cloudcli import CLASSES
from cloudcli.config import DataConfig
from cloudcli.data.demo_kinds import KindSpec, generate_kind, write_geotiff
from cloudcli.data.kaggle import TRAIN_CSV, presence, read_labels, to_wide
from cloudcli.data.sources import KINDS, SOURCES, default_classes, index_to_masks, open_source, scale_bands
from cloudcli.errors import ConfigError, DataError
from cloudcli.rle import decode

BANDS = ("B02", "B03", "B04", "B08")
SIZE = (4, 6)


def chips_config(raw: Path, **changes) -> DataConfig:
    base = DataConfig("chips", str(raw), SIZE, SIZE, None, BANDS, (0.0, 100.0), 0, None)
    return replace(base, **changes)


def write_chip(raw: Path, split: str, chip: str, bands: np.ndarray, label: np.ndarray | None) -> None:
    folder = raw / f"{split}_features" / chip
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(BANDS):
        write_geotiff(folder / f"{name}.tif", bands[..., k], nodata=0)
    if label is not None:
        (raw / f"{split}_labels").mkdir(exist_ok=True)
        write_geotiff(raw / f"{split}_labels" / f"{chip}.tif", label)


@pytest.fixture
def chips(tmp_path: Path) -> Path:
    """Two training chips and one test chip of 4x6 pixels; band k of chip c holds 100 * (k + 1) + 10 * c
    + pixel index, except a nodata corner in chip 'aaaa'."""
    raw = tmp_path / "raw"
    pixel = np.arange(24, dtype=np.uint16).reshape(SIZE)
    for c, (split, chip) in enumerate([("train", "aaaa"), ("train", "bbbb"), ("test", "cccc")]):
        bands = np.stack([100 * (k + 1) + 10 * c + pixel for k in range(4)], -1).astype(np.uint16)
        if chip == "aaaa":
            bands[0, 0] = 0  # nodata in every band
        label = (pixel % 3 == 0).astype(np.uint8)
        write_chip(raw, split, chip, bands, label if split == "train" else None)
    return raw


def test_chips_reader_reads_every_band_in_order(chips: Path) -> None:
    source = open_source(chips_config(chips))
    assert source.train_ids == ("aaaa", "bbbb") and source.test_ids == ("cccc",)
    assert source.classes == ("cloud",) and not source.has_test_truth
    raw = source.raw_image("train", 1)
    assert raw.dtype == np.uint16 and raw.shape == (*SIZE, 4)
    pixel = np.arange(24).reshape(SIZE)
    for k in range(4):
        np.testing.assert_array_equal(raw[..., k], 100 * (k + 1) + 10 + pixel)
    masks = source.masks("train", 0)
    assert masks.shape == (1, *SIZE) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks[0], pixel % 3 == 0)
    assert source.presence().tolist() == [[True], [True]]
    assert source.areas()[:, 0].tolist() == pytest.approx([8 / 24, 8 / 24])


def test_band_limits_are_percentiles_of_the_training_pixels_without_nodata(chips: Path) -> None:
    source = open_source(chips_config(chips, band_percentiles=(10.0, 90.0))).fit_limits()
    pixels = np.concatenate([source.raw_image("train", i).reshape(-1, 4)[::7] for i in range(2)])
    pixels = pixels[~(pixels == 0).all(1)]  # the nodata pixel of chip aaaa (it is at index 0, on the stride)
    assert len(pixels) == 2 * len(range(0, 24, 7)) - 1
    np.testing.assert_allclose(source.limits, np.percentile(pixels, [10, 90], axis=0).T)
    image = source.image("train", 0)
    assert image.dtype == np.uint8 and image[0, 0].tolist() == [0, 0, 0, 0]  # nodata stays 0
    low, high = source.limits[:, 0], source.limits[:, 1]
    raw = source.raw_image("train", 0).astype(np.float64)
    expected = np.clip(np.rint((raw - low) * 255 / (high - low)), 0, 255)
    expected[0, 0] = 0
    np.testing.assert_array_equal(image, expected)


def test_every_configurable_kind_has_a_source_class(tmp_path: Path) -> None:
    from typing import get_args, get_type_hints

    assert tuple(SOURCES) == KINDS and set(get_args(get_type_hints(DataConfig)["kind"])) == set(KINDS)
    assert all(cls.kind == kind for kind, cls in SOURCES.items())
    assert default_classes("kaggle_clouds") == CLASSES and default_classes("chips") == ("cloud",)
    assert default_classes("image_mask") == ()
    with pytest.raises(ConfigError, match="unknown dataset kind 'tiles'; choose from kaggle_clouds, chips, image_mask"):
        open_source(replace(chips_config(tmp_path), kind="tiles"))


def test_scale_bands_known_answer() -> None:
    raw = np.array([[[0, 0], [100, 300], [200, 500], [400, 50]]], np.uint16)  # (1, 4, 2)
    limits = np.array([[100.0, 300.0], [100.0, 500.0]])
    out = scale_bands(raw, limits, nodata=0)
    assert out.tolist() == [[[0, 0], [0, 128], [128, 255], [255, 0]]]  # nodata, clip, scale, clip


def test_chips_errors_name_the_file(chips: Path) -> None:
    (chips / "train_features" / "bbbb" / "B08.tif").unlink()
    with pytest.raises(DataError, match=r"bbbb/B08\.tif: band file missing"):
        open_source(chips_config(chips))
    write_geotiff(chips / "train_features" / "bbbb" / "B08.tif", np.ones((5, 6), np.uint16))
    source = open_source(chips_config(chips))
    with pytest.raises(DataError, match=r"bbbb/B08\.tif: raster is 5x6 \(HxW\), expected 4x6"):
        source.raw_image("train", 1)
    (chips / "train_features" / "bbbb" / "B08.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match=r"bbbb/B08\.tif: not a readable TIFF"):
        source.raw_image("train", 1)
    write_geotiff(chips / "train_labels" / "aaaa.tif", np.full(SIZE, 2, np.uint8))
    with pytest.raises(DataError, match=r"aaaa\.tif: label values \[2\] outside \{0, 1\}"):
        source.masks("train", 0)
    (chips / "train_labels" / "aaaa.tif").unlink()
    with pytest.raises(DataError, match=r"train_labels/aaaa\.tif: label missing"):
        open_source(chips_config(chips))
    with pytest.raises(DataError, match="raw data folder not found"):
        open_source(chips_config(chips / "nowhere"))


def test_band_file_with_two_bands_or_floats_is_refused(chips: Path) -> None:
    source = open_source(chips_config(chips))
    path = chips / "train_features" / "aaaa" / "B02.tif"
    tifffile.imwrite(path, np.ones((*SIZE, 2), np.uint16), photometric="minisblack", planarconfig="contig")
    with pytest.raises(DataError, match=r"B02\.tif: has 2 bands, expected 1"):
        source.raw_image("train", 0)
    tifffile.imwrite(path, np.ones(SIZE, np.float32))
    with pytest.raises(DataError, match=r"B02\.tif: band is float32; expected uint8 or uint16"):
        source.raw_image("train", 0)


def tiles_config(raw: Path, classes=("building", "road")) -> DataConfig:
    return DataConfig("image_mask", str(raw), SIZE, SIZE, classes, None, (1.0, 99.0), None, None)


@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    raw = tmp_path / "tiles"
    for split in ("train", "test"):
        (raw / split / "images").mkdir(parents=True)
        (raw / split / "masks").mkdir()
    image = np.zeros((*SIZE, 3), np.uint8)
    image[..., 0], image[..., 2] = 200, 10  # red, as RGB
    cv2.imwrite(str(raw / "train/images/t1.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(raw / "test/images/t2.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    mask = np.zeros(SIZE, np.uint8)
    mask[0, :3], mask[2:, 4:] = 1, 2  # 3 building pixels, 4 road pixels
    cv2.imwrite(str(raw / "train/masks/t1.png"), mask)
    return raw


def test_image_mask_reader_known_answer(tiles: Path) -> None:
    source = open_source(tiles_config(tiles))
    assert source.train_ids == ("t1",) and source.test_ids == ("t2",) and not source.has_test_truth
    image = source.image("train", 0)
    assert image.shape == (*SIZE, 3) and image[0, 0].tolist() == [200, 0, 10]  # RGB, not BGR
    masks = source.masks("train", 0)
    assert masks.shape == (2, *SIZE)
    assert masks[0].sum() == 3 and masks[0, 0, :3].all() and masks[1].sum() == 4 and masks[1, 2:, 4:].all()
    assert source.areas().tolist() == [[3 / 24, 4 / 24]]
    assert source.find("t2") == ("test", 0) and source.find("t9") is None


def test_image_mask_errors_name_the_file(tiles: Path) -> None:
    with pytest.raises(DataError, match=r"t1\.png: label values \[2\] outside \{0, 1\} \(or \{0, 255\}\)"):
        open_source(tiles_config(tiles, ("building",))).masks("train", 0)
    cv2.imwrite(str(tiles / "train/masks/t1.png"), np.full((*SIZE, 3), 1, np.uint8))
    with pytest.raises(DataError, match=r"t1\.png: mask has 3 channels"):
        open_source(tiles_config(tiles)).masks("train", 0)
    (tiles / "train/masks/t1.png").unlink()
    with pytest.raises(DataError, match=r"train/masks/t1\.\*: file missing"):
        open_source(tiles_config(tiles))
    (tiles / "train/images/t1.png").write_bytes(b"broken")
    (tiles / "train/masks/t1.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"t1\.png: cannot read image"):
        open_source(tiles_config(tiles)).image("train", 0)


def test_index_masks_accept_0_255_for_one_class() -> None:
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    assert index_to_masks(mask, Path("m.png"), 1).tolist() == [[[0, 1], [1, 0]]]
    with pytest.raises(DataError, match=r"m\.png: label values \[255\] outside 0\.\.2"):
        index_to_masks(mask, Path("m.png"), 2)


def test_kaggle_source_matches_the_csv_helpers(tiny_demo: Path) -> None:
    data = DataConfig("kaggle_clouds", str(tiny_demo), (64, 96), (32, 48), None, None, (1.0, 99.0), None, None)
    source = open_source(data)
    wide = to_wide(read_labels(tiny_demo / TRAIN_CSV, (64, 96), CLASSES), CLASSES)
    assert source.classes == CLASSES and source.train_ids == tuple(wide.index) and source.has_test_truth
    np.testing.assert_array_equal(source.presence(), presence(wide, CLASSES))
    masks = source.masks("train", 3)
    expected = np.stack([decode(r, (64, 96)) for r in wide.iloc[3]])
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_allclose(source.areas()[3], expected.reshape(4, -1).mean(1))
    assert source.image("train", 0).shape == (64, 96, 3)


def digest(folder: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("kind", ["chips", "image_mask"])
def test_demo_generators_are_deterministic_and_readable(kind: str, tmp_path: Path) -> None:
    spec = KindSpec(n_train=6, n_test=2, seed=3, height=32, width=32)
    generate_kind(kind, tmp_path / "a", spec, workers=1)
    generate_kind(kind, tmp_path / "b", spec, workers=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    if kind == "chips":
        data = chips_config(tmp_path / "a", raw_size=(32, 32), score_size=(32, 32), band_percentiles=(1.0, 99.0))
        meta = pd.read_csv(tmp_path / "a" / "train_metadata.csv")
        assert list(meta.columns) == ["chip_id", "location", "datetime"] and len(meta) == 6
        tif = tifffile.TiffFile(tmp_path / "a" / "train_features" / meta["chip_id"][0] / "B02.tif")
        assert tif.pages[0].dtype == np.uint16 and tif.geotiff_metadata is not None  # a GeoTIFF
    else:
        data = tiles_config(tmp_path / "a", ("building",))
        data = replace(data, raw_size=(32, 32), score_size=(32, 32))
    source = open_source(data).fit_limits()
    assert len(source.train_ids) == 6 and len(source.test_ids) == 2 and source.has_test_truth
    assert source.image("test", 1).dtype == np.uint8 and source.masks("test", 1).shape == (1, 32, 32)
    with pytest.raises(DataError, match="not empty; pass --force"):
        generate_kind(kind, tmp_path / "a", spec, workers=1)


def test_mixed_bit_depths_and_bad_test_truth_are_errors(chips: Path, tiny_demo: Path, tmp_path: Path) -> None:
    for k, name in enumerate(BANDS):  # chip aaaa (the first) becomes 8-bit
        write_geotiff(chips / "train_features" / "aaaa" / f"{name}.tif", np.full(SIZE, 10 + k, np.uint8))
    source = open_source(chips_config(chips)).fit_limits()
    assert source.limits is None and source.image("train", 0)[0, 0].tolist() == [10, 11, 12, 13]
    with pytest.raises(DataError, match="train image bbbb is uint16, the first training image 8-bit"):
        source.image("train", 1)
    raw = tmp_path / "kaggle"
    import shutil

    shutil.copytree(tiny_demo, raw)
    truth = pd.read_csv(raw / "test_truth.csv")
    first = truth["Image_Label"].iloc[0].rsplit("_", 1)[0]
    truth[~truth["Image_Label"].str.startswith(first)].to_csv(raw / "test_truth.csv", index=False)
    data = DataConfig("kaggle_clouds", str(raw), (64, 96), (32, 48), None, None, (1.0, 99.0), None, None)
    with pytest.raises(DataError, match=rf"test_truth\.csv: no labels for {re.escape(first)}"):
        open_source(data)
