"""End to end: `dvc repro` of the real dvc.yaml on tiny generated datasets of the other kinds, with
the chips and image_mask presets (shrunk to a few 32x32 images and one epoch)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import procs
import pytest
import rasterio
import rasterio.features
import rasterio.transform
import tifffile
import yaml
from dvc_repo import git_dvc_repo, reproduce, run
from helpers import REPO, cloudcli, cloudcli_here

from cloudcli.config import load_params
from cloudcli.config.presets import preset_params
from cloudcli.data.cache import open_cache, resize_mask
from cloudcli.data.sources import open_source
from cloudcli.rle import decode

pytestmark = pytest.mark.slow
SIZE = 32


def kind_repo(tmp_path: Path, kind: str, raw: str, **sections: dict) -> Path:
    """A git + DVC repository with a tiny dataset of `kind` in `raw` and the preset <kind> shrunk."""
    repo = git_dvc_repo(tmp_path / kind)
    cloudcli("demo-data", raw, "--kind", kind, "--n-train", "24", "--n-test", "6", "--height", str(SIZE),
             "--width", str(SIZE), "--workers", "1", cwd=repo)  # fmt: skip
    params = preset_params(kind)
    params["data"].update(raw_size=[SIZE, SIZE], score_size=[SIZE, SIZE])
    params["preprocess"].update(cache_size=[SIZE, SIZE], workers=1)
    params["fold"].update(n_splits=3)
    params["train"].update(epochs=1, batch_size=4)
    params["cv"].update(folds=[0])
    params["report"].update(worst=2, test_images=2, tile=[64, 64])
    for name, values in sections.items():
        params[name].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    shutil.copytree(REPO / "labels", repo / "labels")  # the fold stage depends on it (data.exclude)
    run("dvc", "add", "-q", raw, cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", kind, cwd=repo)
    return repo


def source_of(repo: Path):
    data = load_params(repo / "params.yaml").data
    return open_source(replace(data, raw=str(repo / data.raw)))


def pooled_jaccard_from_csv(repo: Path, csv: Path, split: str) -> float:
    """The metric recomputed by hand: masks decoded from a Kaggle-format CSV against the raw labels."""
    p = load_params(repo / "params.yaml")
    source = source_of(repo)
    table = pd.read_csv(csv, keep_default_na=False)
    inter = union = 0
    for label, rle in zip(table["Image_Label"], table["EncodedPixels"]):
        image_id, cls = label.rsplit("_", 1)
        pred = decode(rle, tuple(p.data.score_size)).astype(bool)
        row = source.ids(split).index(image_id)
        truth = resize_mask(source.masks(split, row)[source.classes.index(cls)], tuple(p.data.score_size)) > 0
        inter, union = inter + (pred & truth).sum(), union + (pred | truth).sum()
    return inter / union if union else 1.0


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    """The chips pipeline, reproduced (cloudcli run: as dvc repro, two stages at a time) and
    exported to bundle/."""
    repo = kind_repo(
        tmp_path_factory.mktemp("kinds"), "chips", "data_chips", pseudo={"pixel_low": 0.5, "pixel_high": 0.5}
    )
    reproduce(repo)
    cloudcli_here("export", "--out", "bundle", cwd=repo, check=True)
    return repo


def test_chips_pipeline_trains_tunes_and_scores_jaccard(chips: Path) -> None:
    repo = chips
    stages = {r["stage"] for r in json.loads((repo / ".cloudcli/run/last.json").read_text())}
    rounds = {"pseudo@r1", "train_pl@r1-seg2_pl-0", "pseudo@r2", "train_pl@r2-seg2_pl-0", "infer_pl@r2-seg2_pl"}
    assert {"preprocess", "fold", "train@seg1-0", "train@classifier-0", "tune", "submit"} | rounds <= stages
    meta = json.loads((repo / "artifacts/preprocessed/train/meta.json").read_text())
    assert meta["kind"] == "chips" and meta["classes"] == ["cloud"] and meta["bands"] == ["B02", "B03", "B04", "B08"]
    trained = json.loads((repo / "models/r2/seg2_pl/fold0/config.json").read_text())
    assert trained["loss"] == {"dice_pos": 1.0, "kl": 1.0} and trained["pseudo"]["images"] >= 1

    shown = json.loads(run("dvc", "plots", "show", "--json", cwd=repo))["data"]
    for plot in ("tune/curves.csv", "reports/data/mask_area.csv"):  # series named by data.classes
        content = shown[plot][0]["content"]  # one y column: DVC names it in the encoding, not per value
        assert content["layer"][0]["encoding"]["y"]["field"] == "cloud", plot
        assert all(v["cloud"] != "" for v in content["data"]["values"]), plot

    chip = source_of(repo).train_ids[0]
    shown = cloudcli("show", chip, cwd=repo).stdout.strip()
    assert shown == f"show/{chip}.png" and (repo / shown).is_file()


def test_chips_bundle_is_the_pipeline(chips: Path, tmp_path: Path) -> None:
    """The bundle reads chip folders of uint16 bands, scaled by the training band limits, as
    preprocess did: the submission byte for byte, and each chip's label GeoTIFF with the chip's CRS
    and transform, export-masks' pixels where the chip holds data and 255 where it holds none."""
    repo = chips
    cloudcli_here("predict", "bundle", "data_chips/test_features", "--format", "rle", "--out", "again.csv", cwd=repo,
                  check=True)  # fmt: skip
    assert (repo / "again.csv").read_bytes() == (repo / "submission.csv").read_bytes()
    cloudcli_here("predict", "bundle", "data_chips/test_features", "--out", "labels", cwd=repo, check=True)
    cloudcli_here("export-masks", "submission.csv", "--out", "submission_masks", "--force", cwd=repo, check=True)
    nodata = 0
    for chip in source_of(repo).test_ids:
        with (
            rasterio.open(repo / "labels" / f"{chip}.tif") as out,
            rasterio.open(repo / "data_chips/test_features" / chip / "B02.tif") as band,
        ):
            assert band.crs is not None and out.crs == band.crs and out.transform == band.transform
            label = out.read(1)
            assert out.nodata == 255
        empty = np.stack([tifffile.imread(repo / "data_chips/test_features" / chip / f"{b}.tif") for b in BANDS])
        empty = (empty == 0).all(0)
        nodata += empty.sum()
        assert (label[empty] == 255).all()
        masks = tifffile.imread(repo / "submission_masks" / f"{chip}.tif")
        np.testing.assert_array_equal(label[~empty], masks[~empty])
        assert not masks[empty].any()  # data.nodata: no cloud where a chip holds no data
    assert nodata > 0  # the demo chips have no-data corners
    cache = open_cache(repo / "artifacts/preprocessed")  # the scores leave them out, and say how many
    oof = pd.read_csv(repo / "predictions/base/seg1/oof.csv", dtype={"image_id": str})["image_id"]
    rows = pd.Index(cache.train["image_id"]).get_indexer(oof)
    expected = {"tune": int((cache.valid("train")[rows] == 0).sum()), "test": int((cache.valid("test") == 0).sum())}
    assert expected["test"] > 0  # the test chips' no-data corners, at the scoring size too
    for name, count in expected.items():
        assert json.loads((repo / f"metrics/{name}.json").read_text())["nodata_pixels"] == count, name
    code_competition_main_py(repo, tmp_path / "competition")


