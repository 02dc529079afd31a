"""benchmarks/scale.py: the project it fabricates is in infer's exact formats with maps the search
has real work on, its memory probe sees a process tree, and its smoke run measures every stage."""

from __future__ import annotations

import json
import sys

import numpy as np
import procs
import pytest
from helpers import REPO, load_benchmark

SCRIPT = REPO / "benchmarks/scale.py"


def test_maps_follow_the_truth_with_errors_shared_by_the_models() -> None:
    scale = load_benchmark(SCRIPT)
    truth = scale.truth_of(np.random.default_rng(3))
    maps = [scale.maps_of(truth, np.random.default_rng(1), np.random.default_rng(m), 1.0) for m in (10, 11)]
    inside = ((truth[None] >> np.arange(4)[:, None, None]) & 1).astype(bool)  # (C, H, W)
    for m in maps:
        assert m.shape == (4, *scale.SCORE) and m.dtype == np.uint8
        assert m[inside].mean() > m[~inside].mean() + 30  # higher inside the truth
    a, b = (m.astype(float).ravel() for m in maps)
    assert 0.5 < np.corrcoef(a, b)[0, 1] < 0.99  # two models: alike, not the same


def test_the_probe_sees_the_children_of_a_process(tmp_path) -> None:
    script = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'x = bytearray(300 << 20); import time; time.sleep(1.5)'])"
    result = load_benchmark(SCRIPT).probe([sys.executable, "-c", script], tmp_path, tmp_path / "log")
    assert result["peak_heap"] > 300 << 20 and result["peak_rss"] >= result["peak_heap"]
    assert result["wall_s"] >= 1.5


@pytest.mark.slow
def test_the_smoke_run_measures_every_stage(tmp_path) -> None:
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--fraction",
        "0.003",
        "--work",
        str(tmp_path),
        "--out",
        str(tmp_path),
        "--keep",
    ]
    result = procs.run(cmd, REPO, None, 300)
    assert result.returncode == 0, result.stderr + result.stdout
    record = json.loads((tmp_path / "scale-0.003.json").read_text())
    assert (record["n_train"], record["n_test"]) == (17, 11)
    assert list(record["stages"]) == ["pseudo", "ensemble", "tune", "submit", "report predictions"]
    for stage, r in record["stages"].items():
        assert r["wall_s"] > 0 and r["peak_rss"] >= r["peak_heap"] > 0 and r["input_bytes"] > 0, stage
        assert f"| {stage} |" in result.stdout
    tuned = json.loads((tmp_path / "project/metrics/tune.json").read_text())["after"]["dice"]
    assert 0.5 < tuned < 0.95  # the search has real work on these maps
