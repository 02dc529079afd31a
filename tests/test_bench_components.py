"""benchmarks/components.py: its smoke run times the sweep, the reference and the first call, and
the sweep equals OpenCV's components at the reference levels on its 350x525 maps."""

from __future__ import annotations

import json
import sys

import procs
from helpers import REPO

SCRIPT = REPO / "benchmarks/components.py"


def test_the_smoke_run_measures_the_sweep_against_the_reference(tmp_path) -> None:
    result = procs.run([sys.executable, str(SCRIPT), "--maps", "6", "--out", str(tmp_path)], REPO, None, 120)
    assert result.returncode == 0, result.stderr + result.stdout
    record = json.loads((tmp_path / "components.json").read_text())
    assert record["maps"] == 6 and record["shape"] == [350, 525]
    assert record["sweep_equals_reference_at_its_levels"] is True
    assert record["compile_s"] > 0 and record["cached_s"] > 0 and record["reference_ms_per_map"] > 0
    assert set(record["sweep_ms_per_map"]) == {"1 thread", "2 threads"}
    assert record["projection_s"]["sweep"] > 0 and record["peak_rss_mb"] > 0
    assert "projected to 22,184 maps" in result.stdout
