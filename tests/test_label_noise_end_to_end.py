"""The suspect ranking finds mislabelled images far above chance, end to end on CPU: a small noisy
demo (`demo-data --label-noise 0.15`), seg1 trained on each fold, `cloudcli report labels`, and
the top k of reports/labels/suspects.csv against the answer key (label_noise.csv; k = the number of
corrupted images).

The setting: 90 training images of 256x384 (textures keep their look at the 64x96 cache, as in
make demo), round(0.15 x 90) = 14 of them mislabelled, a third each dropped, shifted or swapped;
3 folds, so each seg1 trains on 60 images and judges the other 30, for 16 epochs in batches of 4
(240 steps); report_labels at its defaults (seg1, p < 0.1 and p > 0.9). 2 min 40 s on 2 cores,
most of it the three trainings; it found 10 of the 14 (with 2 folds of 10 epochs, 4: a seg1 that
weak is sure of too little).

The bound: a ranking that knows nothing puts a hypergeometric number of the 14 corrupted images in
its top 14 (90 images, 14 marked, 14 drawn): k x k / n = 2.2 on average, precision k / n = 0.156.
The smallest count that such a ranking reaches with probability below 1e-3 is 7 (P = 9.1e-4), and
7 of 14 is precision 0.5, 3.2 x chance: the test requires it. Both figures are computed below, not
trusted. A seg1 this size is sure of the sea and of most clouds' class, so a shifted mask (its
moved part labelled over the sea) and a swapped one (a cloud labelled as a class it is not) score
their area; a dropped mask needs seg1 sure of the cloud the label lacks, so those are found less.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml
from helpers import cloudcli, tiny_params

N_TRAIN, NOISE, SIZE = 90, 0.15, (256, 384)
RANDOM_P = 1e-3  # a random ranking reaches the required precision with at most this probability


def random_tail(n: int, k: int, hits: int) -> float:
    """P(a random top k of n images holds at least `hits` of the k corrupted ones)."""
    return sum(math.comb(k, h) * math.comb(n - k, k - h) for h in range(hits, k + 1)) / math.comb(n, k)


@pytest.mark.slow
def test_the_top_suspects_are_mostly_the_corrupted_images(tmp_path) -> None:
    size = ["--height", str(SIZE[0]), "--width", str(SIZE[1])]
    cloudcli("demo-data", "data", "--n-train", str(N_TRAIN), "--n-test", "2", *size, "--label-noise", str(NOISE),
             cwd=tmp_path)  # fmt: skip
    key = pd.read_csv(tmp_path / "data/label_noise.csv", dtype=str, keep_default_na=False)
    k = len(key)
    bound = next(h for h in range(k + 1) if random_tail(N_TRAIN, k, h) < RANDOM_P)
    assert (k, bound) == (14, 7) and bound / k >= 3 * k / N_TRAIN  # the docstring's figures

    params = tiny_params(
        data={"raw_size": list(SIZE), "score_size": [64, 96]},
        preprocess={"cache_size": [64, 96]},
        fold={"n_splits": 3},
        cv={"folds": [0, 1, 2]},
        train={"epochs": 16, "batch_size": 4},
        report_labels={"top": 2},  # a couple of overlays: the drawing is not under test here
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in ("preprocess", "fold"):
        cloudcli(stage, cwd=tmp_path)
    for fold in (0, 1, 2):
        cloudcli("train", "--model", "seg1", "--fold", str(fold), cwd=tmp_path)
    cloudcli("infer", "--model", "seg1", cwd=tmp_path)
    cloudcli("report", "labels", cwd=tmp_path)

    suspects = pd.read_csv(tmp_path / "reports/labels/suspects.csv", dtype={"image_id": str}, keep_default_na=False)
    top = suspects.head(k).merge(key[["image_id", "kind"]], on="image_id", how="left", suffixes=("", "_true"))
    hits = int(top["kind_true"].notna().sum())
    assert hits >= bound, (
        f"{hits} of the top {k} suspects are corrupted (need {bound}; chance {k * k / N_TRAIN:.1f}):\n"
        f"{top.to_string()}\nanswer key:\n{key.to_string()}"
    )
