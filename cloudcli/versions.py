"""Library versions recorded next to every artifact."""

from __future__ import annotations

import platform
from contextlib import suppress
from importlib.metadata import PackageNotFoundError, version

PACKAGES = (
    "cloudcli",
    "numpy",
    "pandas",
    "opencv-python-headless",
    "iterative-stratification",
    "torch",
    "segmentation-models-pytorch",
    "albumentations",
    "dvc",
)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with suppress(PackageNotFoundError):  # optional packages may be absent
            out[name] = version(name)
    return out
