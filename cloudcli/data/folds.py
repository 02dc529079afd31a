"""K-fold split stratified on the class-presence pattern (MultilabelStratifiedKFold)."""

from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from cloudcli.errors import DataError


def make_folds(present: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold index (N,) in 0..n_splits-1 for an (N, C) 0/1 presence matrix; every fold non-empty."""
    n = len(present)
    if n < n_splits:
        raise DataError(
            f"fold.n_splits = {n_splits} but there are only {n} images: "
            f"every fold needs at least one image; lower fold.n_splits in params.yaml"
        )
    folds = np.full(n, -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, valid) in enumerate(splitter.split(np.zeros((n, 1)), present)):
        folds[valid] = k
    sizes = np.bincount(folds, minlength=n_splits)
    if (folds < 0).any() or (sizes == 0).any():
        raise DataError(
            f"stratified split left fold {int(np.argmin(sizes))} without any image "
            f"({n} images, fold.n_splits = {n_splits}); lower fold.n_splits in params.yaml"
        )
    return folds
