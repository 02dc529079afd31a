"""cloudcli demo-data --label-noise: which images get wrong labels, how, and the answer key."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from cloudcli import CLASSES
from cloudcli.data.demo import DemoSpec, generate
from cloudcli.data.demo_noise import KINDS, SHIFT, corrupt
from cloudcli.errors import DataError
from cloudcli.rle import decode

SIZE = (64, 96)


def labels(path) -> pd.DataFrame:
    """(image, class) -> RLE of a Kaggle-format CSV, as an (N, C) table of strings."""
    frame = pd.read_csv(path, keep_default_na=False)
    frame[["image_id", "cls"]] = frame["Image_Label"].str.rsplit("_", n=1, expand=True)
    return frame.pivot(index="image_id", columns="cls", values="EncodedPixels")[list(CLASSES)]


def test_without_noise_the_files_are_those_of_the_generator_before_the_option(tmp_path) -> None:
    generate(tmp_path / "a", DemoSpec(n_train=6, n_test=2, seed=3, height=64, width=96), workers=1)
    generate(tmp_path / "b", DemoSpec(6, 2, 3, 64, 96, label_noise=0.0), workers=1)
    digests = {  # sha256 of the files the generator wrote before --label-noise existed
        "train.csv": "d88a991dec254e431986753b6e5f14e301c19e7cff6dbf26b685023be82f150a",
        "test_truth.csv": "79b4d54188bdac2346321acaf2ca1e796649ac6cc81bfd364f2a996040a55764",
        "sample_submission.csv": "ea27b3692fc4e5243ad3a3caa4565a3362fb28e70255eedfcd5e656a23dcecdb",
    }
    for folder in ("a", "b"):
        found = {p.name for p in (tmp_path / folder).iterdir() if p.is_file()}
        assert found == set(digests)  # no answer key without noise
        for name, digest in digests.items():
            assert hashlib.sha256((tmp_path / folder / name).read_bytes()).hexdigest() == digest


def test_noisy_demo_answer_key_is_the_difference_of_truth_and_train_csv(tmp_path) -> None:
    spec = DemoSpec(n_train=20, n_test=2, seed=5, height=64, width=96, label_noise=0.15)
    generate(tmp_path / "a", spec, workers=2)
    generate(tmp_path / "b", spec, workers=1)
    generate(tmp_path / "clean", DemoSpec(20, 2, 5, 64, 96), workers=1)
    a, b, clean = tmp_path / "a", tmp_path / "b", tmp_path / "clean"
    for name in ("train.csv", "train_truth.csv", "label_noise.csv", "test_truth.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name  # same seed, same bytes
    assert (a / "train_truth.csv").read_bytes() == (clean / "train.csv").read_bytes()
    for name in ("test_truth.csv", "sample_submission.csv"):
        assert (a / name).read_bytes() == (clean / name).read_bytes()  # only the training labels change
    for p in (clean / "train_images").iterdir():
        assert (a / "train_images" / p.name).read_bytes() == p.read_bytes()
    noisy, truth = labels(a / "train.csv"), labels(a / "train_truth.csv")
    key = pd.read_csv(a / "label_noise.csv", dtype=str, keep_default_na=False)
    assert len(key) == round(0.15 * 20) == 3
    differ = (noisy != truth).to_numpy()
    assert sorted(noisy.index[differ.any(1)]) == list(key["image_id"])  # the key lists the changed images
    for row in key.itertuples():
        changed = [c for c in CLASSES if noisy.loc[row.image_id, c] != truth.loc[row.image_id, c]]
        assert " ".join(changed) == row.classes
        assert (noisy.loc[row.image_id] != "").any()  # every image keeps a class


def random_labels(rng, n: int) -> tuple[list[str], list[list[str]]]:
    from cloudcli.rle import encode

    ids, rles = [f"{i:07x}.jpg" for i in range(n)], []
    for _ in range(n):
        present = rng.random(len(CLASSES)) < 0.5
        present[rng.integers(len(CLASSES))] = True
        masks = []
        for k in range(len(CLASSES)):
            mask = np.zeros(SIZE, np.uint8)
            if present[k]:
                y, x = rng.integers(0, 40), rng.integers(0, 60)
                mask[y : y + rng.integers(8, 24), x : x + rng.integers(8, 36)] = 1
            masks.append(encode(mask))
        rles.append(masks)
    return ids, rles


@pytest.mark.parametrize("n", [1, 7, 200])
def test_each_kind_changes_the_labels_as_it_says(n) -> None:
    ids, rles = random_labels(np.random.default_rng(n), n)
    original = [list(r) for r in rles]
    noisy, key = corrupt(ids, rles, 0.15, seed=11, size=SIZE, classes=CLASSES)
    assert rles == original  # the input is left alone
    assert len(key) == round(0.15 * n) and key["image_id"].is_monotonic_increasing
    if n == 200:
        assert set(key["kind"]) == set(KINDS) and key["kind"].value_counts().min() >= 8
    index = {image_id: i for i, image_id in enumerate(ids)}
    unchanged = set(range(n)) - {index[i] for i in key["image_id"]}
    assert all(noisy[i] == rles[i] for i in unchanged)
    for row in key.itertuples():
        before, after = rles[index[row.image_id]], noisy[index[row.image_id]]
        ks = [CLASSES.index(c) for c in row.classes.split()]
        assert [k for k in range(len(CLASSES)) if before[k] != after[k]] == ks
        if row.kind == "dropped":
            assert after[ks[0]] == "" and before[ks[0]] != "" and sum(r != "" for r in after) >= 1
        elif row.kind == "swapped":
            assert (after[ks[0]], after[ks[1]]) == (before[ks[1]], before[ks[0]])
        else:
            dy, dx = map(int, row.detail.split())
            assert SHIFT[0] * SIZE[0] - 1 <= abs(dy) <= SHIFT[1] * SIZE[0] + 1
            assert SHIFT[0] * SIZE[1] - 1 <= abs(dx) <= SHIFT[1] * SIZE[1] + 1
            moved = np.roll(decode(before[ks[0]], SIZE), (dy, dx), axis=(0, 1))
            assert np.array_equal(decode(after[ks[0]], SIZE), moved)
    again, key2 = corrupt(ids, rles, 0.15, seed=11, size=SIZE, classes=CLASSES)
    assert again == noisy and key2.equals(key)
    other = corrupt(ids, rles, 0.15, seed=12, size=SIZE, classes=CLASSES)[1]
    assert n < 7 or not other.equals(key)


def test_label_noise_outside_0_to_1_is_refused(tmp_path) -> None:
    with pytest.raises(DataError, match=r"--label-noise 1.5: must be a share of the training images, 0 to 1"):
        generate(tmp_path / "x", DemoSpec(4, 2, 0, 64, 96, label_noise=1.5))


def test_command_line_writes_the_key_and_refuses_noise_on_other_kinds(tmp_path) -> None:
    from helpers import cloudcli_here

    args = ("--n-train", "10", "--n-test", "1", "--height", "16", "--width", "24", "--workers", "1")
    done = cloudcli_here("demo-data", "d", *args, "--label-noise", "0.3", cwd=tmp_path, check=True)
    assert len(pd.read_csv(tmp_path / "d" / "label_noise.csv")) == 3
    assert "3 with wrong labels (answer key label_noise.csv, train_truth.csv)" in " ".join(
        (done.stdout + done.stderr).split()
    )
    refused = cloudcli_here("demo-data", "c", "--kind", "chips", "--label-noise", "0.1", cwd=tmp_path)
    assert refused.returncode != 0 and not (tmp_path / "c").exists()
    assert "--label-noise: only kaggle_clouds demo data has label noise, not chips" in refused.stdout + refused.stderr
