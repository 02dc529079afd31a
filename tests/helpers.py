"""Helpers shared by the tests: the repository root, the real command line, tiny params."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {"height": 64, "width": 96}  # raw image size of the tiny demo datasets


def cloudcli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    result = subprocess.run(
        [sys.executable, "-m", "cloudcli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"cloudcli {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def tiny_params(**sections: dict) -> dict:
    """The repository's params.yaml adapted to the tiny demo data, with overrides per section."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(image_size=[TINY["height"], TINY["width"]], score_size=[32, 48])
    params["preprocess"].update(image_size=[32, 64], workers=1)
    for name, values in sections.items():
        params[name].update(values)
    return params