BANDS = ("B02", "B03", "B04", "B08")


def mosaic(repo: Path, chips: list[str], path: Path, margin: bool = False) -> np.ndarray:
    """A 3x3 mosaic of chips as one 4-band uint16 GeoTIFF scene (a CRS, 10 m pixels; with `margin`,
    a no-data corner and a margin of no-data rows and columns); its (H, W, 4) raw values."""
    grid = np.zeros((3 * SIZE + 5 * margin, 3 * SIZE + 3 * margin, 4), np.uint16)
    for k, chip in enumerate(chips):
        r, c = divmod(k, 3)
        bands = [tifffile.imread(repo / "data_chips/train_features" / chip / f"{b}.tif") for b in BANDS]
        grid[r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE] = np.stack(bands, -1)
    if margin:
        grid[-20:, :12] = 0
    profile = {"driver": "GTiff", "height": grid.shape[0], "width": grid.shape[1], "count": 4, "dtype": "uint16"}
    profile |= {"crs": "EPSG:32633", "transform": rasterio.transform.from_origin(600000, 5000000, 10, 10)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(grid, -1, 0))
    return grid


def test_tiles_are_invisible(chips: Path, tmp_path: Path) -> None:
    """A scene mosaicked from 9 chips, predicted whole, against each chip predicted alone.

    - Tiles without overlap are the chips themselves, and so are the cells the rules judge: the
      masks are the chips' exactly, so tiling, blending and judging add nothing of their own.
    - With overlap (a quarter tile, 8 pixels), most tiles hold parts of two unrelated chips, and
      these one-epoch networks see a whole 32-pixel chip (their deepest features are 1x1): what a
      pixel gets depends on the chip beside it, which no tiling can avoid. The tolerance is what
      these networks allow: 8 pixels from a chip's edges, seg1's probabilities stay within 24
      levels (9%) of the chip's own and at least 95% of mask pixels agree (measured with the
      chips preset's grouped folds and no-data loss: 21 levels on one chip, 14 or less on the
      others, and every mask pixel agreeing; 7 levels and 96.6% with the earlier stratified folds);
      the vote members, more context-bound, move the masks' pixels near their level.
      Both are judged on the pixels with data: with data.nodata, no loss ever trained the networks'
      output on the others, no score reads it and every output writes them as no data."""
    from cloudcli.bundle import Input, Predictor, read_input
    from cloudcli.bundle.raster import Raster
    from cloudcli.bundle.scene import predict_scene

    ids = source_of(chips).train_ids[:9]
    mosaic(chips, ids, tmp_path / "scene.tif")
    p = Predictor.load(chips / "bundle", "cpu")
    alone = [p.predict_batch(read_input(Input(chips / "data_chips/train_features" / c, c), p.input)[None]) for c in ids]
    seg1, inner = p.spec["pipeline"]["seg1"], np.s_[:, 8:-8, 8:-8]
    bands = [[tifffile.imread(chips / "data_chips/train_features" / c / f"{b}.tif") for b in BANDS] for c in ids]
    has_data = [~(np.stack(chip) == 0).all(0)[None][inner] for chip in bands]  # (1, h, w) inner pixels
    with Raster(Input(tmp_path / "scene.tif", "scene"), p.input) as scene:
        for overlap in (0, 8):
            strips = list(predict_scene(p, scene, p.layout(scene.shape, overlap=overlap)))
            masks = np.concatenate([s.masks for s in strips], axis=1)
            probs = np.concatenate([s.maps[seg1] for s in strips], axis=1)
            agree = []
            for k, (chip_masks, chip_probs) in enumerate(alone):
                r, c = divmod(k, 3)
                window = np.s_[:, r * SIZE : (r + 1) * SIZE, c * SIZE : (c + 1) * SIZE]
                if overlap == 0:
                    np.testing.assert_array_equal(masks[window], chip_masks[0])
                    np.testing.assert_array_equal(probs[window], chip_probs[seg1][0])
                    continue
                data = np.broadcast_to(has_data[k], probs[window][inner].shape)
                drift = np.abs(probs[window][inner].astype(int) - chip_probs[seg1][0][inner])[data]
                assert drift.max() <= 24, (k, drift.max())
                agree.append((masks[window][inner] == chip_masks[0][inner])[data].mean())
            assert overlap == 0 or np.mean(agree) >= 0.95, agree


