"""Fixtures of the stage tests: out-of-fold predictions of several models on a tiny cache."""

import numpy as np
import pytest
from helpers import save_model, write_cache


@pytest.fixture
def oof(tmp_path):
    """A cache with 30 images' truth at 12x16; noisy OOF (and test) maps of seg1, two seg2 and a classifier."""
    rng = np.random.default_rng(0)
    n, shape = 30, (12, 16)
    truth = np.zeros((n, 4, *shape), np.uint8)
    for i in range(n):
        for k in rng.choice(4, rng.integers(1, 4), replace=False):
            y, x = rng.integers(0, 6, 2)
            truth[i, k, y : y + rng.integers(2, 7), x : x + rng.integers(2, 10)] = 1

    def noisy(low: int, high: int) -> np.ndarray:
        probs = np.clip(rng.integers(0, 140, truth.shape) + truth * rng.integers(low, high, (n, 4, 1, 1)), 0, 255)
        probs = probs.astype(np.uint8)
        probs[(rng.random(truth.shape) < 0.01) & (truth == 0)] = 250  # isolated confident false positives
        return probs

    ids = [f"{i:03d}.jpg" for i in range(n)]
    write_cache(tmp_path / "cache", ids, ids, truth)
    order = rng.permutation(n)  # OOF rows in another order than the cache
    oof_ids = list(np.array(ids)[order])
    maps = {"seg1": noisy(40, 120), "seg2": noisy(60, 140), "seg2b": noisy(50, 130), "seg2c": noisy(30, 110)}
    for name, probs in maps.items():
        role = "seg1" if name == "seg1" else "seg2"
        save_model(tmp_path / "pred/base" / name, oof_ids, role, probs[order])
        save_model(tmp_path / "pred/base" / name, ids, role, noisy(40, 120), split="test")
    classifier_probs = np.clip(truth.any((2, 3)) * 0.5 + rng.random((n, 4)) * 0.6, 0, 1)
    save_model(tmp_path / "pred/base/classifier", ids, "classifier", classifier_probs=classifier_probs)
    return tmp_path, {k: v[order] for k, v in maps.items()}, truth[order], classifier_probs[order]
