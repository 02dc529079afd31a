"""What `cloudcli pseudo` reads: the prediction folders of the models that pick and label images
(Labellers), their out-of-fold predictions (to fit the label rules on) and their predictions of
the candidate images: the test images (infer's test / test_fold<k>) and, with pseudo.sources
listing excluded, the training images data.exclude leaves out (excluded / excluded_fold<k>),
which no fold model trained on either. Rows are aligned across the models."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cloudcli.config import PseudoConfig, RoundConfig
from cloudcli.data.predictions import aligned_masks, model_folder, read_classifier, read_meta
from cloudcli.errors import DataError


@dataclass(frozen=True)
class Labellers:
    """Prediction folders of the models that pick and label the candidate images."""

    seg1: Path
    shape: tuple[Path, ...]
    classifier: Path | None

    @classmethod
    def of_round(cls, cfg: PseudoConfig, round_: RoundConfig, predictions: Path) -> Labellers:
        """The base models of params `pseudo`, each named in `round_.relabel` replaced by that pseudo
        model of round `round_.after`; their folders under `predictions` (cloudcli.paths)."""

        def folder(name: str) -> Path:
            return model_folder(
                f"{round_.relabel[name]}@{round_.after}" if name in round_.relabel else name, predictions
            )

        return cls(
            folder(cfg.seg1),
            tuple(folder(m) for m in cfg.shape),
            None if cfg.classifier is None else folder(cfg.classifier),
        )


@dataclass(frozen=True)
class Split:
    """One split's predictions by the labellers, rows aligned across models."""

    ids: list[str]
    maps: list  # (N, C, H, W) uint8 per model, read lazily: seg1, then the shape models
    classifier: np.ndarray | None  # (N, C)
    folds: np.ndarray | None = None  # (N,) the fold of each out-of-fold row
    source: np.ndarray | None = None  # (N,) of candidate images: test or excluded


def read_oof(sources: Labellers) -> tuple[Split, list[str]]:
    """The labellers' out-of-fold predictions (with the fold of each row), and each segmentation model's role."""
    folders = [sources.seg1, *sources.shape]
    roles = [read_meta(f)["role"] for f in folders]
    for folder, role in zip(folders, roles):
        if role == "classifier":
            raise DataError(
                f"{folder}: a classifier's predictions; pseudo.seg1 and pseudo.shape name segmentation models"
            )
    ids, oofs = aligned_masks(folders, "oof")
    folds = pd.read_csv(sources.seg1 / "oof.csv", dtype={"image_id": str})["fold"].to_numpy()
    classifier = None if sources.classifier is None else read_classifier(sources.classifier, "oof", ids)
    return Split(ids, oofs, classifier, folds), roles


def read_candidates(sources: Labellers, which: tuple[str, ...], fold: int | None) -> Split:
    """The labellers' predictions of the candidate images of each source in `which` (test,
    excluded), one after the other: by the mean of the fold models (`fold` None), or by fold
    `fold`'s models alone (<source>_fold<k>)."""
    parts = [_read_split(sources, source if fold is None else f"{source}_fold{fold}") for source in which]
    if len(parts) == 1:  # one source: its maps as they are
        return replace(parts[0], source=np.full(len(parts[0].ids), which[0]))
    return Split(
        [i for p in parts for i in p.ids],
        [_Joined([p.maps[m] for p in parts]) for m in range(len(parts[0].maps))],
        None if parts[0].classifier is None else np.concatenate([p.classifier for p in parts]),
        source=np.concatenate([np.full(len(p.ids), s) for s, p in zip(which, parts)]),
    )


def _read_split(sources: Labellers, split: str) -> Split:
    """The labellers' predictions of `split`: test (the mean of the fold models), test_fold<k>,
    excluded or excluded_fold<k>."""
    folders = [sources.seg1, *sources.shape] + ([sources.classifier] if sources.classifier else [])
    for folder in folders:
        if split == "test" or (folder / f"{split}.csv").exists():
            continue
        if split.startswith("test_fold") or (split.startswith("excluded_fold") and (folder / "excluded.csv").exists()):
            raise DataError(
                f"{folder / split}.csv: missing; pseudo.labels fold labels each fold with that fold's models "
                "alone: set infer.fold_test: true and rerun `dvc repro infer` (or set pseudo.labels: mean)"
            )
        raise DataError(
            f"{folder / split}.csv: missing; pseudo.sources lists excluded, but infer predicted no excluded "
            "training image: artifacts/folds.csv marks none (data.exclude lists no image?) or the predictions "
            "predate data.exclude: rerun `dvc repro fold infer`, or set pseudo.sources: [test]"
        )
    ids, maps = aligned_masks([sources.seg1, *sources.shape], split)
    classifier = None if sources.classifier is None else read_classifier(sources.classifier, split, ids)
    return Split(ids, maps, classifier)


class _Joined:
    """(N, C, H, W) maps of several splits one after the other, read lazily like one: a row, or
    rows by a slice."""

    def __init__(self, parts: list) -> None:
        self.parts, self.starts = parts, np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), *parts[0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("joined maps: slices of step 1 only")
            pieces = [
                np.asarray(p[max(start - a, 0) : max(min(stop - a, len(p)), 0)])
                for p, a in zip(self.parts, self.starts)
            ]
            return np.concatenate(pieces)
        i = int(key) + (len(self) if int(key) < 0 else 0)
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        if not 0 <= i < len(self):
            raise IndexError(f"row {key} of {len(self)}")
        return self.parts[part][i - self.starts[part]]
