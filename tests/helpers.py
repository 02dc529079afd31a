"""Helpers shared by the tests: the repository root, the real command line, tiny params."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import procs
import yaml

from cloudcli import CLASSES
from cloudcli.metrics import dice
from cloudcli.post.search import LEVELS

REPO = Path(__file__).resolve().parents[1]
TINY = {"height": 64, "width": 96}  # raw image size of the tiny demo datasets


def cloudcli(*args: str, cwd: Path, check: bool = True, timeout: float = procs.TIMEOUT) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess, at most `timeout` seconds."""
    result = procs.run([sys.executable, "-m", "cloudcli", *args], cwd, {**os.environ, "COLUMNS": "200"}, timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"cloudcli {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def kaggle_data(raw: str | Path, raw_size: tuple[int, int], score_size: tuple[int, int]):
    """A DataConfig of the Kaggle kind (the other keys at their defaults)."""
    from cloudcli.config import DataConfig

    return DataConfig("kaggle_clouds", str(raw), raw_size, score_size, None, None, (1.0, 99.0), None, None)


def write_cache_meta(folder: Path, test_ids: list[str], score_size: tuple[int, int], truth=None) -> None:
    """A cache folder holding what submit reads: test.csv (order), meta.json (classes, sizes) and,
    given (M, 4, H, W) 0/1 `truth` in that order, test_truth.npy."""
    from cloudcli.data.cache import pack_masks

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"image_id": test_ids}).to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"image_id": [], **{c: [] for c in CLASSES}}).to_csv(folder / "train.csv", index=False)
    arrays = {"test_images": [len(test_ids), 8, 8, 3]}
    if truth is not None:
        np.save(folder / "test_truth.npy", pack_masks(truth))
        arrays["test_truth"] = [len(test_ids), *score_size]
    (folder / "meta.json").write_text(json.dumps({"classes": list(CLASSES), "arrays": arrays}))


def tiny_params(**sections: dict) -> dict:
    """The repository's params.yaml adapted to the tiny demo data, with overrides per section."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(raw_size=[TINY["height"], TINY["width"]], score_size=[32, 48])
    params["preprocess"].update(cache_size=[32, 64], workers=1)
    for name, values in sections.items():
        params[name].update(values)
    return params


def save_model(folder, ids, role, probs=None, classifier_probs=None, split="oof"):
    """A model's prediction folder as infer writes it: maps (segmentation) or a probability table (classifier)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"role": role, "classes": list(CLASSES)}))
    if classifier_probs is not None:
        table = pd.DataFrame({"image_id": ids, **{c: classifier_probs[:, k] for k, c in enumerate(CLASSES)}})
        table.to_csv(folder / f"{split}.csv", index=False)
    else:
        np.save(folder / f"{split}.npy", probs)
        pd.DataFrame({"image_id": ids, "fold": 0}).to_csv(folder / f"{split}.csv", index=False)


def brute_force_grid(probs: np.ndarray, truth: np.ndarray, min_areas: tuple[int, ...]) -> np.ndarray:
    """(255, A) mean Dice, re-thresholding and re-scoring every map at every (level, min_area)."""
    scores = np.zeros((len(LEVELS), len(min_areas)))
    for i, level in enumerate(LEVELS):
        for j, a in enumerate(min_areas):
            total = 0.0
            for p, t in zip(probs, truth):
                mask = p > level
                if mask.sum() < a:
                    mask[:] = False
                total += dice(mask, t)
            scores[i, j] = total / len(probs)
    return scores
