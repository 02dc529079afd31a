"""K-fold split stratified on the class-presence pattern (MultilabelStratifiedKFold), and
optionally on metadata groups: each group becomes one more label column to balance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from cloudcli.errors import DataError
from cloudcli.names import image_id_problem

ID_COLUMNS = ("image_id", "chip_id", "id")  # the id column of a metadata CSV (else its first column)
DERIVED = ("coverage", "month")  # strata cloudcli computes: label area bins; month of a datetime column


def make_folds(present: np.ndarray, n_splits: int, seed: int, groups: pd.DataFrame | None = None) -> np.ndarray:
    """Fold index (N,) in 0..n_splits-1 for an (N, C) 0/1 presence matrix and (N, G) categorical
    `groups` (one-hot encoded alongside); every fold non-empty."""
    n = len(present)
    if n < n_splits:
        raise DataError(
            f"fold.n_splits = {n_splits} but there are only {n} images: "
            f"every fold needs at least one image; lower fold.n_splits in params.yaml"
        )
    labels = np.asarray(present, np.int64)
    if groups is not None and groups.shape[1]:
        labels = np.hstack([labels, pd.get_dummies(groups.astype(str)).to_numpy(np.int64)])
    if labels.shape[1] == 1:  # one class: iterstrat wants several label columns; its complement adds nothing
        labels = np.hstack([labels, 1 - labels])
    folds = np.full(n, -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros((n, 1)), labels)):
        folds[valid] = k
    sizes = np.bincount(folds, minlength=n_splits)
    if (folds < 0).any() or (sizes == 0).any():
        raise DataError(
            f"stratified split left fold {int(np.argmin(sizes))} without any image "
            f"({n} images, fold.n_splits = {n_splits}); lower fold.n_splits in params.yaml"
        )
    return folds


def read_metadata(path: Path, ids: tuple[str, ...]) -> pd.DataFrame:
    """The metadata CSV indexed by image id, one row per id of `ids` in that order."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: metadata file not found (data.metadata in params.yaml)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).strip()[:120]})") from None
    key = next((c for c in ID_COLUMNS if c in table.columns), table.columns[0])
    for line, image_id in zip(range(2, len(table) + 2), table[key]):  # line 1 is the header
        if problem := image_id_problem(image_id):
            raise DataError(f"{path} line {line}: image id {image_id!r} (column {key}) {problem}; fix the row")
    dup = table[key][table[key].duplicated()]
    if len(dup):
        raise DataError(f"{path}: image {dup.iloc[0]} has more than one row (column {key})")
    table = table.set_index(key)
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise DataError(f"{path}: no row for {len(missing)} training images, e.g. {missing[0]} (column {key})")
    return table.loc[list(ids)]


def strata(
    columns: tuple[str, ...], metadata: pd.DataFrame | None, areas: np.ndarray, bins: int, where: str
) -> pd.DataFrame:
    """(N, G) categorical columns to balance across folds: metadata columns (numeric ones with more
    than `bins` values cut into quantile bins), `month` (of a `datetime` column unless the metadata
    has a month), `coverage` (labelled share of the image: empty, then quantile bins)."""
    out = {}
    for name in columns:
        if name == "coverage":
            out[name] = _coverage(areas.sum(1).clip(0, 1), bins)
            continue
        if metadata is None:
            raise DataError(f"fold.stratify: {name!r} needs data.metadata (a CSV in data.raw); or use coverage")
        if name == "month" and "month" not in metadata.columns:
            if "datetime" not in metadata.columns:
                raise DataError(f"fold.stratify: month needs a month or datetime column in {where}")
            stamps = pd.to_datetime(metadata["datetime"], errors="coerce")
            if stamps.isna().any():
                bad = metadata.index[stamps.isna()][0]
                raise DataError(f"{where}: unreadable datetime {metadata.loc[bad, 'datetime']!r} for {bad}")
            out[name] = stamps.dt.month.to_numpy()
            continue
        if name not in metadata.columns:
            raise DataError(
                f"fold.stratify: no column {name!r} in {where} (columns: {', '.join(metadata.columns)}; "
                f"or one of {', '.join(DERIVED)})"
            )
        values = metadata[name]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and numeric.nunique() > bins:
            values = pd.qcut(numeric, bins, labels=False, duplicates="drop")
        out[name] = np.asarray(values)
    return pd.DataFrame(out)


def _coverage(cover: np.ndarray, bins: int) -> np.ndarray:
    """0 for an empty image, else 1 + its quantile bin among the non-empty ones."""
    codes = np.zeros(len(cover), np.int64)
    positive = cover > 0
    if np.unique(cover[positive]).size > 1:
        codes[positive] = 1 + pd.qcut(cover[positive], bins, labels=False, duplicates="drop")
    else:
        codes[positive] = 1
    return codes


def group_balance(groups: pd.DataFrame, folds: np.ndarray) -> dict[str, float]:
    """Per stratified column, the largest gap between a group's share in a fold and overall."""
    gaps = {}
    for name in groups.columns:
        onehot = pd.get_dummies(groups[name].astype(str)).astype(float)
        overall = onehot.mean()
        per_fold = onehot.groupby(folds).mean()
        gaps[name] = round(float((per_fold - overall).abs().to_numpy().max()), 4)
    return gaps
