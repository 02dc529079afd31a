"""Stage `cv`: cross-validated scores of every trained model, for `dvc exp show`.

Segmentation Dice is exact over all out-of-fold rows (each fold's best epoch, threshold 0.5):
the per-row sums of every fold add up. Also the score of predicting every mask empty.
Per-fold, per-class numbers are in each model's summary.json and DVCLive curves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli import paths
from cloudcli.config import CvConfig, ModelEntry
from cloudcli.data.folds import read_split
from cloudcli.errors import DataError
from cloudcli.io import need_keys, read_json, write_json
from cloudcli.metrics import sums_report
from cloudcli.ui import info

PARAMS = ("cv", "models", "pseudo.models", "pseudo_rounds")


def run(
    cv: CvConfig,
    models: dict[str, ModelEntry],
    models_dir: Path,
    cache: Path,
    folds_csv: Path,
    out: Path,
    pseudo_models: tuple[str, ...] = (),
    rounds: tuple[str, ...] = (),
) -> dict:
    """Scores of cv.models and of each round's pseudo-label models (as `<model>@<round>`)."""
    classes = tuple(pd.read_csv(cache / "train" / "index.csv", nrows=0).columns.drop("image_id"))  # the cache's classes
    result = {name: model_score(name, models[name].role, cv.folds, models_dir, classes) for name in cv.models}
    for r in rounds:
        for name in pseudo_models:
            folder = paths.models_of(r, models_dir)
            result[f"{name}@{r}"] = model_score(name, models[name].role, cv.folds, folder, classes)
    result["all_empty"] = {"dice": round(all_empty_dice(cache, folds_csv, cv.folds), 4)}
    write_json(out, result)
    for name, scores in result.items():
        info(f"cv {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float)))
    return result


def model_score(name: str, role: str, folds: tuple[int, ...], models_dir: Path, classes: tuple[str, ...]) -> dict:
    summaries = [read_summary(models_dir / name / f"fold{k}" / "summary.json", name, k, role, classes) for k in folds]
    if role == "classifier":
        weights = np.array([s["n_valid"] for s in summaries], dtype=float)
        return {
            k: round(float(np.average([s["metrics"][k] for s in summaries], weights=weights)), 4)
            for k in ("auc", "accuracy")
        }
    report = sums_report(np.sum([s["metrics"]["sums"] for s in summaries], axis=0), classes)
    return {
        "dice": round(report.mean, 4),
        "dice_pos": round_or_none(report.non_empty),
        "dice_neg": round_or_none(report.empty),
    }


def read_summary(path: Path, name: str, fold: int, role: str, classes: tuple[str, ...]) -> dict:
    """A trained fold's summary.json, checked to hold the numbers cv scores it by: a classifier's
    AUC and accuracy, a segmentation model's DiceSums vector (cloudcli.metrics) over `classes`."""
    command = f"cloudcli train --model {name} --fold {fold}"
    retrain = f"retrain it ({command})"
    summary = read_json(path, retrain, missing=f"train it first: `dvc repro` (or {command})")
    need_keys(summary, {"metrics": dict, "n_valid": int}, path, retrain)
    if role == "classifier":
        need_keys(summary["metrics"], {"auc": float, "accuracy": float}, f"{path}: metrics", retrain)
        return summary
    sums = need_keys(summary["metrics"], {"sums": list}, f"{path}: metrics", retrain)["sums"]
    n = 2 * len(classes) + 4
    if len(sums) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums):
        raise DataError(
            f"{path}: metrics 'sums' is not {n} numbers (the Dice sums of {len(classes)} classes); {retrain}"
        )
    return summary


def round_or_none(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def all_empty_dice(cache: Path, folds_csv: Path, folds: tuple[int, ...]) -> float:
    """Dice of predicting every mask empty on the validation rows of `folds` (excluded images,
    data.exclude, are no validation rows): the empty-row share."""
    presence = pd.read_csv(cache / "train" / "index.csv", dtype={"image_id": str}).set_index("image_id")
    fold_of, excluded = read_split(folds_csv, list(presence.index), need=tuple(folds))
    rows = presence[np.isin(fold_of, folds) & ~excluded]
    return float((rows.to_numpy() == 0).mean())