def test_a_scene_keeps_its_crs_and_marks_no_data(chips: Path, tmp_path: Path) -> None:
    """A GeoTIFF scene of other size than the chips: the label, probabilities and polygons take its
    CRS and transform; its no-data pixels are written as no-data (never cloud)."""
    grid = mosaic(chips, source_of(chips).train_ids[:9], tmp_path / "scene.tif", margin=True)
    tifffile.imwrite(tmp_path / "plain.tif", grid)  # the same pixels without geo tags
    out = cloudcli_here(
        "predict", "bundle", str(tmp_path / "scene.tif"), str(tmp_path / "plain.tif"), "--out", str(tmp_path / "pred"),
        "--probs", "--vector", "--min-area", "4", cwd=chips, check=True,
    ).stdout  # fmt: skip
    empty = (grid == 0).all(-1)
    assert f"{2 * empty.sum()} pixels without data written as 255" in out
    assert "1 TIFFs without geo tags (their inputs had no CRS)" in out
    with rasterio.open(tmp_path / "scene.tif") as src, rasterio.open(tmp_path / "pred/scene.tif") as label:
        assert label.crs == src.crs and label.transform == src.transform and label.shape == src.shape
        assert label.nodata == 255 and label.dtypes == ("uint8",)
        values = label.read(1)
    assert (values[empty] == 255).all() and set(np.unique(values[~empty])) <= {0, 1}
    with rasterio.open(tmp_path / "pred/plain.tif") as plain:
        assert plain.crs is None
        np.testing.assert_array_equal(plain.read(1), values)
    with rasterio.open(tmp_path / "pred/scene_probs.tif") as probs:
        assert probs.crs == src.crs and probs.transform == src.transform and probs.count == 1
        assert (probs.read_masks(1)[empty] == 0).all() and (probs.read_masks(1)[~empty] == 255).all()
    for name, pixels, needle in (
        ("three.tif", grid[..., :3], "three.tif: 3 bands, the bundle's models take 4 (B02, B03, B04, B08)"),
        ("float.tif", grid.astype(np.float32), "float.tif: float32 pixels; the bundle's models were trained on 16-bit"),
    ):
        tifffile.imwrite(tmp_path / name, pixels)
        bad = cloudcli_here("predict", "bundle", str(tmp_path / name), "--out", str(tmp_path / "pred"), cwd=chips)
        assert bad.returncode == 1 and needle in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert (tmp_path / "pred/scene.tif").is_file()  # the earlier output intact
    polygons = json.loads((tmp_path / "pred/scene.geojson").read_text())
    assert polygons["crs"]["properties"]["name"] == "EPSG:32633"
    cloud = rasterio.features.rasterize(
        [(f["geometry"], 1) for f in polygons["features"]], out_shape=values.shape, transform=src.transform
    )
    kept = [f["properties"]["area_px"] for f in polygons["features"]]
    assert min(kept) >= 4 and sum(kept) == cloud.sum() <= (values == 1).sum()


