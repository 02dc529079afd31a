"""Damaged images: truncated JPEGs (which libjpeg decodes with grey rows and a warning), truncated
PNGs, empty files, text named .jpg, folders in an image's place, for the Kaggle layout and image/mask
tiles. Each ends in one line naming the file, with nothing written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from helpers import cloudcli_here

from cloudcli.config.presets import preset_params
from cloudcli.data.images import imread
from cloudcli.errors import DataError


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "last bytes":
        path.write_bytes(data[:-2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("<html>404 Not Found</html>\n")
    elif how == "folder":
        path.unlink()
        path.mkdir()
    else:
        raise ValueError(how)


WORDS = {  # damage -> words of the error
    "half": "truncated JPEG",
    "last bytes": "truncated JPEG",
    "empty": "cannot read image",
    "text": "cannot read image",
    "folder": "is a folder",
}


@pytest.mark.parametrize("how", list(WORDS))
@pytest.mark.parametrize("split", ["train_images", "test_images"])
def test_damaged_jpeg_in_the_kaggle_layout(tiny_project: Path, split: str, how: str, fails_cleanly) -> None:
    image = sorted((tiny_project / "data" / split).iterdir())[3]
    damage(image, how)
    run = lambda: cloudcli_here("preprocess", cwd=tiny_project)  # noqa: E731
    line = fails_cleanly(tiny_project, run, image.name, WORDS[how], progress=True)
    assert str(Path("data") / split / image.name) in line


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """A tiny image/mask tile dataset (PNG) with its params; copy before changing it."""
    root = tmp_path_factory.mktemp("tiles")
    args = ["--kind", "image_mask", "--n-train", "6", "--n-test", "2", "--height", "32", "--width", "32"]
    cloudcli_here("demo-data", "raw", *args, "--workers", "1", cwd=root, check=True)
    params = preset_params("image_mask")
    params["data"].update(raw="raw", raw_size=[32, 32], score_size=[32, 32])
    params["preprocess"].update(cache_size=[32, 32], workers=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.mark.parametrize("how", ["half", "last bytes", "empty", "text"])
@pytest.mark.parametrize("what", ["train/images", "train/masks", "test/images"])
def test_damaged_tile_or_mask(tiles: Path, tmp_path: Path, what: str, how: str, fails_cleanly) -> None:
    import shutil

    project = shutil.copytree(tiles, tmp_path / "p")
    path = sorted((project / "raw" / what).iterdir())[1]
    damage(path, how)
    run = lambda: cloudcli_here("preprocess", cwd=project)  # noqa: E731
    fails_cleanly(project, run, str(Path("raw") / what / path.name), "cannot read", progress=True)


def test_a_whole_jpeg_reads_as_opencv_reads_it(tmp_path: Path) -> None:
    """The check costs nothing on whole files: the same pixels as cv2.imread, padding after the end
    marker allowed, a PNG named .jpg decoded by its contents."""
    image = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    cv2.imwrite(str(tmp_path / "b.jpg.png"), image)
    (tmp_path / "b.jpg.png").rename(tmp_path / "b.jpg")
    (tmp_path / "padded.jpg").write_bytes((tmp_path / "a.jpg").read_bytes() + b"\0" * 100)
    for name in ["a.jpg", "b.jpg", "padded.jpg"]:
        want = cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR)
        assert np.array_equal(imread(tmp_path / name, cv2.IMREAD_COLOR), want), name
    with pytest.raises(DataError, match="truncated JPEG"):
        (tmp_path / "cut.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:-100])
        imread(tmp_path / "cut.jpg")
