"""Helpers shared by the tests: the repository root, the real command line, tiny params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import procs
import yaml

from cloudcli import CLASSES
from cloudcli.data.maps import maps_path, open_maps, write_maps
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


def cloudcli_here(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    """The command line run in this process, as `cloudcli` does in a subprocess: no interpreter
    and torch start-up, for the many short cases. An unexpected exception propagates."""
    import contextlib
    import io

    from cloudcli.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    here, argv = os.getcwd(), sys.argv
    try:
        os.chdir(cwd)
        sys.argv = ["cloudcli", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(here)
        sys.argv = argv
    if check and code != 0:
        raise AssertionError(f"cloudcli {' '.join(args)} failed:\n{out.getvalue()}\n{err.getvalue()}")
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def kaggle_data(raw: str | Path, raw_size: tuple[int, int], score_size: tuple[int, int]):
    """A DataConfig of the Kaggle kind (the other keys at their defaults)."""
    from cloudcli.config import DataConfig

    return DataConfig("kaggle_clouds", str(raw), raw_size, score_size, None, None, (1.0, 99.0), None, None)


def write_cache(
    folder: Path,
    train_ids: list[str] = (),
    test_ids: list[str] = (),
    train_truth=None,
    test_truth=None,
    cache_size: tuple[int, int] = (8, 8),
) -> None:
    """A preprocessed cache in its two parts as the stages read it: index.csv and meta.json of each
    part and, given (N, 4, H, W) 0/1 truth masks in row order, truth.npy (train presence follows it)."""
    from cloudcli.data.cache import array_path, pack_masks

    truths = {"train": train_truth, "test": test_truth}
    for part, ids in (("train", list(train_ids)), ("test", list(test_ids))):
        (folder / part).mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame({"image_id": ids})
        truth = truths[part]
        if part == "train":
            present = np.zeros((len(ids), len(CLASSES)), int) if truth is None else truth.any((2, 3)).astype(int)
            table = table.assign(**{c: present[:, k] for k, c in enumerate(CLASSES)})
        table.to_csv(folder / part / "index.csv", index=False)
        arrays = {f"{part}_images": [len(ids), *cache_size, 3]}
        if truth is not None:
            np.save(array_path(folder, f"{part}_truth"), pack_masks(truth))
            arrays[f"{part}_truth"] = [len(ids), *truth.shape[2:]]
        (folder / part / "meta.json").write_text(json.dumps({"classes": list(CLASSES), "arrays": arrays}))


def write_cache_meta(folder: Path, test_ids: list[str], score_size: tuple[int, int], truth=None) -> None:
    """A cache holding what submit reads: the test order, classes, sizes and, given (M, 4, H, W)
    0/1 `truth` in that order, the test truth."""
    del score_size  # the truth's own size
    write_cache(folder, test_ids=test_ids, test_truth=truth)


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
        shutil.rmtree(maps_path(folder, split), ignore_errors=True)  # a test may replace a model's maps
        if probs is not None:
            write_maps(maps_path(folder, split), np.asarray(probs, np.uint8))
        pd.DataFrame({"image_id": ids, "fold": 0}).to_csv(folder / f"{split}.csv", index=False)


def load_maps(folder, split="oof") -> np.ndarray:
    """A prediction folder's (N, C, H, W) maps of `split`, whole."""
    return open_maps(Path(folder), split)[:]


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


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes) and every folder (-> b"<dir>")."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" if p.is_dir() else b"<special>"
        for p in folder.rglob("*")
    }


def load_benchmark(script: Path):
    """A benchmark script (benchmarks/*.py) imported as a module, to test its parts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmarks_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_each_fold(project: Path, spec, root: Path, folds: tuple[int, ...] = (0, 1, 2), epochs: int = 1) -> None:
    """The ResolvedModel `spec` trained `epochs` on each of `folds` of the project's cache (tiny_cache),
    into root/models/<name>/fold<k> (curves in root/live/...), as `cloudcli train` does."""
    import dataclasses

    from cloudcli.config import load_params
    from cloudcli.stages import train

    augment = load_params(project / "params.yaml").augment
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, epochs=epochs))
    for fold in folds:
        train.run(
            spec,
            augment,
            project / "artifacts/preprocessed",
            project / "artifacts/folds.csv",
            fold,
            root / "models" / spec.name / f"fold{fold}",
            root / "live" / spec.name / f"fold{fold}",
        )
