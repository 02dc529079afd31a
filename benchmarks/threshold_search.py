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

import cv2
import numpy as np

from cloudcli.metrics import dice
from cloudcli.post.rules import drop_small_components, level_of
from cloudcli.post.search import LEVELS, search

COMPONENT_LEVELS = tuple(level_of(t) for t in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7))
MIN_COMPONENTS = (0, 500, 1000, 2500, 5000)

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


def smooth_class(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Maps like a model's: a blurred blob over the truth box, blurred noise and a few specks."""
    probs, truth = np.empty((n, *shape), np.uint8), np.zeros((n, *shape), bool)
    h, w = shape
    for i in range(n):
        if rng.random() < 0.5:
            y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
            truth[i, y : y + rng.integers(h // 8, h // 2), x : x + rng.integers(w // 8, w // 2)] = True
        noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 6)
        p = 0.6 * cv2.GaussianBlur(truth[i].astype(np.float32), (0, 0), 8) + 12 * (noise - 0.5) + 0.2
        probs[i] = np.clip(p * 255, 0, 255).astype(np.uint8)
    return probs, truth


def naive_component_seconds(probs: np.ndarray, truth: np.ndarray, points: int) -> float:
    """Seconds to threshold, drop small components, apply min_area and score one map at one grid point."""
    rng = np.random.default_rng(2)
    grid = [
        (rng.choice(COMPONENT_LEVELS), rng.choice(MIN_COMPONENTS[1:]), rng.choice(MIN_AREAS)) for _ in range(points)
    ]
    start = time.perf_counter()
    for level, min_component, min_area in grid:
        for p, t in zip(probs, truth):
            mask = drop_small_components((p > level).astype(np.uint8), int(min_component))
            if mask.sum() < min_area:
                mask[:] = 0
            dice(mask, t)
    return (time.perf_counter() - start) / (points * len(probs))


def components(a: argparse.Namespace) -> None:
    rng = np.random.default_rng(3)
    probs, truth = smooth_class(rng, a.component_maps, (350, 525))
    start = time.perf_counter()
    result = search(probs, truth, MIN_AREAS, MIN_COMPONENTS, COMPONENT_LEVELS)
    fast = time.perf_counter() - start
    plain_start = time.perf_counter()
    plain = search(probs, truth, MIN_AREAS)
    plain_s = time.perf_counter() - plain_start
    naive = naive_component_seconds(probs[: a.naive_maps], truth[: a.naive_maps], a.naive_pairs)
    n_maps = 4 * a.images
    grid = len(COMPONENT_LEVELS) * (len(MIN_COMPONENTS) - 1) * len(MIN_AREAS)
    scale = n_maps / a.component_maps
    print(
        f"\ncomponent rule on {a.component_maps} smooth maps: best level {result.level}, min_component "
        f"{result.min_component}, min_area {result.min_area}, Dice {result.score:.4f} (without: {plain.score:.4f})"
    )
    print(
        f"{len(COMPONENT_LEVELS)} levels x {len(MIN_COMPONENTS) - 1} min_components x {len(MIN_AREAS)} min_areas "
        f"({grid} grid points) on top of the 255 x {len(MIN_AREAS)} plain grid"
    )
    print(f"search with components: {fast:8.1f} s ({fast - plain_s:.1f} s for the components) -> {fast * scale:.0f} s "
          f"extrapolated to {n_maps} maps")  # fmt: skip
    naive_total = naive * n_maps * grid
    print(f"naive component grid ({naive * 1e3:.2f} ms per map per grid point): {naive_total:,.0f} s extrapolated")
    print(f"speed-up of the component grid: {naive_total / ((fast - plain_s) * scale):,.0f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5546, help="images; 4 maps each (Kaggle train: 5546)")
    ap.add_argument("--naive-maps", type=int, default=20)
    ap.add_argument("--naive-pairs", type=int, default=5)
    ap.add_argument("--component-maps", type=int, default=1000, help="maps timed for the component rule")
    ap.add_argument("--skip-plain", action="store_true", help="only the component-rule benchmark")
    a = ap.parse_args()
    if a.skip_plain:
        return components(a)
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
    components(a)


if __name__ == "__main__":
    main()
