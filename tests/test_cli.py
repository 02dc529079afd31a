"""The installed command line, run for real in subprocesses: help, version, bad input, one happy path.

Every bad-input case must exit non-zero without a traceback, name the file (and the CSV line where
there is one: line 1 is the header) and leave no partial output behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import procs
import pytest
import yaml

import cloudcli
from cloudcli.data.cache import array_path

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 64, 96  # raw size of the tiny demo images: 6144 pixels per RLE
N_TRAIN, N_TEST = 6, 2
OUTPUTS = {  # what each stage writes by default, relative to its working folder
    "preprocess": ("artifacts/preprocessed", "metrics/data.json"),
    "fold": ("artifacts/folds.csv", "metrics/folds.json"),
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return procs.run([sys.executable, "-m", "cloudcli", *args], cwd, timeout=120)


def assert_failed(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, no traceback, and every needle in stderr."""
    report = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, report
    assert "Traceback" not in result.stderr, report
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in stderr\n{report}"


def assert_no_outputs(cwd: Path, *commands: str) -> None:
    """Neither the outputs of `commands` nor temporary folders beside them exist."""
    for command in commands:
        for output in OUTPUTS[command]:
            path = cwd / output
            assert not path.exists(), f"partial output left behind: {path}"
            leftovers = sorted(path.parent.glob(".*.tmp")) if path.parent.is_dir() else []
            assert not leftovers, f"temporary files left behind: {leftovers}"