def code_competition_main_py(repo: Path, folder: Path) -> None:
    """docs/bundles.md's main.py, run as a code competition runs it (On Cloud N's layout, the bundle
    beside it, no project): predictions/<chip_id>.tif as `cloudcli predict` wrote them."""
    text = (REPO / "docs/bundles.md").read_text()
    main_py = next(b for b in text.split("```python\n")[1:] if b.startswith('"""On Cloud N')).split("```")[0]
    (folder / "data").mkdir(parents=True)
    (folder / "data/test_features").symlink_to(repo / "data_chips/test_features")
    (folder / "bundle").symlink_to(repo / "bundle")
    (folder / "main.py").write_text(main_py)
    result = procs.run([sys.executable, "main.py"], folder, {**os.environ, "PYTHONPATH": str(REPO)}, 300)
    assert result.returncode == 0, result.stderr
    for chip in source_of(repo).test_ids:
        with (
            rasterio.open(folder / "predictions" / f"{chip}.tif") as written,
            rasterio.open(repo / "labels" / f"{chip}.tif") as predicted,
        ):
            assert written.crs == predicted.crs and written.transform == predicted.transform
            ours, theirs = written.read(1), predicted.read(1)
            has_data = theirs != 255  # main.py labels no-data pixels too (0 or 1), as On Cloud N scores them
            assert set(np.unique(ours)) <= {0, 1}
            np.testing.assert_array_equal(ours[has_data], theirs[has_data])


def test_image_mask_pipeline_tunes_iou(tmp_path: Path) -> None:
    """A lean pipeline (seg1 + seg2 and the PL model seg2_pl, no classifier: the chips test covers
    it) on building tiles, scored by per-image IoU."""
    repo = kind_repo(
        tmp_path,
        "image_mask",
        "data_tiles",
        cv={"models": ["seg1", "seg2"]},
        pseudo={"classifier": None, "rule": "pixels", "pixel_low": 0.5, "pixel_high": 0.5},
        ensemble={"members": ["seg2"]},
        tune={"classifier": None, "class_score": "topk"},
        report={"models": ["ensemble"]},
    )
    stages = reproduce(repo)
    assert {"train@seg1-0", "train@seg2-0", "ensemble", "tune", "submit", "report_predictions"} <= stages
    assert "train_pl@r1-seg2_pl-0" in stages and not any(s.startswith("train@classifier") for s in stages)
    meta = json.loads((repo / "artifacts/preprocessed/train/meta.json").read_text())
    assert meta["kind"] == "image_mask" and meta["classes"] == ["building"] and meta["band_limits"] is None
    tune = json.loads((repo / "metrics/tune.json").read_text())
    assert 0.0 <= tune["after"]["iou_image"] <= 1.0 and set(tune["after"]) >= {"iou_image_building", "jaccard"}
    report = repo / "reports/predictions/ensemble"
    per_image = pd.read_csv(report / "per_image.csv")
    assert len(per_image) == len(pd.read_csv(repo / "artifacts/folds.csv").query("fold == 0"))
    table = pd.read_csv(report / "oof_masks.csv", keep_default_na=False)
    source = source_of(repo)
    iou = []
    for label, rle in zip(table["Image_Label"], table["EncodedPixels"]):
        image_id = label.rsplit("_", 1)[0]
        pred = decode(rle, (SIZE, SIZE)).astype(bool)
        truth = source.masks("train", source.train_ids.index(image_id))[0] > 0
        iou.append((pred & truth).sum() / (pred | truth).sum() if (pred | truth).any() else 1.0)
    assert np.mean(iou) == pytest.approx(tune["after"]["iou_image"], abs=1e-9)
    assert "valid submission, 6 rows" in cloudcli_here("submit", "--check", "submission.csv", cwd=repo).stdout

    cloudcli_here("export", "--out", "bundle", cwd=repo, check=True)  # PNG tiles, named by their stems
    cloudcli_here("predict", "bundle", "data_tiles/test/images", "--format", "rle", "--out", "again.csv", cwd=repo,
                  check=True)  # fmt: skip
    assert (repo / "again.csv").read_bytes() == (repo / "submission.csv").read_bytes()
