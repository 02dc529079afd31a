"""benchmarks/predict_scene.py: its smoke run predicts every scene through the real command line,
and the scenes it writes are what it says (size, bands, georeferencing, a tenth without data)."""

from __future__ import annotations

import json
import sys

import numpy as np
import procs
import pytest
import rasterio
from helpers import REPO, load_benchmark

SCRIPT = REPO / "benchmarks/predict_scene.py"


def test_the_scene_is_a_four_band_geotiff_with_a_tenth_without_data(tmp_path) -> None:
    load_benchmark(SCRIPT).write_scene(tmp_path / "scene.tif", 700)
    with rasterio.open(tmp_path / "scene.tif") as src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (4, 700, 700, "uint16")
        assert src.crs.to_epsg() == 32633 and src.block_shapes[0] == (512, 512)
        pixels = src.read()
    empty = (pixels == 0).all(0)
    assert 0.09 < empty.mean() < 0.11 and not (pixels[:, ~empty] == 0).any()
    assert empty[-1, -1] and not empty[0, 0]


@pytest.mark.slow
def test_the_smoke_run_measures_every_scene(tmp_path) -> None:
    result = procs.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)], REPO, None, 300)
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads((tmp_path / "predict_scene.json").read_text())
    assert [r["input"] for r in summary["rows"]] == ["one chip (reference)", "300x300 scene", "1200x1200 scene"]
    for row in summary["rows"]:
        assert row["peak_rss_mib"] > 100 and row["predict_s"] >= 0 and "1 label rasters" in row["said"]
    assert np.isclose(
        summary["rss_big_over_small"],
        summary["rows"][2]["peak_rss_mib"] / summary["rows"][1]["peak_rss_mib"],
        atol=1e-3,
    )
    assert "peak RSS big/small scene" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["predict_scene.json"]  # the scenes and bundle are removed
