"""Threshold x min_area search on a Kaggle-size out-of-fold set: histogram method vs naive.

    python benchmarks/threshold_search.py              # 5546 images x 4 classes of 350x525 uint8
    python benchmarks/threshold_search.py --images 500 # quicker

Synthetic OOF maps (one class at a time, 1 GB each): a box of truth per map, probabilities high
inside and noisy everywhere. The search covers all 255 levels x 15 min_area values per class.
The naive method (threshold, apply min_area and score every map at every grid point) is timed on
a subset of maps and grid points and extrapolated to the full grid.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cloudcli.metrics import dice
from cloudcli.search import LEVELS, search

MIN_AREAS = (0, 500, 1000, 2500, 5000, 7500, 10000, 12500, 15000, 17500, 20000, 22500, 25000, 27500, 30000)


def synthetic_class(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    truth = np.zeros((n, h, w), bool)
    present = rng.random(n) < 0.5
    for i in np.flatnonzero(present):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        truth[i, y : y + rng.integers(h // 8, h // 2), x : x + rng.integers(w // 8, w // 2)] = True
    probs = rng.integers(0, 160, (n, h, w), dtype=np.uint8)
    probs[truth] += 90  # inside the truth: 90..249
    return probs, truth


def naive_seconds_per_pair(probs: np.ndarray, truth: np.ndarray, pairs: int) -> float:
    """Seconds to threshold, apply min_area and score one map at one grid point."""
    rng = np.random.default_rng(1)
    grid = [(int(rng.choice(LEVELS)), int(rng.choice(MIN_AREAS))) for _ in range(pairs)]
    start = time.perf_counter()
    for level, min_area in grid:
        for p, t in zip(probs, truth):
            mask = p > level
            if mask.sum() < min_area:
                mask[:] = False
            dice(mask, t)
    return (time.perf_counter() - start) / (pairs * len(probs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5546, help="images; 4 maps each (Kaggle train: 5546)")
    ap.add_argument("--naive-maps", type=int, default=20)
    ap.add_argument("--naive-pairs", type=int, default=5)
    a = ap.parse_args()
    shape, rng = (350, 525), np.random.default_rng(0)
    fast, naive = 0.0, []
    for k in range(4):
        probs, truth = synthetic_class(rng, a.images, shape)
        start = time.perf_counter()
        result = search(probs, truth, MIN_AREAS)
        fast += time.perf_counter() - start
        print(
            f"class {k}: best level {result.level} (p > {result.level / 255:.3f}), min_area {result.min_area}, "
            f"Dice {result.score:.4f}; {time.perf_counter() - start:.1f}s",
            flush=True,
        )
        naive.append(naive_seconds_per_pair(probs[: a.naive_maps], truth[: a.naive_maps], a.naive_pairs))
        del probs, truth
    n_maps, grid = 4 * a.images, len(LEVELS) * len(MIN_AREAS)
    naive_total = float(np.mean(naive)) * n_maps * grid
    print(f"{n_maps} maps of {shape[0]}x{shape[1]}, {len(LEVELS)} levels x {len(MIN_AREAS)} min_areas x 4 classes")
    print(f"histogram search:  {fast:10.1f} s")
    print(
        f"naive (extrapolated from {a.naive_maps} maps x {a.naive_pairs} grid points per class, "
        f"{np.mean(naive) * 1e3:.2f} ms per map per grid point): {naive_total:10.0f} s = {naive_total / 3600:.1f} h"
    )
    print(f"speed-up: {naive_total / fast:,.0f}x")


if __name__ == "__main__":
    main()
