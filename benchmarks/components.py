"""The component rule at every level (one union-find sweep per map) against OpenCV at 9 levels.

    python benchmarks/components.py --out benchmarks/results          # 400 maps, about a minute

Fabricates 350x525 maps as benchmarks/scale.py does (truth masks of the demo's boxes and blobs,
a model's smooth probabilities with errors of their own), then times, per map:

- compile: the first call in a fresh process, with an empty numba cache (numba compiles the
  kernel) and again with that cache filled (what every later run pays), reported apart;
- sweep: cloudcli.post.components.component_sweep, every level x tune.min_components, on 1 and
  on 2 threads, after a warm-up call; search.counts (the histograms, the sweep and the
  (N, 1275) grid columns tune scores), on 2 threads; and search.best, scoring those columns x
  the 15 default min_areas;
- the reference, in the same run on the same maps: the former path, OpenCV's connected
  components at each of the former default's 9 levels (0.3..0.7), which the sweep's columns at
  those levels must equal (checked).

Prints ms per map, the ratio to the reference, the projection to Kaggle's 22,184 maps (5546
images x 4 classes) on 2 cores, and peak resident memory; writes DIR/components.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scale import SCORE, maps_of, truth_of  # noqa: E402

from cloudcli.post.components import component_sweep  # noqa: E402
from cloudcli.post.rules import level_of  # noqa: E402
from cloudcli.post.search import LEVELS, best, counts  # noqa: E402

KAGGLE_MAPS = 5546 * 4
MIN_COMPONENTS = (0, 500, 1000, 2500, 5000)  # the default tune.min_components
MIN_AREAS = (0, 100, 250, 500, 1000, 2000, 3000, 5000, 7500, 10000, 12500, 15000, 17500, 20000, 25000)  # tune.min_areas
OLD_LEVELS = tuple(level_of(t) for t in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7))
FIRST_CALL = """
import time, numpy as np
start = time.perf_counter()
from cloudcli.post.components import component_sweep
imported = time.perf_counter()
component_sweep(np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), bool), (0, 5))
print(imported - start, time.perf_counter() - imported)
"""


def fabricate(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 350, 525) uint8 maps and bool truth: the 4 classes of n // 4 images."""
    rng, maps, truth = np.random.default_rng(0), [], []
    for i in range((n + 3) // 4):
        packed = truth_of(rng)
        maps.append(maps_of(packed, np.random.default_rng([7, i]), np.random.default_rng([7, i, 100]), 1.0))
        truth.append((packed[None] >> np.arange(4)[:, None, None]) & 1 != 0)
    return np.concatenate(maps)[:n], np.concatenate(truth)[:n]


def opencv_counts(probs: np.ndarray, truth: np.ndarray, levels: tuple[int, ...], rules: tuple[int, ...]):
    """(N, L * R) kept area and intersection, column l * R + r: connected components at each level."""
    width = len(levels) * len(rules)
    area, inter = np.zeros((len(probs), width), np.int64), np.zeros((len(probs), width), np.int64)
    for i, (p, t) in enumerate(zip(probs, truth)):
        inside = np.flatnonzero(t)
        for j, level in enumerate(levels):
            count, labels = cv2.connectedComponents((p > level).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
            flat = labels.reshape(-1)
            sizes = np.bincount(flat, minlength=count)[1:]
            order = np.argsort(sizes, kind="stable")
            sizes, hits = sizes[order], np.bincount(flat[inside], minlength=count)[1:][order]
            first = np.searchsorted(sizes, rules, "left")  # first component >= each rule
            cols = slice(j * len(rules), (j + 1) * len(rules))
            area[i, cols] = np.append(np.cumsum(sizes[::-1])[::-1], 0)[first]
            inter[i, cols] = np.append(np.cumsum(hits[::-1])[::-1], 0)[first]
    return area, inter


def first_call() -> dict:
    """Seconds to import and make the first call in a fresh process: empty numba cache, then filled."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": path}
        for name in ("compile_s", "cached_s"):
            run = subprocess.run(
                [sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True
            )
            imported, call = map(float, run.stdout.split())
            out[name], out["import_s"] = round(call, 2), round(imported, 2)
    return out


def per_map(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--maps", type=int, default=400)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    compile_times = first_call()
    probs, truth = fabricate(args.maps)
    n, rules = len(probs), MIN_COMPONENTS[1:]
    component_sweep(probs[:2], truth[:2], rules, threads=1)  # warm-up: compiled or loaded from the cache
    sweep = {t: per_map(lambda t=t: component_sweep(probs, truth, rules, threads=t), n) for t in (1, 2)}
    os.environ["OMP_NUM_THREADS"] = "2"  # counts() runs the sweep on the thread budget
    grid = per_map(lambda: counts(probs, truth, MIN_COMPONENTS, tuple(LEVELS)), n)
    columns = counts(probs, truth, MIN_COMPONENTS, tuple(LEVELS))
    score = per_map(lambda: best(columns, MIN_AREAS), n)
    reference = per_map(lambda: opencv_counts(probs, truth, OLD_LEVELS, rules), n)
    area, inter = component_sweep(probs, truth, rules)
    old_area, old_inter = opencv_counts(probs, truth, OLD_LEVELS, rules)
    same = bool((area[:, list(OLD_LEVELS)].reshape(n, -1) == old_area).all())
    same &= bool((inter[:, list(OLD_LEVELS)].reshape(n, -1) == old_inter).all())
    result = {
        "maps": n, "shape": list(SCORE), "min_components": list(MIN_COMPONENTS), "cpus": len(os.sched_getaffinity(0)),
        **compile_times,
        "sweep_ms_per_map": {"1 thread": round(sweep[1], 3), "2 threads": round(sweep[2], 3)},
        "counts_ms_per_map_2_threads": round(grid, 3),
        "best_ms_per_map": round(score, 3),
        "reference_ms_per_map": round(reference, 3),
        "sweep_equals_reference_at_its_levels": same,
        "projection_s": {"sweep": round(sweep[2] * KAGGLE_MAPS / 1e3, 1), "counts": round(grid * KAGGLE_MAPS / 1e3, 1),
                         "reference": round(reference * KAGGLE_MAPS / 1e3, 1)},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }  # fmt: skip
    (args.out / "components.json").write_text(json.dumps(result, indent=1))
    print(f"{n} maps of {SCORE[0]}x{SCORE[1]}, min_components {MIN_COMPONENTS}, on {result['cpus']} cores")
    print(f"compile (first call, empty cache): {compile_times['compile_s']} s; from the cache: "
          f"{compile_times['cached_s']} s; import: {compile_times['import_s']} s")  # fmt: skip
    print(f"sweep, 255 levels x {len(rules)} rules: {sweep[1]:.2f} ms/map on 1 thread, {sweep[2]:.2f} on 2")
    width = columns.area.shape[1]
    print(f"counts (histograms + sweep + grid columns), 2 threads: {grid:.2f} ms/map; scoring its "
          f"{width} columns x {len(MIN_AREAS)} min_areas (search.best): {score:.2f} ms/map")  # fmt: skip
    print(f"reference, OpenCV at {len(OLD_LEVELS)} levels: {reference:.2f} ms/map; sweep (2 threads) / reference = "
          f"{sweep[2] / reference:.2f}x; equal at those levels: {same}")  # fmt: skip
    p = result["projection_s"]
    print(f"projected to {KAGGLE_MAPS:,} maps on 2 cores: sweep {p['sweep']} s, counts {p['counts']} s "
          f"(reference, 9 levels: {p['reference']} s); peak RSS {result['peak_rss_mb']} MB")  # fmt: skip
    if not same:
        raise SystemExit("the sweep differs from OpenCV's components at the reference levels")


if __name__ == "__main__":
    main()
