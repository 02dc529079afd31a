"""benchmarks/labels.py, the parts that score: the suspect ranking against an answer key, the
chance of a random ranking (against every ranking, enumerated), and the relabelled masks' Dice."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, load_benchmark

from cloudcli import CLASSES
from cloudcli.rle import encode

bench = load_benchmark(REPO / "benchmarks/labels.py")


def test_ranking_counts_the_corrupted_images_at_k_and_k_over_2_and_per_kind() -> None:
    key = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "kind": ["dropped", "shifted", "shifted", "swapped"]})
    suspects = pd.DataFrame(
        {
            "image_id": ["b", "x", "d", "y", "a", "z"],  # a is 5th: out of the top 4
            "kind": ["wrong place", "extra label", "missing label", "missing label", "missing label", "wrong place"],
        }
    )
    r = bench.ranking(suspects, key, n_train=20)
    assert (r["k"], r["listed"], r["hits_at_k"], r["precision_at_k"]) == (4, 6, 2, 0.5)
    assert (r["half_k"], r["precision_at_half_k"], r["chance"]) == (2, 0.5, 0.2)
    assert r["top_k"] == ["b", "x", "d", "y"]
    assert r["kinds"] == {
        "dropped": {"corrupted": 1, "in_top_k": 0, "recall": 0.0, "expected_name": "missing label", "named": {}},
        "shifted": {
            "corrupted": 2,
            "in_top_k": 1,
            "recall": 0.5,
            "expected_name": "wrong place",
            "named": {"wrong place": 1},
        },
        "swapped": {
            "corrupted": 1,
            "in_top_k": 1,
            "recall": 1.0,
            "expected_name": "wrong class",
            "named": {"missing label": 1},
        },
    }
    assert r["p_random_as_good"] == pytest.approx(bench.hypergeometric_tail(20, 4, 2), rel=1e-3)
    short = bench.ranking(suspects.head(1), key, n_train=20)  # a list shorter than k misses the rest
    assert (short["precision_at_k"], short["precision_at_half_k"], short["listed"]) == (0.25, 0.5, 1)


@pytest.mark.parametrize(("n", "k"), [(8, 3), (9, 4)])
def test_the_chance_of_a_random_ranking_matches_every_ranking_enumerated(n, k) -> None:
    corrupted = set(range(k))
    counts = [len(corrupted & set(top)) for top in itertools.combinations(range(n), k)]
    for hits in range(k + 1):
        expected = sum(c >= hits for c in counts) / len(counts)
        assert bench.hypergeometric_tail(n, k, hits) == pytest.approx(expected, abs=1e-12)


def test_relabelled_scores_the_excluded_images_new_and_given_labels_against_the_truth(tmp_path) -> None:
    """Two images of 4x6 scored at 2x3: 'p' relabelled right in fold 0, 'q' in fold 1 with its
    Fish half missing; a test image in fold 0's set does not count."""
    repo, key = tmp_path / "repo", tmp_path / "key"
    size, score = [4, 6], [2, 3]
    full, left = np.ones((4, 6), np.uint8), np.zeros((4, 6), np.uint8)
    left[:, :2] = 1  # at 2x3: the first column, 2 px

    def labels(rows: dict, shape) -> pd.DataFrame:
        """Kaggle format: image id -> {class: mask}, masks resized to `shape` by striding."""
        step = 4 // shape[0]
        out = [
            (f"{i}_{c}", encode(masks[c][::step, ::step]) if c in masks else "")
            for i, masks in rows.items()
            for c in CLASSES
        ]
        return pd.DataFrame(out, columns=["Image_Label", "EncodedPixels"])

    truth = {"p": {"Fish": full}, "q": {"Fish": full, "Sugar": left}}
    (repo / "data").mkdir(parents=True)
    key.mkdir()
    labels({"p": {"Gravel": full}, "q": {"Fish": full, "Sugar": left}}, size).to_csv(
        repo / "data/train.csv", index=False
    )
    labels(truth, size).to_csv(key / "train_truth.csv", index=False)
    pd.DataFrame({"image_id": ["p"], "kind": ["swapped"]}).to_csv(key / "label_noise.csv", index=False)
    sets = {
        0: ({"t": {"Fish": full}, "p": {"Fish": full}}, ["test", "excluded"]),
        1: ({"q": {"Fish": left}}, ["excluded"]),
    }
    for k, (rows, sources) in sets.items():
        fold = repo / f"pseudo/r1/fold{k}"
        fold.mkdir(parents=True)
        pd.DataFrame({"image_id": list(rows), "source": sources}).to_csv(fold / "images.csv", index=False)
        labels(rows, score).to_csv(fold / "labels.csv", index=False)
    (repo / "metrics/pseudo").mkdir(parents=True)
    (repo / "metrics/pseudo/r1.json").write_text(json.dumps({"sources": {"excluded": {"images": 1.0}}}))
    params = {"data": {"classes": list(CLASSES), "raw_size": size, "score_size": score}}

    out = bench.relabelled(repo, key, params)
    # new: p's 4 rows right; q's Fish 2 px of 6 (Dice 2 * 2 / (2 + 6)), Flower and Gravel right, Sugar missing
    # given: p's Fish missing and Gravel extra, Flower and Sugar right; q's 4 rows right
    assert out == {
        "sources_mean_over_folds": {"excluded": {"images": 1.0}},
        "set_rows": 2,
        "distinct": 2,
        "corrupted": 1,
        "dice_new_vs_true": 0.8125,
        "dice_given_vs_true": 0.75,
    }
