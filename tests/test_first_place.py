"""End to end: the 1st-place preset (class heads gating, SWA, AdamW + OneCycle, 4 flips, at least
one class per image) reproduced by the real dvc.yaml on the tiny demo data, with CPU sizes and
small encoders in place of the GPU ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dvc_repo import git_dvc_repo, reproduce, run
from helpers import REPO, TINY

from cloudcli import CLASSES
from cloudcli.config import load_params
from cloudcli.config.presets import preset_params

pytestmark = pytest.mark.slow


def first_place_repo(tiny_demo: Path, tmp_path: Path) -> Path:
    """The preset with the tiny data's sizes, 3 folds of which one is trained, 2 epochs averaged,
    and resnet18 encoders without pretrained weights (offline)."""
    repo = git_dvc_repo(tmp_path / "repo")
    shutil.copytree(tiny_demo, repo / "data")
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copytree(REPO / "labels", repo / "labels")  # the fold stage depends on it (data.exclude)
    params = preset_params("1st_place")
    params["data"].update(raw_size=[TINY["height"], TINY["width"]], score_size=[32, 48])
    params["preprocess"].update(cache_size=[32, 64], workers=1)
    params["network"].update(encoder="resnet18", encoder_weights=None)
    params["fold"].update(n_splits=3)
    params["train"].update(epochs=3, batch_size=4, workers=0, swa={"epochs": 2})
    for model in params["cv"]["models"]:
        params["models"][model]["network"]["encoder"] = "resnet18"
        params["models"][model]["train"] = {}
    params["cv"].update(folds=[0])
    params["infer"].update(batch_size=8)
    params["tune"].update(top_k=20)
    params["report"].update(worst=2, test_images=2, tile=[64, 96])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("dvc", "add", "-q", "data", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "1st place, tiny", cwd=repo)
    return repo


def test_first_place_preset_runs_end_to_end(tiny_demo: Path, tmp_path: Path) -> None:
    repo = first_place_repo(tiny_demo, tmp_path)
    p = load_params(repo / "params.yaml")
    assert p.tune.classifier == p.tune.seg1 == "unet_b1" and p.tune.class_score == "mean" and p.tune.at_least_one
    ran = reproduce(repo)
    assert {"train@unet_b1-0", "infer@unet_b1", "ensemble", "tune", "submit"} <= ran
    summary = json.loads((repo / "models/unet_b1/fold0/summary.json").read_text())
    assert summary["swa"]["epochs"] == [2, 3] and "head_auc" in summary["metrics"]  # averaged; the head scored
    oof = pd.read_csv(repo / "predictions/base/unet_b1/oof.csv")
    assert list(oof.columns) == ["image_id", "fold", *CLASSES]  # the head's probabilities beside the maps
    assert oof[list(CLASSES)].stack().between(0, 1).all()
    chosen = json.loads((repo / "tune/thresholds.json").read_text())
    assert Path(chosen["classifier"]).name == "unet_b1" and chosen["class_score"] == "mean" and chosen["at_least_one"]
    submission = pd.read_csv(repo / "submission.csv", keep_default_na=False)
    images = submission["Image_Label"].str.rsplit("_", n=1).str[0]
    has_mask = submission["EncodedPixels"] != ""
    assert has_mask.groupby(images).any().all()  # at least one class in every test image
