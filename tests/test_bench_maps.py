"""benchmarks/maps.py: the ratio it prints is the stored size against the raw maps, model by model."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import procs
from helpers import REPO

from cloudcli.data.maps import maps_path, write_maps

SCRIPT = REPO / "benchmarks/maps.py"


def smooth(rng, n: int) -> np.ndarray:
    small = rng.random((n * 4, 6, 8)).astype(np.float32)
    maps = np.stack([cv2.resize(m, (40, 30)) for m in small]) * 255  # smooth, as models' maps are
    return maps.astype(np.uint8).reshape(n, 4, 30, 40)


def test_ratios_are_raw_over_stored_bytes_per_model(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for model, n in (("seg1", 12), ("seg2", 7)):
        for split, rows in (("oof", n), ("test", 5)):
            write_maps(maps_path(tmp_path / "predictions/base" / model, split), smooth(rng, rows))
    write_maps(maps_path(tmp_path / "predictions/base/noise", "oof"), rng.integers(0, 256, (3, 4, 30, 40), np.uint8))
    result = procs.run([sys.executable, str(SCRIPT), "--predictions", "predictions", "--out", "."], tmp_path, None, 120)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "maps.json").read_text())
    assert len(record["maps"]) == 5
    for r in record["maps"]:
        stored = sum(f.stat().st_size for f in (tmp_path / "predictions" / r["maps"]).rglob("*") if f.is_file())
        assert r["raw_bytes"] == np.prod(r["shape"]) and r["stored_bytes"] == stored
        assert r["ratio"] == round(r["raw_bytes"] / stored, 2)
    assert record["models"]["base/seg1"]["ratio"] > 1.2 > 1 > record["models"]["base/noise"]["ratio"]  # smooth vs noise
    assert "| base/seg2 |" in result.stdout and record["read_zarr_s"] > 0 and record["read_raw_s"] > 0