def params_for_tiny_data() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(raw="data", raw_size=[HEIGHT, WIDTH], score_size=[32, 48])
    params["preprocess"].update(cache_size=[32, 64], workers=1)
    return params


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def edit_params(folder: Path, edit: Callable[[dict], None]) -> None:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    edit(params)
    write_params(folder, params)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean tiny dataset, made once per module; tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("cli_demo")
    result = run_cli(
        "demo-data",
        "data",
        "--n-train",
        str(N_TRAIN),
        "--n-test",
        str(N_TEST),
        "--height",
        str(HEIGHT),
        "--width",
        str(WIDTH),
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    return root / "data"


@pytest.fixture
def project(demo: Path, tmp_path: Path) -> Path:
    """A working folder: a private copy of the dataset in data/ and a matching params.yaml."""
    shutil.copytree(demo, tmp_path / "data")
    write_params(tmp_path, params_for_tiny_data())
    return tmp_path


def train_csv(project: Path) -> Path:
    return project / "data" / "train.csv"


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def set_rle(path: Path, line: int, rle: str) -> str:
    """Replace EncodedPixels on CSV line `line` (1-based, 1 = header); return its Image_Label."""
    lines = read_lines(path)
    label = lines[line - 1].split(",")[0]
    lines[line - 1] = f"{label},{rle}"
    write_lines(path, lines)
    return label


def train_ids(project: Path) -> list[str]:
    labels = pd.read_csv(train_csv(project), dtype=str, keep_default_na=False)["Image_Label"]
    return list(pd.unique(labels.str.rsplit("_", n=1).str[0]))


# ----------------------------------------------------------------------------------------------- help


COMMANDS = ("init", "demo-data", "preprocess", "fold", "train", "cv")


def test_root_help_lists_every_stage(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    assert not any(tmp_path.iterdir()), "--help must not write anything"


def test_version(tmp_path: Path) -> None:
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cloudcli {cloudcli.__version__}"
    assert cloudcli.__version__ == version("cloudcli")


# ----------------------------------------------------------------------------------------- happy path


def test_preprocess_then_fold(project: Path) -> None:
    for command in ("preprocess", "fold"):
        result = run_cli(command, cwd=project)
        assert result.returncode == 0, f"{command}:\n{result.stderr}"
        assert "Traceback" not in result.stderr

    ids = train_ids(project)
    cache = project / "artifacts" / "preprocessed"
    shapes = {
        "train_images": (N_TRAIN, 32, 64, 3),
        "train_masks": (N_TRAIN, 32, 64),
        "train_truth": (N_TRAIN, 32, 48),
        "test_images": (N_TEST, 32, 64, 3),
    }
    for name, shape in shapes.items():
        array = np.load(array_path(cache, name), mmap_mode="r")
        assert array.shape == shape and array.dtype == np.uint8, name
    table = pd.read_csv(cache / "train" / "index.csv", dtype={"image_id": str})
    assert list(table["image_id"]) == ids
    labels = pd.read_csv(train_csv(project), dtype=str, keep_default_na=False)
    expected = (labels["EncodedPixels"] != "").to_numpy().reshape(N_TRAIN, 4).astype(int)
    np.testing.assert_array_equal(table[list(cloudcli.CLASSES)].to_numpy(), expected)
    stats = json.loads((project / "metrics" / "data.json").read_text())
    assert stats["n_train"] == N_TRAIN and stats["n_test"] == N_TEST

    folds = pd.read_csv(project / "artifacts" / "folds.csv", dtype={"image_id": str})
    assert list(folds.columns) == ["image_id", "fold"]
    assert list(folds["image_id"]) == ids
    assert folds["fold"].between(0, 4).all()
    fold_stats = json.loads((project / "metrics" / "folds.json").read_text())
    assert fold_stats["n_splits"] == 3 and sum(fold_stats["images_per_fold"].values()) == N_TRAIN

    for folder in (project / "artifacts", project / "metrics"):
        assert not list(folder.glob(".*.tmp"))


def test_demo_data_force_replaces_a_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.txt").write_text("old")
    result = run_cli(
        "demo-data", "d", "--n-train", "1", "--n-test", "1", "--height", "16", "--width", "24", "--force", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "sample_submission.csv",
        "test_images",
        "test_truth.csv",
        "train.csv",
        "train_images",
    ]


# ----------------------------------------------------------------------------------- bad RLE in train.csv

BAD_RLES = {  # EncodedPixels -> words the message must contain
    "odd token count": ("10 5 20", ["odd"]),
    "non-numeric token": ("10 five", ["non-numeric", "'five'"]),
    "run beyond the image": ("6140 10", ["beyond", "6144"]),
    "start beyond the image": ("6145 1", ["beyond"]),
    "zero start": ("0 5", [">= 1"]),
    "overlapping runs": ("10 5 12 3", ["overlap"]),
    "unsorted runs": ("100 5 10 5", ["sorted"]),
}


@pytest.mark.parametrize(("rle", "words"), BAD_RLES.values(), ids=BAD_RLES.keys())
def test_malformed_rle(project: Path, rle: str, words: list[str]) -> None:
    line = 7  # the second image's Flower row
    label = set_rle(train_csv(project), line, rle)
    result = run_cli("preprocess", cwd=project)
    assert_failed(result, "data/train.csv", f"line {line}", label, *words)
    assert_no_outputs(project, "preprocess")


# ------------------------------------------------------------------------- bad structure of train.csv


def wrong_header(path: Path) -> tuple[str, ...]:
    lines = read_lines(path)
    lines[0] = "Image_Label,Pixels"
    write_lines(path, lines)
    return ("data/train.csv", "Image_Label,EncodedPixels", "Image_Label,Pixels")


def unknown_class(path: Path) -> tuple[str, ...]:
    lines = read_lines(path)
    label, rle = lines[5].split(",", 1)  # line 6: the second image's Fish row
    assert label.endswith("_Fish")
    lines[5] = f"{label.removesuffix('_Fish')}_Fsh,{rle}"
    write_lines(path, lines)
    return ("data/train.csv", "line 6", "_Fsh", "Fish, Flower, Gravel, Sugar")


def missing_class_row(path: Path) -> tuple[str, ...]:
    lines = read_lines(path)
    label = lines.pop(7)  # line 8: the second image's Gravel row
    write_lines(path, lines)
    image_id, cls = label.split(",")[0].rsplit("_", 1)
    return ("data/train.csv", image_id, cls)


def duplicated_row(path: Path) -> tuple[str, ...]:
    lines = read_lines(path)
    lines.append(lines[6])  # line 7 again, as line 26
    write_lines(path, lines)
    return ("data/train.csv", f"line {len(lines)}", "duplicate", lines[6].split(",")[0])


def empty_csv(path: Path) -> tuple[str, ...]:
    path.write_text("")
    return ("data/train.csv",)


def ragged_csv(path: Path) -> tuple[str, ...]:
    lines = read_lines(path)
    lines[4] += ",extra"  # line 5 has three fields
    write_lines(path, lines)
    return ("data/train.csv", "line 5")


LABEL_ERRORS = [wrong_header, unknown_class, missing_class_row, duplicated_row, empty_csv, ragged_csv]
# Every case through preprocess; fold reads train.csv with the same code and costs ~1.5 s a run
# (it imports scikit-learn), so only two cases go through it.
CASES = [(f, "preprocess") for f in LABEL_ERRORS] + [(wrong_header, "fold"), (unknown_class, "fold")]


@pytest.mark.parametrize(("corrupt", "command"), CASES, ids=[f"{f.__name__}-{c}" for f, c in CASES])
def test_bad_train_csv(project: Path, command: str, corrupt: Callable[[Path], tuple[str, ...]]) -> None:
    needles = corrupt(train_csv(project))
    result = run_cli(command, cwd=project)
    assert_failed(result, *needles)
    assert_no_outputs(project, command)


def test_missing_train_csv(project: Path) -> None:
    train_csv(project).unlink()
    assert_failed(run_cli("preprocess", cwd=project), "data/train.csv", "not found")
    assert_no_outputs(project, "preprocess")


def test_bad_sample_submission_header(project: Path) -> None:
    path = project / "data" / "sample_submission.csv"
    lines = read_lines(path)
    lines[0] = "image,rle"
    write_lines(path, lines)
    assert_failed(run_cli("preprocess", cwd=project), "data/sample_submission.csv", "Image_Label,EncodedPixels")
    assert_no_outputs(project, "preprocess")


# -------------------------------------------------------------------------------------------- bad images


def test_missing_image(project: Path) -> None:
    image = project / "data" / "train_images" / train_ids(project)[2]
    image.unlink()
    result = run_cli("preprocess", cwd=project)
    assert_failed(result, f"data/train_images/{image.name}", "not found")
    assert_no_outputs(project, "preprocess")


def test_missing_test_image(project: Path) -> None:
    folder = project / "data" / "test_images"
    image = sorted(folder.iterdir())[0]
    image.unlink()
    assert_failed(run_cli("preprocess", cwd=project), f"data/test_images/{image.name}")
    assert_no_outputs(project, "preprocess")


@pytest.mark.parametrize("workers", [1, 2])
def test_unreadable_image(project: Path, workers: int) -> None:
    edit_params(project, lambda p: p["preprocess"].update(workers=workers))
    image = project / "data" / "train_images" / train_ids(project)[3]
    image.write_bytes(b"this is not a JPEG\x00\xff" * 20)
    result = run_cli("preprocess", cwd=project)
    assert_failed(result, f"data/train_images/{image.name}", "cannot read")
    assert_no_outputs(project, "preprocess")


def test_image_of_wrong_size(project: Path) -> None:
    image = project / "data" / "train_images" / train_ids(project)[1]
    assert cv2.imwrite(str(image), np.full((32, 48, 3), 90, np.uint8))
    result = run_cli("preprocess", cwd=project)
    assert_failed(result, f"data/train_images/{image.name}", "32x48", f"{HEIGHT}x{WIDTH}")
    assert_no_outputs(project, "preprocess")


# -------------------------------------------------------------------------------------------- bad params


def test_unknown_param_suggests_the_close_key(project: Path) -> None:
    edit_params(project, lambda p: p["fold"].update(n_split=p["fold"].pop("n_splits")))
    result = run_cli("fold", cwd=project)
    assert_failed(result, "params.yaml", "n_split", "n_splits", "did you mean")
    assert_no_outputs(project, "fold")


def test_unknown_section(project: Path) -> None:
    edit_params(project, lambda p: p.update(preprocss=p.pop("preprocess")))
    assert_failed(run_cli("preprocess", cwd=project), "params.yaml", "preprocss", "preprocess")
    assert_no_outputs(project, "preprocess")


def test_wrong_param_type(project: Path) -> None:
    edit_params(project, lambda p: p["preprocess"].update(workers="two"))
    assert_failed(run_cli("preprocess", cwd=project), "params.yaml", "preprocess.workers", "'two'", "integer")
    assert_no_outputs(project, "preprocess")


def test_missing_param(project: Path) -> None:
    edit_params(project, lambda p: p["preprocess"].pop("workers"))
    assert_failed(run_cli("preprocess", cwd=project), "params.yaml", "preprocess.", "workers")
    assert_no_outputs(project, "preprocess")


def test_missing_params_file(project: Path) -> None:
    (project / "params.yaml").unlink()
    assert_failed(run_cli("preprocess", cwd=project), "params.yaml", "not found")
    assert_no_outputs(project, "preprocess")


def test_invalid_yaml(project: Path) -> None:
    (project / "params.yaml").write_text("data: [unclosed\n")
    assert_failed(run_cli("preprocess", cwd=project), "params.yaml", "YAML")
    assert_no_outputs(project, "preprocess")


def test_more_folds_than_images(project: Path) -> None:
    edit_params(project, lambda p: p["fold"].update(n_splits=N_TRAIN + 1))
    result = run_cli("fold", cwd=project)
    assert_failed(result, "fold.n_splits", str(N_TRAIN + 1), f"{N_TRAIN} images")
    assert_no_outputs(project, "fold")


def test_preprocess_size_not_multiple_of_32(project: Path) -> None:
    edit_params(project, lambda p: p["preprocess"].update(cache_size=[33, 64]))
    result = run_cli("preprocess", cwd=project)
    assert_failed(result, "params.yaml", "preprocess.cache_size", "multiples of 32", "[33, 64]")
    assert_no_outputs(project, "preprocess")


@pytest.mark.parametrize("params", ["exp[v2]/params.yaml", "exp[/old]/params.yaml"], ids=["tag", "closing-tag"])
def test_error_message_is_printed_verbatim(tmp_path: Path, params: str) -> None:
    """'[...]' in a message is text, not Rich markup (once eaten as a style tag, or a MarkupError traceback)."""
    result = run_cli("preprocess", "--params", params, cwd=tmp_path)
    assert_failed(result, params, "not found")


def test_csv_value_with_brackets_is_printed_verbatim(project: Path) -> None:
    lines = read_lines(train_csv(project))
    label = lines[5].split(",")[0].replace("_Fish", "_[/Fish]")  # line 6
    lines[5] = f"{label},"
    write_lines(train_csv(project), lines)
    assert_failed(run_cli("preprocess", cwd=project), "data/train.csv", "line 6", label)
    assert_no_outputs(project, "preprocess")


def test_infer_warns_of_a_tta_view_training_never_shows(tmp_path: Path) -> None:
    params = params_for_tiny_data()
    params["infer"]["tta"] = ["none", "transpose"]  # augment.transpose is 0.0
    write_params(tmp_path, params)
    result = run_cli("infer", "--model", "seg1", cwd=tmp_path)  # then fails: nothing trained here
    assert "warning: infer.tta: training never shows the transpose view" in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------- demo-data


def test_demo_data_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = run_cli(
        "demo-data", "d", "--n-train", "1", "--n-test", "1", "--height", "16", "--width", "24", cwd=tmp_path
    )
    assert_failed(result, "d", "not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
