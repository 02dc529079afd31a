"""K-fold split stratified on the class-presence pattern (MultilabelStratifiedKFold), and
optionally on metadata strata (fold.stratify): each stratum becomes one more label column to
balance. With fold.group, whole groups go to folds instead (cloudcli.data.group_folds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.data.group_folds import group_folds
from cloudcli.errors import DataError
from cloudcli.names import image_id_problem

ID_COLUMNS = ("image_id", "chip_id", "id")  # the id column of a metadata CSV (else its first column)
DERIVED = ("coverage", "month")  # strata cloudcli computes: label area bins; month of a datetime column


def make_folds(
    present: np.ndarray,
    n_splits: int,
    seed: int,
    stratified: pd.DataFrame | None = None,
    group: pd.Series | None = None,
) -> np.ndarray:
    """Fold index (N,) in 0..n_splits-1 for an (N, C) 0/1 presence matrix and (N, S) categorical
    `stratified` columns (one-hot encoded alongside); every fold non-empty. With `group` (N,),
    every image of a group lands in the same fold (named in errors by the series' name)."""
    n = len(present)
    if n < n_splits:
        raise DataError(
            f"fold.n_splits = {n_splits} but there are only {n} images: "
            f"every fold needs at least one image; lower fold.n_splits in params.yaml"
        )
    labels = np.asarray(present, np.int64)
    if stratified is not None and stratified.shape[1]:
        labels = np.hstack([labels, pd.get_dummies(stratified.astype(str)).to_numpy(np.int64)])
    if group is not None:
        return group_folds(labels, group.to_numpy(), n_splits, seed, str(group.name))
    if labels.shape[1] == 1:  # one class: iterstrat wants several label columns; its complement adds nothing
        labels = np.hstack([labels, 1 - labels])
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

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


def read_folds(path: Path, ids: list[str] | tuple[str, ...], need: tuple[int, ...] = ()) -> np.ndarray:
    """(N,) int64 fold of each of `ids` from the folds table `cloudcli fold` wrote: a row per id,
    and no other; folds numbered 0..K-1, each non-empty, holding every fold of `need` (cv.folds).
    Excluded images (data.exclude) have their fold too: see read_split."""
    return read_split(path, ids, need)[0]


def read_split(
    path: Path, ids: list[str] | tuple[str, ...], need: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """(folds, excluded): read_folds's (N,) folds and (N,) bool, whether data.exclude leaves the
    image out (the table's optional `excluded` column, 0/1); each fold of `need` keeps an image."""
    rerun = "rerun `cloudcli fold` (or `dvc repro fold`)"
    table = _read_folds_csv(Path(path), rerun)
    bad = table[~table["fold"].str.fullmatch(r"[0-9]{1,6}")]
    if len(bad):
        raise DataError(f"{path} line {bad.index[0]}: fold {bad['fold'].iloc[0][:40]!r} is not a fold number; {rerun}")
    marks = table["excluded"] if "excluded" in table.columns else pd.Series("0", index=table.index)
    bad = marks[~marks.isin(("0", "1"))]
    if len(bad):
        raise DataError(f"{path} line {bad.index[0]}: excluded {bad.iloc[0][:40]!r} is not 0 or 1; {rerun}")
    dup = table[table["image_id"].duplicated()]
    if len(dup):
        raise DataError(f"{path} line {dup.index[0]}: image {dup['image_id'].iloc[0]!r} has a second row; {rerun}")
    fold_of = pd.Series(table["fold"].astype(np.int64).to_numpy(), index=table["image_id"].to_numpy())
    _same_ids(path, set(fold_of.index), set(ids), rerun)
    present = set(fold_of.tolist())
    if max(present) != len(present) - 1:  # K folds numbered 0..K-1, none empty
        gap = min(set(range(len(present))) - present)
        raise DataError(f"{path}: fold {max(present)} but no image in fold {gap}: folds count from 0; {rerun}")
    absent = [k for k in need if k not in present]
    if absent:
        raise DataError(
            f"{path}: fold {absent[0]} has no images (folds 0..{max(present)}); check cv.folds against fold.n_splits "
            f"in params.yaml, then {rerun}"
        )
    excluded = pd.Series((marks == "1").to_numpy(), index=fold_of.index).loc[list(ids)].to_numpy()
    folds = fold_of.loc[list(ids)].to_numpy()
    emptied = [k for k in need if excluded[folds == k].all()]
    if emptied:
        raise DataError(
            f"{path}: every image of fold {emptied[0]} is excluded (data.exclude): nothing validates it; "
            f"list fewer images, then {rerun}"
        )
    return folds, excluded


def _same_ids(path: Path, listed: set[str], ids: set[str], rerun: str) -> None:
    missing, extra = ids - listed, listed - ids
    if missing:
        raise DataError(f"{path}: no fold for {len(missing)} training images, e.g. {min(missing)!r}; {rerun}")
    if extra:
        raise DataError(
            f"{path}: {len(extra)} images that are not training images (of the cache), e.g. {min(extra)!r}: "
            f"made from other data? {rerun}"
        )


def _read_folds_csv(path: Path, rerun: str) -> pd.DataFrame:
    """The folds table as text, indexed by CSV line number."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected the folds table (image_id,fold); {rerun}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run `cloudcli fold` (or `dvc repro fold`) first") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; {rerun}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:120]}); {rerun}") from None
    for column in ("image_id", "fold"):
        if column not in table.columns:
            raise DataError(
                f"{path}: no column {column!r} (columns: {', '.join(map(str, table.columns))[:80]}); {rerun}"
            )
    if table.empty:
        raise DataError(f"{path}: no rows; {rerun}")
    table.index = np.arange(len(table)) + 2  # CSV line numbers: line 1 is the header
    return table


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
    """(N, S) categorical columns to balance across folds: metadata columns (numeric ones with more
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


def group_of(name: str, metadata: pd.DataFrame | None, where: str) -> pd.Series:
    """(N,) the group of each training image (fold.group): the metadata column `name`, as text."""
    if metadata is None:
        raise DataError(
            f"fold.group: {name!r} needs data.metadata (a CSV in data.raw with a {name} column); "
            f"set data.metadata in params.yaml, or fold.group: null"
        )
    if name not in metadata.columns:
        raise DataError(
            f"fold.group: no column {name!r} in {where} (columns: {', '.join(metadata.columns)}); "
            f"name one of them, or set fold.group: null"
        )
    values = metadata[name]
    empty = values.index[values.str.strip() == ""]
    if len(empty):
        raise DataError(
            f"{where}: image {empty[0]} has an empty {name} ({len(empty)} images do): fold.group needs a group "
            f"for every training image; fill it in, or set fold.group: null"
        )
    return values.rename(name)


def _coverage(cover: np.ndarray, bins: int) -> np.ndarray:
    """0 for an empty image, else 1 + its quantile bin among the non-empty ones."""
    codes = np.zeros(len(cover), np.int64)
    positive = cover > 0
    if np.unique(cover[positive]).size > 1:
        codes[positive] = 1 + pd.qcut(cover[positive], bins, labels=False, duplicates="drop")
    else:
        codes[positive] = 1
    return codes


def strata_balance(stratified: pd.DataFrame, folds: np.ndarray) -> dict[str, float]:
    """Per stratified column, the largest gap between a stratum's share in a fold and overall."""
    gaps = {}
    for name in stratified.columns:
        onehot = pd.get_dummies(stratified[name].astype(str)).astype(float)
        overall = onehot.mean()
        per_fold = onehot.groupby(folds).mean()
        gaps[name] = round(float((per_fold - overall).abs().to_numpy().max()), 4)
    return gaps
