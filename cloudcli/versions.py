"""Library versions recorded next to every artifact."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("cloudcli", "numpy", "pandas", "opencv-python-headless", "iterative-stratification",
            "torch", "segmentation-models-pytorch", "albumentations", "dvc")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
