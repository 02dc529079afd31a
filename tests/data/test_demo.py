from collections import Counter

import cv2
import numpy as np
import pandas as pd
import pytest

from cloudcli import CLASSES
from cloudcli.data.demo import DemoSpec, generate, render, sample_classes
from cloudcli.data.kaggle import image_paths, presence, read_image, read_labels, to_wide
from cloudcli.errors import DataError
from cloudcli.rle import decode


def files(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path) -> None:
    spec = DemoSpec(n_train=5, n_test=2, seed=3, height=64, width=96)
    generate(tmp_path / "a", spec, workers=2)
    generate(tmp_path / "b", spec, workers=1)  # worker count must not matter
    generate(tmp_path / "c", DemoSpec(5, 2, 4, 64, 96), workers=1)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a").keys() != files(tmp_path / "c").keys()  # other ids


def test_label_statistics_resemble_the_real_data() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_classes(rng) for _ in range(4000)]
    per_image = Counter(len(d) for d in draws)
    assert set(per_image) == {1, 2, 3, 4}  # 1-4 classes, never none
    assert all(len(set(d)) == len(d) for d in draws)
    present = np.zeros((len(draws), 4), bool)
    for i, d in enumerate(draws):
        present[i, d] = True
    assert 0.45 <= 1 - present.mean() <= 0.55  # about half the rows are empty
    assert np.argmax(present.mean(0)) == CLASSES.index("Sugar")  # the most frequent, as in train.csv


def test_dataset_is_complete_kaggle_format(tiny_demo) -> None:
    long = read_labels(tiny_demo / "train.csv", (64, 96), CLASSES)
    wide = to_wide(long, CLASSES)
    assert len(wide) == 24 and presence(wide, CLASSES).sum(1).min() >= 1
    for image_id, row in wide.iterrows():
        for cls in CLASSES:
            if row[cls]:
                assert decode(row[cls], (64, 96)).any(), (image_id, cls)
    assert read_image(image_paths(tiny_demo, "train", list(wide.index))[0], (64, 96)).shape == (64, 96, 3)
    submission = pd.read_csv(tiny_demo / "sample_submission.csv", keep_default_na=False)
    truth = read_labels(tiny_demo / "test_truth.csv", (64, 96), CLASSES)
    assert list(submission["Image_Label"]) == list(truth["image_id"] + "_" + truth["cls"])
    assert len(submission) == 6 * 4 and set(submission["EncodedPixels"]) == {"1 1"}
    assert not set(wide.index) & set(truth["image_id"])  # train and test images differ
    image_paths(tiny_demo, "test", list(pd.unique(truth["image_id"])))


def test_refuses_non_empty_folder(tmp_path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty; pass --force"):
        generate(tmp_path, DemoSpec(1, 1, 0, 16, 16))
    assert (tmp_path / "keep.txt").exists()


def features(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
    inside = mask.astype(bool)
    return np.array([grey[inside].mean(), grey[inside].std(), lap[inside].mean()])


def test_class_textures_are_separable() -> None:
    """A nearest-centroid rule on 3 simple region statistics tells the classes apart, at the
    default training size: a small CNN has plenty to learn from."""
    X, y = [], []
    for i in range(40):
        image, rles = render(np.random.SeedSequence([7, i]), 700, 1050)
        small = cv2.resize(image, (288, 192), interpolation=cv2.INTER_AREA)
        masks = np.array([decode(r, (700, 1050)) if r else np.zeros((700, 1050), np.uint8) for r in rles])
        masks = np.array([cv2.resize(m, (288, 192), interpolation=cv2.INTER_NEAREST) for m in masks])
        for k in np.flatnonzero([bool(r) for r in rles]):
            only = (masks[k] == 1) & (masks.sum(0) == 1)  # pixels of this class alone
            if only.sum() > 200:
                X.append(features(small, only))
                y.append(k)
    X, y = (np.array(X) - np.mean(X, 0)) / np.std(X, 0), np.array(y)
    correct = 0
    for i in range(len(y)):  # leave-one-out
        keep = np.arange(len(y)) != i
        centroids = np.array([X[keep][y[keep] == k].mean(0) for k in range(4)])
        correct += np.argmin(((centroids - X[i]) ** 2).sum(1)) == y[i]
    assert set(y) == {0, 1, 2, 3} and correct / len(y) > 0.9
