"""Reading what `infer` and `tune` wrote, with errors that say which stage to run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli import CLASSES
from cloudcli.errors import DataError


def _missing(path: Path, stage: str) -> DataError:
    return DataError(f"{path}: missing; run `dvc repro {stage}` (or `cloudcli {stage}`) first")


def read_masks(folder: Path, split: str, stage: str = "infer") -> tuple[list[str], np.ndarray]:
    """(image ids, (N, C, H, W) uint8 memory map) of a segmentation model's (or the ensemble's,
    stage="ensemble") `split` ('oof' or 'test')."""
    try:
        ids = list(pd.read_csv(folder / f"{split}.csv", dtype={"image_id": str})["image_id"])
        return ids, np.load(folder / f"{split}.npy", mmap_mode="r")
    except FileNotFoundError as e:
        raise _missing(Path(e.filename), stage) from None


def read_classifier(folder: Path, split: str, ids: list[str]) -> np.ndarray:
    """(N, C) classifier probabilities of `split` for `ids`, in that order (the class columns infer wrote)."""
    path = folder / f"{split}.csv"
    try:
        table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    except FileNotFoundError:
        raise _missing(path, "infer") from None
    missing = set(ids) - set(table.index)
    if missing:
        raise DataError(f"{path}: no prediction for {len(missing)} images, e.g. {sorted(missing)[0]}; rerun infer")
    return table.loc[ids, [c for c in table.columns if c != "fold"]].to_numpy()  # the class columns, in order


def classes_of(folder: Path) -> tuple[str, ...]:
    """Class names of a prediction folder (written by infer; older folders: the Kaggle four)."""
    try:
        return tuple(json.loads((folder / "meta.json").read_text()).get("classes", CLASSES))
    except FileNotFoundError:
        raise _missing(folder / "meta.json", "infer") from None


THRESHOLD_KEYS = (
    "seg1",
    "shape",
    "shape_is_ensemble",
    "classifier",
    "class_score",
    "top_k",
    "at_least_one",
    "fitted_on",
    "classes",
)


def read_thresholds(path: Path) -> dict:
    try:
        chosen = json.loads(path.read_text())
    except FileNotFoundError:
        raise _missing(path, "tune") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); rerun `dvc repro tune`") from None
    missing = [k for k in THRESHOLD_KEYS if k not in chosen]
    if missing:
        raise DataError(
            f"{path}: no {', '.join(missing)} (written by another cloudcli version?); rerun `dvc repro tune`"
        )
    return chosen


def fingerprint(folder: Path) -> str:
    """sha1 of a prediction folder's meta.json: identifies what tune fitted its rules on."""
    import hashlib

    try:
        return hashlib.sha1((folder / "meta.json").read_bytes()).hexdigest()
    except FileNotFoundError:
        raise _missing(folder / "meta.json", "infer") from None


PSEUDO_PREDICTIONS = Path("pseudo/predictions")  # where infer writes pseudo-label models' predictions


def model_folder(name: str, predictions: Path, pseudo_predictions: Path = PSEUDO_PREDICTIONS) -> Path:
    """A model's prediction folder: predictions/NAME; for a pseudo-label model, its last round's
    (pseudo/rounds/rN/predictions/NAME, as pseudo/rounds/meta.json says) or pseudo/predictions/NAME."""
    candidates = [predictions / name]
    rounds = pseudo_predictions.parent / "rounds" / "meta.json"
    if rounds.exists():
        try:
            final = json.loads(rounds.read_text())["final"]
        except (KeyError, TypeError, json.JSONDecodeError):
            raise DataError(f"{rounds}: not a pseudo_rounds meta.json; rerun `dvc repro pseudo_rounds`") from None
        if name in final:  # the last round's predictions, or an error: never silently round 1's
            folder = rounds.parent / final[name]
            if not (folder / "meta.json").exists():
                raise DataError(f"{folder / 'meta.json'}: missing ({rounds} names it); rerun `dvc repro pseudo_rounds`")
            return folder
    candidates.append(pseudo_predictions / name)
    for folder in candidates:
        if (folder / "meta.json").exists():
            return folder
    raise DataError(
        f"no predictions of {name!r} in {predictions} or {pseudo_predictions.parent}; "
        f"run `dvc repro` (or `cloudcli infer --model {name}`) first"
    )


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise _missing(folder / "meta.json", "infer") from None


def aligned_masks(folders: list[Path], split: str) -> tuple[list[str], list[np.ndarray]]:
    """Image ids and (N, C, H, W) maps of several models, checked to cover the same rows in the same order."""
    ids, arrays = None, []
    for folder in folders:
        these, probs = read_masks(folder, split)
        if ids is not None and these != ids:
            raise DataError(
                f"{folder / f'{split}.csv'}: rows differ from {folders[0] / f'{split}.csv'}; "
                "infer every model with the same cv.folds (dvc repro)"
            )
        ids = these
        if arrays and probs.shape != arrays[0].shape:
            raise DataError(f"{folder / f'{split}.npy'}: shape {probs.shape}, {folders[0]} has {arrays[0].shape}")
        arrays.append(probs)
    return ids, arrays


def oof_truth(cache, ids: list[str], where: Path) -> np.ndarray:
    """(N, H, W) packed truth masks of the cache for the OOF rows `ids`, in that order."""
    rows = pd.Index(cache.train["image_id"]).get_indexer(ids)
    if (rows < 0).any():
        raise DataError(f"{where}: {ids[int(np.argmin(rows))]} is not in {cache.folder}; rerun infer")
    return cache.array("train_truth")[rows]
