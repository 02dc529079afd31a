"""The post-processing tune chose (thresholds.json), loaded and bound to one split's maps."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudcli.data.maps import read_ahead
from cloudcli.data.predictions import fingerprint, read_classifier, read_masks, read_thresholds, rows_differ
from cloudcli.errors import DataError
from cloudcli.post.components import thread_budget
from cloudcli.post.rules import ClassRule, postprocess
from cloudcli.post.vote import class_score, topk


@dataclass(frozen=True)
class Tuned:
    """The post-processing tune chose, bound to one split's probability maps."""

    ids: list[str]  # image ids of the split, in the maps' row order
    seg1: object  # (N, C, H, W) uint8 maps deciding presence, read lazily (cloudcli.data.maps)
    shape: object | None  # (N, C, H, W) uint8 maps drawing the masks (two-stage), or None
    classifier_probs: np.ndarray | None  # (N, C) classifier probabilities, or None
    rules: list[ClassRule]
    shape_levels: list[int | None]
    chosen: dict  # thresholds.json

    def masks(self, i: int) -> np.ndarray:
        """(C, H, W) uint8 0/1 masks of row i."""
        return self._masks(i, np.asarray(self.seg1[i]), None if self.shape is None else np.asarray(self.shape[i]))

    def blocks(self) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """(rows, the (C, H, W) masks of each) of every row in order, the maps read a batch at a time
        and the images of a batch post-processed in threads (OpenCV and numpy release the GIL)."""
        arrays = [self.seg1] if self.shape is None else [self.seg1, self.shape]
        with ThreadPoolExecutor(thread_budget(), thread_name_prefix="postprocess") as pool:
            for rows, maps in read_ahead(arrays):
                shape = maps[1] if self.shape is not None else [None] * len(maps[0])
                yield rows, list(pool.map(self._masks, range(rows.start, rows.stop), maps[0], shape))

    def _masks(self, i: int, seg1: np.ndarray, shape: np.ndarray | None) -> np.ndarray:
        scores = class_scores(
            self.chosen["class_score"],
            seg1,
            None if self.classifier_probs is None else self.classifier_probs[i],
            self.chosen["top_k"],
        )
        return postprocess(seg1, self.rules, scores, self.chosen["at_least_one"], shape, self.shape_levels)


def load_tuned(thresholds: Path, split: str) -> Tuned:
    """Read thresholds.json and the maps of `split` ('oof' or 'test') it was tuned for, checking
    that none of its prediction folders changed since."""
    chosen = read_thresholds(thresholds)
    for folder, sha1 in chosen["fitted_on"].items():  # the rules only fit the maps they were tuned on
        if fingerprint(Path(folder)) != sha1:
            raise DataError(
                f"{Path(folder) / 'meta.json'} changed since {thresholds} was tuned on it; rerun `dvc repro tune`"
            )
    classes = list(chosen["classes"].values())
    rules = [ClassRule(c["level"], c["min_area"], c["min_component"], c["gate_threshold"]) for c in classes]
    folder = Path(chosen["seg1"])
    ids, probs = read_masks(folder, split)  # (N, C, H, W) uint8
    shape = None
    if chosen["shape"] is not None:
        shape_ids, shape = read_masks(
            Path(chosen["shape"]), split, "ensemble" if chosen["shape_is_ensemble"] else "infer"
        )
        if shape_ids != ids:
            raise rows_differ(
                Path(chosen["shape"]) / f"{split}.csv", str(folder / f"{split}.csv"), shape_ids, ids, "rerun infer"
            )
    classifier_probs = read_classifier(Path(chosen["classifier"]), split, ids) if chosen["classifier"] else None
    return Tuned(ids, probs, shape, classifier_probs, rules, [c["shape_level"] for c in classes], chosen)


def class_scores(how: str, seg1: np.ndarray, classifier_probs: np.ndarray | None, top_k: int) -> np.ndarray | None:
    """(C,) gate scores of one image, as tune computed them on the OOF maps."""
    return class_score(how, classifier_probs, topk(seg1, top_k) if how in ("topk", "mean") else None)
