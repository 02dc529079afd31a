"""Checkpoints written atomically; every one loads with torch.load(weights_only=True)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save(obj: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
