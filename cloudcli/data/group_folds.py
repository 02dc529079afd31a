"""K-fold split that keeps each group (e.g. a location) whole in one fold, balancing counts.

As sklearn's StratifiedGroupKFold, extended to many count columns: every group gets a count
vector (its images, the images with each class, each stratum); groups are sorted largest first
(size counted as the group's share of each column, so rare labels weigh more; times a factor
0.9..1.1 drawn from the seed, so that another seed orders groups of near size differently and
gives another split), and each goes greedily to the fold that leaves the smallest spread: the sum
over columns of the std across folds of each fold's share of the column (1/K each when perfectly
balanced). Ties go to the fold with fewer images. Numpy only; O(groups x K^2 x columns).

An empty fold always wins while there is one: adding the group there raises every column's sum of
squares the least (by v^2 rather than 2Fv + v^2; the mean is the same wherever it goes), and
strictly so in the image column, so K groups or more fill every fold.
"""

from __future__ import annotations

import numpy as np

from cloudcli.errors import DataError


def group_folds(counts: np.ndarray, group: np.ndarray, n_splits: int, seed: int, name: str = "group") -> np.ndarray:
    """Fold index (N,) in 0..n_splits-1 for (N, L) non-negative counts per image (a 0/1 presence
    matrix, one-hot strata) and (N,) group labels: every image of a group in the same fold."""
    names, codes = np.unique(np.asarray(group), return_inverse=True)
    if len(names) < n_splits:
        fix = "group by a column with more values, or set fold.group: null"
        if len(names) >= 2:
            fix = f"lower fold.n_splits to {len(names)} or less in params.yaml, or {fix}"
        raise DataError(
            f"fold.group: {len(names)} distinct {name!r} values (groups) but fold.n_splits = {n_splits}: "
            f"every fold needs at least one whole group; {fix}"
        )
    columns = np.hstack([np.ones((len(codes), 1)), np.asarray(counts, np.float64)])  # images first
    per_group = np.zeros((len(names), columns.shape[1]))  # (G, L + 1)
    np.add.at(per_group, codes, columns)
    place = assign_groups(per_group, n_splits, seed)
    return place[codes]


def assign_groups(per_group: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold (G,) of each group from its (G, L) counts, column 0 its images (the tie-break)."""
    total = per_group.sum(0)
    used = total > 0  # a column no image counts in cannot be unbalanced
    weights = per_group[:, used] / total[used]  # (G, L') the group's share of each column
    jitter = np.random.default_rng(seed).uniform(0.9, 1.1, len(per_group))  # the seed orders groups of near size
    order = np.argsort(-weights.sum(1) * jitter, kind="stable")  # largest first
    shares = np.zeros((n_splits, weights.shape[1]))  # (K, L') each fold's share so far
    place = np.full(len(per_group), -1, np.int64)
    eye = np.eye(n_splits)[:, :, None]  # (K candidates, K folds, 1)
    for g in order:
        trial = shares[None] + eye * weights[g]  # (K, K, L'): the shares if g went to fold k
        cost = trial.std(1).sum(1)  # (K,)
        best = np.flatnonzero(cost <= cost.min() + 1e-12)
        k = best[np.argmin(shares[best, 0])]  # tie: the fold with fewest images (column 0)
        place[g], shares[k] = k, shares[k] + weights[g]
    return place


def spread(per_group: np.ndarray, place: np.ndarray, n_splits: int) -> float:
    """The cost assign_groups minimises, for any assignment: sum over columns of the std across
    folds of each fold's share of the column."""
    total = per_group.sum(0)
    used = total > 0
    shares = np.zeros((n_splits, int(used.sum())))
    np.add.at(shares, place, per_group[:, used] / total[used])
    return float(shares.std(0).sum())


def group_report(name: str, group: np.ndarray, folds: np.ndarray) -> dict:
    """For metrics/folds.json: the grouping column, its number of groups, groups per fold, and
    how many groups have images in more than one fold (0 when the split kept them whole)."""
    pairs = np.unique(np.stack([np.unique(group, return_inverse=True)[1], folds]), axis=1)  # (2, distinct pairs)
    groups, per_group = np.unique(pairs[0], return_counts=True)
    k, per_fold = np.unique(pairs[1], return_counts=True)
    return {
        "column": name,
        "groups": len(groups),
        "groups_per_fold": {str(int(f)): int(c) for f, c in zip(k, per_fold)},
        "groups_in_two_folds": int((per_group > 1).sum()),
    }
