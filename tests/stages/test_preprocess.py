import json

import cv2
import numpy as np
import pandas as pd
import pytest

from cloudcli import CLASSES
from cloudcli.config import load_params
from cloudcli.data.cache import array_path, open_cache, resize_mask, unpack_masks
from cloudcli.data.kaggle import presence, read_image, read_labels, to_wide
from cloudcli.rle import decode
from cloudcli.stages import preprocess


def test_resize_mask_keeps_pixels_at_least_half_covered() -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[0:2, 0:2] = 1  # full block -> in
    mask[0:2, 2] = 1  # 2 of 4 pixels -> in
    mask[2, 0] = 1  # 1 of 4 pixels -> out
    np.testing.assert_array_equal(resize_mask(mask, (2, 2)), [[1, 1], [0, 0]])


@pytest.fixture
def cache(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project)
    p = load_params("params.yaml")
    preprocess.run(p.data, p.preprocess, tiny_project / "out", tiny_project / "metrics.json")
    return p, open_cache(tiny_project / "out")


def test_cache_holds_the_resized_images_and_masks(cache, tiny_project) -> None:
    _, c = cache
    wide = to_wide(read_labels(tiny_project / "data/train.csv", None, CLASSES), CLASSES)
    images, masks, truth = c.array("train_images"), c.array("train_masks"), c.array("train_truth")
    assert images.shape == (24, 32, 64, 3) and masks.shape == (24, 32, 64) and truth.shape == (24, 32, 48)
    assert list(c.train["image_id"]) == list(wide.index)
    np.testing.assert_array_equal(c.train[list(CLASSES)].to_numpy(), presence(wide, CLASSES))
    for i in (0, 7, 23):
        image = read_image(tiny_project / "data/train_images" / wide.index[i], (64, 96))
        np.testing.assert_array_equal(images[i], cv2.resize(image, (64, 32), interpolation=cv2.INTER_AREA))
        full = [decode(wide.iloc[i][cls], (64, 96)) for cls in CLASSES]
        np.testing.assert_array_equal(unpack_masks(masks[i], 4), [resize_mask(m, (32, 64)) for m in full])
        np.testing.assert_array_equal(unpack_masks(truth[i], 4), [resize_mask(m, (32, 48)) for m in full])
    submission = pd.read_csv(tiny_project / "data/sample_submission.csv", keep_default_na=False)
    assert list(c.test["image_id"]) == list(pd.unique(submission["Image_Label"].str.rsplit("_", n=1).str[0]))
    assert c.array("test_images").shape == (6, 32, 64, 3)
    assert c.meta["params"]["preprocess"]["cache_size"] == [32, 64] and "numpy" in c.meta["versions"]
    stats = json.loads((tiny_project / "metrics.json").read_text())
    assert stats["n_train"] == 24 and stats["labels_non_empty"] == pytest.approx(
        presence(wide, CLASSES).mean(), abs=1e-4
    )


def test_parallel_workers_write_the_same_bytes(cache, tiny_project) -> None:
    p, _ = cache
    two = p.preprocess.__class__(cache_size=p.preprocess.cache_size, workers=2)
    preprocess.run(p.data, two, tiny_project / "out2", tiny_project / "metrics2.json")
    for name in ("train_images", "train_masks", "train_truth", "test_images"):
        assert (
            array_path(tiny_project / "out", name).read_bytes() == array_path(tiny_project / "out2", name).read_bytes()
        )
