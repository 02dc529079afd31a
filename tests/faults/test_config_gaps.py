"""Config gaps: a params file that cannot be read as YAML, and values out of range, each end in
one line naming the file and the key, before any data is read or anything written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers import cloudcli_here, tiny_params

# ------------------------------------------------------------------------------ the file itself


def _valid_text() -> str:
    return yaml.safe_dump(tiny_params(), sort_keys=False)


FILES = {  # name -> (content of bad.yaml: str, bytes, or None for a folder; words of the error)
    "folder": (None, ["bad.yaml", "is a folder"]),
    "empty": ("", ["bad.yaml", "empty"]),
    "comments only": ("# nothing here\n\n", ["bad.yaml", "empty"]),
    "a list": ("- data\n- fold\n", ["bad.yaml", "top level must be a mapping", "list"]),
    "a scalar": ("params\n", ["bad.yaml", "top level must be a mapping", "str"]),
    "not UTF-8": (b"data:\n  raw: \xff\xfe\n", ["bad.yaml", "line 2", "0xff", "not UTF-8"]),
    "latin-1 comment": (b"# caf\xe9\n" + b"data: {}\n", ["bad.yaml", "line 1", "0xe9", "not UTF-8"]),
    "unclosed list": ("data: [\n", ["bad.yaml", "not valid YAML", "line 2"]),
    "tab indent": ("data:\n\traw: data\n", ["bad.yaml", "not valid YAML", "line 2"]),
    "NUL byte": ("data: \x00\n", ["bad.yaml", "not valid YAML", "line 1", "not allowed"]),
    "undefined alias": ("data: *raw\n", ["bad.yaml", "not valid YAML", "alias"]),
    "python tag": ("data: !!python/object/apply:os.system [ls]\n", ["bad.yaml", "not valid YAML", "constructor"]),
    "unhashable key": ("? [1, 2]\n: 3\n", ["bad.yaml", "not valid YAML", "unhashable"]),
    "nested too deeply": ("data: " + "[" * 3000 + "]" * 3000 + "\n", ["bad.yaml", "nested too deeply"]),
    "section twice": (lambda: _valid_text() + "fold:\n  seed: 1\n", ["bad.yaml", "'fold' is written twice"]),
    "key twice": (
        lambda: _valid_text().replace("train:\n", "train:\n  epochs: 7\n", 1),
        ["bad.yaml", "'epochs' is written twice", "first on line"],
    ),
}


@pytest.mark.parametrize("case", list(FILES))
@pytest.mark.parametrize("command", [["fold"], ["train", "--model", "seg1", "--fold", "0"], ["show", "x"]])
def test_unreadable_params_file(case: str, command: list[str], tmp_path: Path, fails_cleanly) -> None:
    content, needles = FILES[case]
    path = tmp_path / "bad.yaml"
    if content is None:
        path.mkdir()
    else:
        content = content() if callable(content) else content
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    fails_cleanly(tmp_path, lambda: cloudcli_here(*command, "--params", "bad.yaml", cwd=tmp_path), *needles)


@pytest.mark.timeout(60)
def test_a_fifo_given_as_params_is_refused_without_blocking(tmp_path: Path, fails_cleanly) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading would wait for a writer for ever
    run = lambda: cloudcli_here("fold", "--params", "pipe.yaml", cwd=tmp_path)  # noqa: E731
    fails_cleanly(tmp_path, run, "pipe.yaml", "not a regular file")


def test_missing_params_file(tmp_path: Path, fails_cleanly) -> None:
    run = lambda: cloudcli_here("fold", "--params", "none.yaml", cwd=tmp_path)  # noqa: E731
    fails_cleanly(tmp_path, run, "none.yaml", "file not found")


# ------------------------------------------------------------------------ values out of range

VALUES = [  # (section, values, words of the error)
    # empty or repeated lists a stage loops over or indexes
    ("cv", {"folds": []}, ["cv.folds", "at least one"]),
    ("cv", {"folds": [0, 0]}, ["cv.folds", "each once"]),
    ("cv", {"folds": [7]}, ["cv.folds", "0..2"]),
    ("cv", {"folds": [-1]}, ["cv.folds", "0..2"]),
    ("cv", {"models": []}, ["cv.models", "at least one"]),
    ("cv", {"models": ["seg1", "seg1", "seg2", "classifier"]}, ["cv.models", "each once"]),
    ("infer", {"tta": []}, ["infer.tta"]),
    ("ensemble", {"members": []}, ["ensemble.members"]),
    ("report", {"models": []}, ["report.models", "at least one"]),
    ("tune", {"component_thresholds": []}, ["tune.component_thresholds", "at least one"]),
    ("tune", {"min_areas": []}, ["tune.min_areas"]),
    ("tune", {"min_components": []}, ["tune.min_components"]),
    ("pseudo", {"min_areas": []}, ["pseudo.min_areas"]),
    ("pseudo", {"shape": ["seg2", "seg2"]}, ["pseudo.shape", "distinct"]),
    # numbers
    ("train", {"epochs": -1}, ["train.epochs", ">= 1", "-1"]),
    ("train", {"batch_size": 0}, ["train.batch_size", ">= 1"]),
    ("train", {"accumulate": 0}, ["train.accumulate", ">= 1"]),
    ("train", {"lr": 0.0}, ["train.lr", "> 0"]),
    ("train", {"lr": -1.0e-3}, ["train.lr", "> 0"]),
    ("train", {"lr": float("inf")}, ["train.lr", "finite"]),
    ("train", {"lr": float("nan")}, ["train.lr", "nan"]),
    ("train", {"encoder_lr_mult": -0.1}, ["train.encoder_lr_mult", "[0.0, inf)"]),
    ("train", {"weight_decay": -1.0e-4}, ["train.weight_decay", "[0.0, inf)"]),
    ("train", {"momentum": 1.5}, ["train.momentum", "[0.0, 1.0)"]),
    ("train", {"plateau_factor": 0.0}, ["train.plateau_factor", "(0.0, 1.0)"]),
    ("train", {"plateau_factor": 2.0}, ["train.plateau_factor", "(0.0, 1.0)"]),
    ("train", {"plateau_patience": -1}, ["train.plateau_patience", ">= 0"]),
    ("train", {"clip_grad": -1.0}, ["train.clip_grad", "[0.0, inf)"]),
    ("train", {"workers": -1}, ["train.workers", ">= 0"]),
    ("train", {"seed": -1}, ["train.seed", "4294967295"]),
    ("train", {"ema": 1.0}, ["train.ema", "(0, 1)"]),
    ("train", {"swa": {"epochs": 0}}, ["train.swa.epochs", ">= 1"]),
    ("train", {"swa": {"best": -2}}, ["train.swa.best", ">= 1"]),
    ("train", {"epochs": 3, "swa": {"epochs": 5}}, ["train.swa.epochs", "<= train.epochs (3)", "5"]),
    ("train", {"swa": {}}, ["train.swa", "exactly one of epochs", "{epochs: 5}"]),
    ("train", {"swa": {"epochs": 2, "best": 2}}, ["train.swa", "exactly one of epochs"]),
    ("train", {"swa": 5}, ["train.swa must be a mapping", "5"]),
    ("fold", {"n_splits": 1}, ["fold.n_splits", ">= 2"]),
    ("fold", {"n_splits": -3}, ["fold.n_splits", ">= 2"]),
    ("fold", {"bins": 1}, ["fold.bins", ">= 2"]),
    ("fold", {"seed": 2**40}, ["fold.seed", "4294967295"]),
    ("augment", {"hflip": 1.5}, ["augment.hflip", "[0, 1]"]),
    ("augment", {"vflip": -0.1}, ["augment.vflip", "[0, 1]"]),
    ("augment", {"shift_scale_rotate": 2.0}, ["augment.shift_scale_rotate", "[0, 1]"]),
    ("augment", {"grid_distortion": 1.01}, ["augment.grid_distortion", "[0, 1]"]),
    ("augment", {"brightness_contrast": -1.0}, ["augment.brightness_contrast", "[0, 1]"]),
    ("augment", {"shift_limit": -0.1}, ["augment.shift_limit", "[0.0, 1.0]"]),
    ("augment", {"scale_limit": 1.0}, ["augment.scale_limit", "[0.0, 1.0)"]),
    ("augment", {"rotate_limit": 270.0}, ["augment.rotate_limit", "[0.0, 180.0]"]),
    ("preprocess", {"cache_size": [0, 64]}, ["preprocess.cache_size", "positive"]),
    ("preprocess", {"workers": 0}, ["preprocess.workers", ">= 1"]),
    ("data", {"raw_size": [0, 96]}, ["data.raw_size", "positive"]),
    ("data", {"score_size": [-32, 48]}, ["data.score_size", "positive"]),
    ("data", {"band_percentiles": [99.0, 1.0]}, ["data.band_percentiles", "low < high"]),
    ("data", {"nodata": -1}, ["data.nodata", "[0, 65535]"]),
    ("data", {"metadata": "../meta.csv"}, ["data.metadata", "no folder part"]),
    ("network", {"freeze_encoder_stages": -1}, ["network.freeze_encoder_stages", ">= 0"]),
    ("infer", {"batch_size": 0}, ["infer.batch_size", ">= 1"]),
    ("infer", {"workers": -2}, ["infer.workers", ">= 0"]),
    ("infer", {"fold_models": "two"}, ["infer.fold_models", "one"]),
    ("pseudo", {"low": -0.5}, ["pseudo.low", "0 <= low"]),
    ("pseudo", {"pixel_high": 1.5}, ["pseudo.pixel_low", "pixel_high <= 1"]),
    ("pseudo", {"min_share": 1.0}, ["pseudo.min_share", "[0, 1)"]),
    ("tune", {"top_k": 0}, ["tune.top_k", ">= 1"]),
    ("tune", {"component_thresholds": [1.5]}, ["tune.component_thresholds", "[0, 1)"]),
    ("tune", {"component_thresholds": "every"}, ["tune.component_thresholds", "'all' or a list", "'every'"]),
    ("tune", {"component_thresholds": 0.5}, ["tune.component_thresholds", "'all' or a list", "0.5"]),
    ("report", {"tile": [8, 8]}, ["report.tile", "32"]),
    ("report", {"worst": -1}, ["report.worst", ">= 0"]),
    ("report_labels", {"models": []}, ["report_labels.models", "distinct"]),
    ("report_labels", {"high": 1.0}, ["report_labels.low", "low < high < 1", "1.0"]),
    ("report_labels", {"low": float("nan")}, ["report_labels.low", "low < high < 1", "nan"]),
    ("report_labels", {"rows": 0}, ["report_labels.rows", ">= 1"]),
    ("report_labels", {"top": -1}, ["report_labels.top", "0..report_labels.rows"]),
    ("ensemble", {"min_votes": 0}, ["ensemble.min_votes", "1.."]),
    ("models", {"seg1": {"role": "seg1", "loss": {"bce": 1.0}, "train": {"epochs": 0}}}, ["models.seg1", "epochs"]),
    ("models", {"seg1": {"role": "seg1", "loss": {"bce": -1.0}}}, ["models.seg1.loss.bce", "> 0"]),
    (
        "models",
        {"seg1": {"role": "seg1", "loss": {"bce": 1.0}, "train": {"swa": {"best": 9}}}},
        ["models.seg1", "train.swa.best", "<= train.epochs"],
    ),
]


@pytest.mark.parametrize(("section", "values", "needles"), VALUES, ids=[f"{s}-{v}" for s, v, _ in VALUES])
def test_value_out_of_range(section: str, values: dict, needles: list[str], tmp_path: Path, fails_cleanly) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(**{section: values}), sort_keys=False))
    fails_cleanly(tmp_path, lambda: cloudcli_here("fold", cwd=tmp_path), "params.yaml", *needles)
