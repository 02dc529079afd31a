"""Bad input for `cloudcli train` and `cloudcli cv`: one clear line, exit 1, nothing half-written."""

import os
import shutil
import subprocess
import sys

import procs
import pytest
import yaml
from helpers import cloudcli


def failed(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_unknown_model_fails_before_loading_anything(tiny_cache, tmp_path) -> None:
    result = cloudcli(
        "train", "--model", "seg3", "--fold", "0", "--out", str(tmp_path / "m"), cwd=tiny_cache, check=False
    )
    failed(result, "unknown model 'seg3'", "did you mean")
    assert not (tmp_path / "m").exists()


def test_fold_without_images(tiny_cache, tmp_path) -> None:
    result = cloudcli(
        "train",
        "--model",
        "classifier",
        "--fold",
        "7",
        "--out",
        str(tmp_path / "m"),
        "--live",
        str(tmp_path / "l"),
        cwd=tiny_cache,
        check=False,
    )
    failed(result, "artifacts/folds.csv: fold 7 has no images")
    assert not (tmp_path / "m").exists() and not (tmp_path / "l").exists()


def test_missing_cache_says_what_to_run(tiny_cache, tmp_path) -> None:
    result = cloudcli(
        "train", "--model", "classifier", "--fold", "0", "--cache", str(tmp_path / "nope"), cwd=tiny_cache, check=False
    )
    failed(result, "nope/train/index.csv: missing; run `cloudcli preprocess`")


def test_imagenet_weights_offline(tiny_cache, tmp_path) -> None:
    project = tmp_path / "p"
    shutil.copytree(tiny_cache, project, ignore=shutil.ignore_patterns("data"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["network"]["encoder_weights"] = "imagenet"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    result = procs.run([sys.executable, "-m", "cloudcli", "train", "--model", "seg1", "--fold", "0"], project, env)
    failed(
        result,
        "network.encoder_weights: could not load 'imagenet' weights for encoder 'resnet18'",
        "encoder_weights: null",
    )
    assert not (project / "models").exists()


@pytest.mark.parametrize("bad", ["train.lr=1e-3", "models.seg2.train.lrr=1.0"])
def test_bad_params_before_training(tiny_cache, tmp_path, bad: str) -> None:
    project = tmp_path / "p"
    project.mkdir()
    params = yaml.safe_load((tiny_cache / "params.yaml").read_text())
    key, value = bad.split("=")
    *path, last = key.split(".")
    node = params
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value) if "lrr" in key else value
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = cloudcli("train", "--model", "seg2", "--fold", "0", cwd=project, check=False)
    failed(result, "params.yaml", "lr")


def test_cv_names_the_missing_model(tiny_cache, tmp_path) -> None:
    result = cloudcli(
        "cv", "--models", str(tmp_path / "models"), "--out", str(tmp_path / "cv.json"), cwd=tiny_cache, check=False
    )
    failed(result, "seg1/fold0/summary.json: missing", "cloudcli train --model seg1 --fold 0")
    assert not (tmp_path / "cv.json").exists()


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("ensemble", "none/base/seg2: no predictions of 'seg2'; run `dvc repro`"),
        ("tune", "none/base/seg1: no predictions of 'seg1'; run `dvc repro`"),
        ("submit", "missing; run `dvc repro tune`"),
    ],
)
def test_post_processing_stages_say_what_to_run_first(tiny_cache, tmp_path, stage: str, message: str) -> None:
    args = [] if stage == "submit" else ["--predictions", str(tmp_path / "none")]
    args += ["--thresholds", str(tmp_path / "t.json"), "--out", str(tmp_path / "out")] if stage == "submit" else []
    result = cloudcli(stage, *args, cwd=tiny_cache, check=False)
    failed(result, message, "cloudcli infer --model" if stage != "submit" else "cloudcli tune")
    assert not (tmp_path / "out").exists() and not (tiny_cache / "ensemble").exists()
