"""Names and ids: model and class names from params.yaml, and image ids from the raw data's CSVs
and folders, are plain names checked where they enter, so none reaches a shell command of
dvc.yaml or a path outside the data folder or the project."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import cloudcli_here, tiny_params

# ------------------------------------------------------------------------------ params.yaml names

BAD_MODEL_NAMES = [
    "seg1; rm -rf ~",
    "$(touch pwned)",
    "`id`",
    "seg1 && ls",
    "../evil",
    "a/b",
    "seg.1",  # dvc.yaml's params would read models.seg.1
    "-rf",
    " seg1",
    "seg 1",
    "ség1",
    "",
    "x" * 65,
]


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("name", BAD_MODEL_NAMES)
def test_unsafe_model_name(name: str, tmp_path: Path, fails_cleanly) -> None:
    params = tiny_params()
    params["models"][name] = dict(params["models"]["seg2"])
    params["cv"]["models"] = [*params["cv"]["models"], name]  # where dvc.yaml would make a shell command of it
    write_params(tmp_path, params)
    run = lambda: cloudcli_here("fold", cwd=tmp_path)  # noqa: E731
    fails_cleanly(tmp_path, run, "params.yaml", "models:", repr(name), "not a plain name")


def test_reserved_model_name(tmp_path: Path, fails_cleanly) -> None:
    params = tiny_params()
    params["models"]["ensemble"] = dict(params["models"]["seg2"])
    write_params(tmp_path, params)
    fails_cleanly(tmp_path, lambda: cloudcli_here("fold", cwd=tmp_path), "models:", "'ensemble' is reserved")


@pytest.mark.parametrize("name", ["seg1; ls", "../seg1", "nope"])
def test_model_option_names_a_known_model(name: str, tmp_path: Path, fails_cleanly) -> None:
    write_params(tmp_path, tiny_params())
    run = lambda: cloudcli_here("train", "--model", name, "--fold", "0", cwd=tmp_path)  # noqa: E731
    fails_cleanly(tmp_path, run, "unknown model", repr(name))


@pytest.mark.parametrize("name", ["../r1", "r1;ls", "R1", "r 1", "base"])
def test_unsafe_round_name(name: str, tmp_path: Path, fails_cleanly) -> None:
    write_params(tmp_path, tiny_params(pseudo_rounds={name: {"after": "base", "relabel": {}}}))
    fails_cleanly(tmp_path, lambda: cloudcli_here("fold", cwd=tmp_path), "params.yaml", "pseudo_rounds.", "folder name")


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "a;b", "a b", "$(id)", "roof_top", "", "é"])
def test_unsafe_class_name(name: str, tmp_path: Path, fails_cleanly) -> None:
    write_params(tmp_path, tiny_params(data={"kind": "image_mask", "classes": ["building", name]}))
    fails_cleanly(tmp_path, lambda: cloudcli_here("fold", cwd=tmp_path), "params.yaml", "data.classes")


# ------------------------------------------------------------------------------- image ids in CSVs

BAD_IDS = [
    "../outside.jpg",
    "../../outside.jpg",  # a real JPEG there: read from outside the data folder before ids were checked
    "sub/x.jpg",
    "/etc/hostname",
    "..\\x.jpg",
    ".hidden.jpg",
    "..",
    ".",
    "a\x01.jpg",
]


def replace_first_id(csv: Path, bad: str) -> str:
    """Give the first image of a Kaggle label CSV the id `bad` (on all its rows); returns the old id."""
    lines = csv.read_text().splitlines()
    old = lines[1].split(",")[0].rsplit("_", 1)[0]
    lines = [f"{bad}{line[len(old) :]}" if line.startswith(f"{old}_") else line for line in lines]
    csv.write_text("\n".join(lines) + "\n")
    return old


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize(
    ("csv", "command"),
    [
        ("train.csv", ["preprocess"]),
        ("train.csv", ["fold"]),
        ("train.csv", ["report", "data"]),
        ("sample_submission.csv", ["preprocess"]),
        ("test_truth.csv", ["preprocess"]),
    ],
)
def test_unsafe_image_id_in_csv(bad: str, csv: str, command: list[str], tiny_project: Path, fails_cleanly) -> None:
    old = replace_first_id(tiny_project / "data" / csv, bad)
    split = "train" if csv == "train.csv" else "test"
    shutil.copy(tiny_project / "data" / f"{split}_images" / old, tiny_project / "outside.jpg")
    run = lambda: cloudcli_here(*command, cwd=tiny_project)  # noqa: E731
    fails_cleanly(tiny_project, run, f"{csv} line 2", f"image id {bad!r}")


def test_empty_image_id(tiny_project: Path, fails_cleanly) -> None:
    replace_first_id(tiny_project / "data" / "train.csv", "")
    fails_cleanly(tiny_project, lambda: cloudcli_here("fold", cwd=tiny_project), "train.csv line 2", "is empty")


@pytest.mark.parametrize("bad", ["../x.jpg", ".x.jpg", "a/b.jpg"])
def test_unsafe_image_id_in_a_checked_submission(bad: str, tiny_project: Path, fails_cleanly) -> None:
    sub = tiny_project / "sub.csv"
    shutil.copy(tiny_project / "data" / "sample_submission.csv", sub)
    replace_first_id(sub, bad)
    run = lambda: cloudcli_here("submit", "--check", "sub.csv", cwd=tiny_project)  # noqa: E731
    fails_cleanly(tiny_project, run, "sub.csv line 2", repr(bad))


@pytest.mark.parametrize("bad", ["../x.jpg", ".x", "a/b"])
def test_unsafe_image_id_in_metadata(bad: str, tiny_project: Path, fails_cleanly) -> None:
    labels = (tiny_project / "data" / "train.csv").read_text().splitlines()[1:]
    ids = list(dict.fromkeys(line.split(",")[0].rsplit("_", 1)[0] for line in labels))
    rows = [f"{i},north" for i in ids] + [f"{bad},south"]
    (tiny_project / "data" / "meta.csv").write_text("image_id,location\n" + "\n".join(rows) + "\n")
    write_params(tiny_project, tiny_params(data={"metadata": "meta.csv"}))
    run = lambda: cloudcli_here("fold", cwd=tiny_project)  # noqa: E731
    fails_cleanly(tiny_project, run, f"meta.csv line {len(ids) + 2}", repr(bad))


# ---------------------------------------------------------------------------- image ids in folders


@pytest.mark.parametrize("name", [".ipynb_checkpoints", ".git"])
def test_hidden_chip_folder(name: str, tmp_path: Path, fails_cleanly) -> None:
    for split in ("train_features", "test_features"):
        (tmp_path / "data" / split / name).mkdir(parents=True)
        (tmp_path / "data" / split / "chip1").mkdir()
    write_params(tmp_path, tiny_params(data={"kind": "chips", "bands": ["B02"], "classes": None}))
    run = lambda: cloudcli_here("fold", cwd=tmp_path)  # noqa: E731
    fails_cleanly(tmp_path, run, f"train_features/{name}", "starts with '.'")


@pytest.mark.parametrize("file", [".hidden.png", "..png", "._a.png"])
def test_hidden_image_file(file: str, tmp_path: Path, fails_cleanly) -> None:
    for split in ("train", "test"):
        (tmp_path / "data" / split / "images").mkdir(parents=True)
        (tmp_path / "data" / split / "images" / file).write_bytes(b"")
    write_params(tmp_path, tiny_params(data={"kind": "image_mask", "classes": ["building"]}))
    run = lambda: cloudcli_here("fold", cwd=tmp_path)  # noqa: E731
    fails_cleanly(tmp_path, run, f"train/images/{file}", "starts with '.'")


# ------------------------------------------------------------------------------------------- show


@pytest.mark.parametrize("image_id", ["../../outside", "../show/x", "/tmp/x", "..", ""])
def test_show_finds_no_image_outside_the_data(image_id: str, tiny_project: Path, fails_cleanly) -> None:
    run = lambda: cloudcli_here("show", image_id, cwd=tiny_project)  # noqa: E731
    fails_cleanly(tiny_project, run, "no such image")


def test_show_writes_under_show_named_by_the_dataset_id(tiny_project: Path) -> None:
    first = (tiny_project / "data" / "train.csv").read_text().splitlines()[1].split(",")[0].rsplit("_", 1)[0]
    result = cloudcli_here("show", first, cwd=tiny_project, check=True)
    written = tiny_project / "show" / f"{first.removesuffix('.jpg')}.png"
    assert result.stdout.strip().endswith(str(written.relative_to(tiny_project))) and written.is_file()
