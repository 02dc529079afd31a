"""Reading what `infer` and `tune` wrote, with errors that say which stage to run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli import paths
from cloudcli.data.maps import Maps, open_maps
from cloudcli.errors import DataError
from cloudcli.io import json_type, need_keys, read_json


def _run_first(stage: str) -> str:
    return f"run `dvc repro {stage}` (or `cloudcli {stage}`) first"


def _missing(path: Path, stage: str) -> DataError:
    return DataError(f"{path}: missing; {_run_first(stage)}")


def read_masks(folder: Path, split: str, stage: str = "infer") -> tuple[list[str], Maps]:
    """(image ids, (N, C, H, W) uint8 maps read lazily) of a segmentation model's (or the
    ensemble's, stage="ensemble") `split` ('oof' or 'test')."""
    try:
        ids = list(pd.read_csv(folder / f"{split}.csv", dtype={"image_id": str})["image_id"])
        maps = open_maps(folder, split)
    except FileNotFoundError as e:
        raise _missing(Path(e.filename), stage) from None
    if len(maps) != len(ids):
        raise DataError(f"{maps.path}: {len(maps)} maps for the {len(ids)} rows of {split}.csv; rerun {stage}")
    return ids, maps


def rows_differ(path: Path, reference: str, these: list[str], ids: list[str], fix: str) -> DataError:
    """The error for a prediction table whose rows are not `reference`'s; the same images in
    another order are predictions of an earlier cloudcli, whose OOF rows were in cache order."""
    if sorted(these) == sorted(ids):
        return DataError(
            f"{path}: the images of {reference} in another order: predictions of an earlier cloudcli "
            "(OOF rows are now grouped by fold); rerun infer for every model: `dvc repro --force -s infer@<model>`"
        )
    return DataError(f"{path}: rows differ from {reference}; {fix}")


def read_histograms(folder: Path, n: int, stage: str = "infer", name: str = "oof_hist.npy") -> np.ndarray:
    """(N, C, 2, 256) OOF histograms (all pixels, inside the truth) that `stage` wrote for the `n`
    rows of its oof.csv (cloudcli.stages.infer)."""
    path, rerun = folder / name, f"rerun `dvc repro {stage}`"
    try:
        hist = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise DataError(f"{path}: missing (predictions of an earlier cloudcli version?); {rerun}") from None
    except ValueError as e:
        raise DataError(f"{path}: unreadable ({e}); {rerun}") from None
    if hist.ndim != 4 or hist.shape[0] != n or hist.shape[2:] != (2, 256):
        raise DataError(f"{path}: shape {hist.shape}, expected ({n}, C, 2, 256); {rerun}")
    return hist  # a memory map: no copy on the heap, whatever the number of images


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
    columns = [c for c in table.columns if c != "fold"]  # the class columns, in order
    if not columns:
        raise DataError(
            f"{path}: no class probabilities: {folder.name} is a segmentation model trained without a class "
            "head; add the loss term class_head to its loss and retrain it, or name a classifier"
        )
    return table.loc[ids, columns].to_numpy()


def classes_of(folder: Path) -> tuple[str, ...]:
    """Class names of a prediction folder, as infer recorded them."""
    meta = read_meta(folder)
    if "classes" not in meta:
        raise DataError(f"{folder / 'meta.json'}: no classes; rerun `dvc repro infer`")
    return tuple(meta["classes"])


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
    chosen = read_json(path, "rerun `dvc repro tune`", missing=_run_first("tune"))
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


def model_folder(name: str, predictions: Path = paths.PREDICTIONS) -> Path:
    """The prediction folder of `name` (a base model, or `<model>@<round>`: cloudcli.paths), which
    must hold infer's output."""
    folder = paths.predictions_of(name, predictions)
    if not (folder / "meta.json").exists():
        model, round_ = paths.split_name(name)
        how = f"cloudcli infer --model {model}" if round_ is None else f"dvc repro infer_pl@{round_}-{model}"
        raise DataError(f"{folder}: no predictions of {name!r}; run `dvc repro` (or `{how}`) first")
    return folder


def read_meta(folder: Path) -> dict:
    return read_json(folder / "meta.json", "rerun `dvc repro infer`", missing=_run_first("infer"))


def aligned_masks(folders: list[Path], split: str) -> tuple[list[str], list[Maps]]:
    """Image ids and (N, C, H, W) maps of several models, checked to cover the same rows in the same order."""
    ids, arrays = None, []
    for folder in folders:
        these, probs = read_masks(folder, split)
        if ids is not None and these != ids:
            fix = "infer every model with the same cv.folds (dvc repro)"
            raise rows_differ(folder / f"{split}.csv", str(folders[0] / f"{split}.csv"), these, ids, fix)
        ids = these
        if arrays and probs.shape != arrays[0].shape:
            raise DataError(f"{probs.path}: shape {probs.shape}, {folders[0]} has {arrays[0].shape}")
        arrays.append(probs)
    return ids, arrays


class OofTruth:
    """The packed (n, H, W) truth masks of the OOF rows `ids`, read from the cache a batch at a time
    (`truth[start:stop]`), never whole."""

    def __init__(self, cache, ids: list[str], where: Path) -> None:
        rows = pd.Index(cache.train["image_id"]).get_indexer(ids)
        if (rows < 0).any():
            raise DataError(f"{where}: {ids[int(np.argmin(rows))]} is not in {cache.folder}; rerun infer")
        self.rows, self.array = rows, cache.array("train_truth")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.array[self.rows[rows]]


def read_ensemble(folder: Path) -> dict:
    """The ensemble's meta.json, checked to hold what tune and export re-vote with: the vote, its
    weights and minimum, and each member's name, folder, pseudo flag and (majority vote) levels."""
    path, rerun = folder / "meta.json", "rerun `dvc repro ensemble`"
    meta = read_json(path, rerun, missing=_run_first("ensemble"))
    kinds = {
        "vote": str,
        "classes": list,
        "members": list,
        "weights": (list, type(None)),
        "min_votes": (int, type(None)),
    }
    need_keys(meta, kinds, path, rerun)
    if meta.get("min_votes_param") is not None:  # null or absent: more than half
        need_keys(meta, {"min_votes_param": int}, path, rerun)
    members, weights, classes = meta["members"], meta["weights"], meta["classes"]
    if not members:
        raise DataError(f"{path}: no members; {rerun}")
    if weights is not None and len(weights) != len(members):
        raise DataError(f"{path}: {len(members)} members but {len(weights)} weights; {rerun}")
    levels = dict if meta["vote"] == "majority" else (dict, type(None))
    for i, m in enumerate(members):
        where = f"{path}: members[{i}]"
        if not isinstance(m, dict):
            raise DataError(f"{where} is {json_type(m)}, expected an object; {rerun}")
        need_keys(m, {"name": str, "folder": str, "pseudo": bool, "levels": levels}, where, rerun)
        if m["levels"] is not None and (
            list(m["levels"]) != classes or not all(type(v) is int for v in m["levels"].values())
        ):
            raise DataError(f"{where}: levels are not a whole number for each of {classes}, in order; {rerun}")
    return meta
