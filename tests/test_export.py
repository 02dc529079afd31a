"""export-masks: a Kaggle-format CSV -> one label raster per image (On Cloud N: <chip_id>.tif)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import rasterio
import tifffile
import yaml
from helpers import cloudcli
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from cloudcli.config.presets import preset_params
from cloudcli.data.cache import resize_mask
from cloudcli.errors import DataError
from cloudcli.export import Images, export_masks, geo_note, label_name, label_raster
from cloudcli.rle import encode

SIZE = (6, 8)
UTM = "EPSG:32633"
ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_600_000.0)  # 10 m pixels from the top-left corner
BANDS = ("B02", "B03")


def write_masks_csv(path, masks: dict[str, np.ndarray], classes: tuple[str, ...]) -> None:
    rows = [(f"{i}_{c}", encode(m[k])) for i, m in masks.items() for k, c in enumerate(classes)]
    pd.DataFrame(rows, columns=["Image_Label", "EncodedPixels"]).to_csv(path, index=False)


def write_chip(folder, bands, size, crs: str | None = UTM, transform: Affine = ORIGIN) -> None:
    """A chip folder of uint16 band GeoTIFFs written by rasterio; `crs=None`: no geo tags."""
    folder.mkdir(parents=True)
    for band in bands:
        if crs is None:
            tifffile.imwrite(folder / f"{band}.tif", np.full(size, 1000, np.uint16))
            continue
        profile = {"height": size[0], "width": size[1], "count": 1, "dtype": "uint16"}
        with rasterio.open(folder / f"{band}.tif", "w", "GTiff", crs=crs, transform=transform, **profile) as dst:
            dst.write(np.full(size, 1000, np.uint16), 1)


def random_masks(ids, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: (rng.random((1, *SIZE)) > 0.6).astype(np.uint8) for i in ids}


def test_label_raster_known_answer_first_class_wins_where_masks_overlap() -> None:
    a = np.array([[1, 1, 0], [0, 0, 0]])
    b = np.array([[0, 1, 1], [0, 0, 1]])
    label, overlap = label_raster(np.stack([a, b]))
    assert label.dtype == np.uint8 and label.tolist() == [[1, 1, 2], [0, 0, 2]] and overlap == 1
    label, overlap = label_raster(np.zeros((1, 2, 2), np.uint8))
    assert label.tolist() == [[0, 0], [0, 0]] and overlap == 0


def test_label_names_drop_the_image_suffix() -> None:
    assert label_name("0011165.jpg", "png") == "0011165.png" and label_name("abcd", "tif") == "abcd.tif"
    assert label_name("tile_0001.PNG", "tif") == "tile_0001.tif"


def test_chips_round_trip_as_on_cloud_n_label_tiffs(tmp_path) -> None:
    rng = np.random.default_rng(0)
    masks = {f"chip{i}": (rng.random((1, *SIZE)) > 0.6).astype(np.uint8) for i in range(3)}
    masks["clear"] = np.zeros((1, *SIZE), np.uint8)
    write_masks_csv(tmp_path / "sub.csv", masks, ("cloud",))
    done = export_masks(tmp_path / "sub.csv", tmp_path / "out", ("cloud",), SIZE, SIZE, "tif")
    assert done == {"images": 4, "size": list(SIZE), "overlap_pixels": 0, "not_found": 4, "no_crs": 0}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["chip0.tif", "chip1.tif", "chip2.tif", "clear.tif"]
    for chip, m in masks.items():
        label = tifffile.imread(tmp_path / "out" / f"{chip}.tif")
        assert label.dtype == np.uint8 and label.shape == SIZE and np.array_equal(label, m[0])


def test_labels_upsampled_to_the_full_size_and_written_as_png(tmp_path) -> None:
    classes = ("building", "road")
    building = np.zeros(SIZE, np.uint8)
    building[:3, :4] = 1
    road = np.zeros(SIZE, np.uint8)
    road[2:, 3:] = 1  # overlaps the building at (2, 3)
    write_masks_csv(tmp_path / "sub.csv", {"t1.png": np.stack([building, road])}, classes)
    done = export_masks(tmp_path / "sub.csv", tmp_path / "out", classes, SIZE, (12, 16), "png")
    assert done["overlap_pixels"] == 4  # one pixel at 6x8, four at 12x16
    label = cv2.imread(str(tmp_path / "out/t1.png"), cv2.IMREAD_UNCHANGED)
    want = np.where(building == 1, 1, np.where(road == 1, 2, 0)).astype(np.uint8)
    assert label.shape == (12, 16) and np.array_equal(label, want.repeat(2, axis=0).repeat(2, axis=1))


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("Image_Label,EncodedPixels\na_cloud,1 3\na_cloud,1 3\n", "line 3: duplicate label a_cloud"),
        ("Image_Label,EncodedPixels\na_cloud,47 5\n", r"line 2 \(a_cloud\): malformed RLE"),
        ("Image_Label,EncodedPixels\na_cirrus,1 3\n", "unknown class in 'a_cirrus'"),
        ("id,mask\na,1\n", "expected header"),
    ],
)
def test_bad_csv_names_the_line_and_writes_nothing(tmp_path, csv: str, message: str) -> None:
    (tmp_path / "sub.csv").write_text(csv)
    with pytest.raises(DataError, match=message):
        export_masks(tmp_path / "sub.csv", tmp_path / "out", ("cloud",), SIZE, SIZE, "tif")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_cli_uses_the_params_classes_and_raw_size(tmp_path) -> None:
    params = preset_params("chips")
    params["data"].update(raw_size=[12, 16], score_size=list(SIZE))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cloud = np.zeros((1, *SIZE), np.uint8)
    cloud[0, 1:4, 2:5] = 1
    write_masks_csv(tmp_path / "submission.csv", {"abcd": cloud}, ("cloud",))
    out = cloudcli("export-masks", cwd=tmp_path).stdout
    assert "submission_masks: 1 label files (tif, 12x16 uint8" in out
    label = tifffile.imread(tmp_path / "submission_masks/abcd.tif")
    assert label.shape == (12, 16) and label.sum() == 4 * cloud.sum()

    bad = cloudcli("export-masks", "--format", "jpg", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "--format 'jpg': choose one of tif, png" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = cloudcli("export-masks", "nope.csv", cwd=tmp_path, check=False)
    assert missing.returncode == 1 and "nope.csv: file not found; give the Kaggle-format CSV" in missing.stderr
    again = cloudcli("export-masks", cwd=tmp_path, check=False)  # never replaces a folder unasked
    assert again.returncode == 1 and "--out submission_masks: already exists; pass --force" in again.stderr
    assert "submission_masks: 1 label files" in cloudcli("export-masks", "--force", cwd=tmp_path).stdout
    for out in (".", ".."):  # the working folder, or one holding it: refused even with --force
        refused = cloudcli("export-masks", "--out", out, "--force", cwd=tmp_path, check=False)
        assert refused.returncode == 1 and "would replace a folder holding" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "submission.csv", "submission_masks"]


def test_ids_that_are_not_file_names_and_colliding_names_are_refused(tmp_path) -> None:
    empty = np.zeros((1, *SIZE), np.uint8)
    for ids, message in [
        (["../up"], r"sub.csv line 2: image id '../up' holds a path separator"),
        (["a.png", "a.tif"], r"images 'a.png' and 'a.tif' would both be written to a.tif"),
    ]:
        write_masks_csv(tmp_path / "sub.csv", dict.fromkeys(ids, empty), ("cloud",))
        with pytest.raises(DataError, match=message):
            export_masks(tmp_path / "sub.csv", tmp_path / "out", ("cloud",), SIZE, SIZE, "tif")
        assert not (tmp_path / "out").exists()


def test_label_tiffs_take_their_chips_crs_and_transform_scaled_to_the_label_size(tmp_path) -> None:
    features = tmp_path / "test_features"
    masks = random_masks(["geo0", "geo1", "plain", "absent"])
    for chip in ("geo0", "geo1"):
        write_chip(features / chip, BANDS, SIZE)
    write_chip(features / "plain", BANDS, SIZE, crs=None)
    write_masks_csv(tmp_path / "sub.csv", masks, ("cloud",))
    images = Images(features, "chips", BANDS)
    for size, dx, dy in [(SIZE, 10.0, 10.0), ((12, 16), 5.0, 5.0), ((3, 16), 5.0, 20.0)]:  # (H, W), pixel in m
        out = tmp_path / f"out{size[0]}x{size[1]}"
        done = export_masks(tmp_path / "sub.csv", out, ("cloud",), SIZE, size, "tif", images=images)
        assert (done["not_found"], done["no_crs"]) == (1, 1)
        for chip in ("geo0", "geo1"):  # the same ground: origin kept, pixels scaled by 6x8 / size
            with rasterio.open(out / f"{chip}.tif") as src:
                assert src.crs == CRS.from_string(UTM) and src.shape == size
                assert src.transform == Affine(dx, 0.0, 500_000.0, 0.0, -dy, 4_600_000.0)
                assert np.array_equal(src.read(1), resize_mask(masks[chip][0], size))
        for chip in ("plain", "absent"):
            with pytest.warns(NotGeoreferencedWarning), rasterio.open(out / f"{chip}.tif") as src:
                assert src.crs is None and np.array_equal(src.read(1), resize_mask(masks[chip][0], size))


@pytest.mark.parametrize(
    ("not_found", "no_crs", "note"),
    [
        (0, 0, ""),
        (0, 12, "; 12 without geo tags: their images have no CRS"),
        (3, 0, "; 3 without geo tags: not found under raw/test_features"),
        (3, 2, "; 5 without geo tags: 3 not found under raw/test_features, 2 whose images have no CRS"),
    ],
)
def test_geo_note_known_answers(not_found: int, no_crs: int, note: str) -> None:
    assert geo_note({"not_found": not_found, "no_crs": no_crs}, Path("raw/test_features")) == note


def test_missing_images_folder_is_refused_and_writes_nothing(tmp_path) -> None:
    write_masks_csv(tmp_path / "sub.csv", random_masks(["a"]), ("cloud",))
    with pytest.raises(DataError, match=r"^--images .*nope: folder not found"):
        export_masks(
            tmp_path / "sub.csv",
            tmp_path / "out",
            ("cloud",),
            SIZE,
            SIZE,
            "tif",
            images=Images(tmp_path / "nope", "chips"),
        )
    assert not (tmp_path / "out").exists()


def test_cli_georeferences_the_test_chips_of_params_and_counts_those_without_a_crs(tmp_path) -> None:
    params = preset_params("chips")
    params["data"].update(raw="raw", raw_size=list(SIZE), score_size=list(SIZE))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    transform = Affine(30.0, 0.0, 300_000.0, 0.0, -30.0, 5_000_000.0)
    write_chip(tmp_path / "raw/test_features/geo", params["data"]["bands"], SIZE, transform=transform)
    write_chip(tmp_path / "raw/test_features/plain", params["data"]["bands"], SIZE, crs=None)
    masks = random_masks(["geo", "plain"], seed=1)
    write_masks_csv(tmp_path / "submission.csv", masks, ("cloud",))
    out = cloudcli("export-masks", cwd=tmp_path).stdout
    assert "submission_masks: 2 label files (tif, 6x8 uint8" in out
    assert "1 without geo tags: their images have no CRS" in out
    with rasterio.open(tmp_path / "submission_masks/geo.tif") as src:
        assert src.crs == CRS.from_string(UTM) and src.transform == transform
        assert np.array_equal(src.read(1), masks["geo"][0])
    missing = cloudcli("export-masks", "--images", "nowhere", "--out", "other", cwd=tmp_path, check=False)
    assert missing.returncode == 1 and missing.stderr.strip().endswith(
        "--images nowhere: folder not found; give the folder of the CSV's images"
    )
    assert "Traceback" not in missing.stderr and not (tmp_path / "other").exists()
