"""End to end: `dvc repro` of the real dvc.yaml on tiny generated datasets of the other kinds, with
the chips and image_mask presets (shrunk to a few 32x32 images and one epoch)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import procs
import pytest
import rasterio
import tifffile
import yaml
from dvc_repo import git_dvc_repo, ran, run
from helpers import REPO, cloudcli

from cloudcli.config import load_params
from cloudcli.config.presets import preset_params
from cloudcli.data.cache import resize_mask
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


def test_chips_pipeline_trains_tunes_and_scores_jaccard(tmp_path: Path) -> None:
    repo = kind_repo(tmp_path, "chips", "data_chips", pseudo={"pixel_low": 0.5, "pixel_high": 0.5})
    out = run("dvc", "repro", cwd=repo)
    rounds = {"pseudo@r1", "train_pl@r1-seg2_pl-0", "pseudo@r2", "train_pl@r2-seg2_pl-0", "infer_pl@r2-seg2_pl"}
    assert {"preprocess", "fold", "train@seg1-0", "train@classifier-0", "tune", "submit"} | rounds <= ran(out)
    meta = json.loads((repo / "artifacts/preprocessed/train/meta.json").read_text())
    assert meta["kind"] == "chips" and meta["classes"] == ["cloud"] and meta["bands"] == ["B02", "B03", "B04", "B08"]
    assert np.load(repo / "artifacts/preprocessed/train/images.npy").shape == (24, SIZE, SIZE, 4)
    assert json.loads((repo / "models/seg1/fold0/config.json").read_text())["in_channels"] == 4
    folds = json.loads((repo / "metrics/folds.json").read_text())
    assert set(folds["max_group_share_gap"]) == {"location", "coverage"}

    tune = json.loads((repo / "metrics/tune.json").read_text())
    assert set(tune["after"]) >= {"jaccard", "jaccard_cloud", "dice", "iou_image"}
    report = json.loads((repo / "reports/predictions/ensemble/summary.json").read_text())
    assert report["jaccard"] == pytest.approx(tune["after"]["jaccard"], abs=1e-9)  # the same pipeline, out of fold
    oof = repo / "reports/predictions/ensemble/oof_masks.csv"
    assert pooled_jaccard_from_csv(repo, oof, "train") == pytest.approx(tune["after"]["jaccard"], abs=1e-9)
    test = json.loads((repo / "metrics/test.json").read_text())
    assert pooled_jaccard_from_csv(repo, repo / "submission.csv", "test") == pytest.approx(test["jaccard"], abs=1e-9)
    assert "valid submission, 6 rows" in cloudcli("submit", "--check", "submission.csv", cwd=repo).stdout

    labels = json.loads((repo / "pseudo/r1/meta.json").read_text())
    assert labels["rule"] == "pixels" and labels["soft"] is True
    soft = np.load(repo / "pseudo/r1/fold0/soft.npy")
    images = labels["report"]["folds"]["fold0"]["images"]
    assert soft.shape[1:] == (1, SIZE, SIZE) and soft.dtype == np.uint8 and len(soft) == images
    second = json.loads((repo / "pseudo/r2/meta.json").read_text())  # relabelled with r1's seg2_pl
    assert second["shape"] == ["predictions/r1/seg2_pl"] and labels["shape"] == ["predictions/base/seg2"]
    members = json.loads((repo / "ensemble/meta.json").read_text())["members"]
    assert [m["folder"] for m in members] == ["predictions/base/seg2", "predictions/r2/seg2_pl"]
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

    # the bundle reads chip folders of uint16 bands, scaled by the training band limits, as preprocess did
    cloudcli("export", "--out", "bundle", cwd=repo)
    cloudcli("predict", "bundle", "data_chips/test_features", "--format", "rle", "--out", "again.csv", cwd=repo)
    assert (repo / "again.csv").read_bytes() == (repo / "submission.csv").read_bytes()
    # ... and writes each chip's label GeoTIFF with the chip's CRS and transform (export-masks' pixels)
    cloudcli("predict", "bundle", "data_chips/test_features", "--out", "labels", cwd=repo)
    cloudcli("export-masks", "submission.csv", "--out", "submission_masks", cwd=repo)
    for chip in source_of(repo).test_ids:
        with (
            rasterio.open(repo / "labels" / f"{chip}.tif") as out,
            rasterio.open(repo / "data_chips/test_features" / chip / "B02.tif") as band,
        ):
            assert band.crs is not None and out.crs == band.crs and out.transform == band.transform
            label = out.read(1)
        np.testing.assert_array_equal(label, tifffile.imread(repo / "submission_masks" / f"{chip}.tif"))
    code_competition_main_py(repo, tmp_path / "competition")


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
            np.testing.assert_array_equal(written.read(1), predicted.read(1))


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
    out = run("dvc", "repro", cwd=repo)
    assert {"train@seg1-0", "train@seg2-0", "ensemble", "tune", "submit", "report_predictions"} <= ran(out)
    assert "train_pl@r1-seg2_pl-0" in ran(out) and not any(s.startswith("train@classifier") for s in ran(out))
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
    assert "valid submission, 6 rows" in cloudcli("submit", "--check", "submission.csv", cwd=repo).stdout

    cloudcli("export", "--out", "bundle", cwd=repo)  # PNG tiles, named by their stems
    cloudcli("predict", "bundle", "data_tiles/test/images", "--format", "rle", "--out", "again.csv", cwd=repo)
    assert (repo / "again.csv").read_bytes() == (repo / "submission.csv").read_bytes()
