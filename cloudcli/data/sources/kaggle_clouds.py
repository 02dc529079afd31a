"""kaggle_clouds: train.csv + sample_submission.csv (RLE labels) and train_images/, test_images/
JPEGs; the demo adds test_truth.csv. Classes Fish, Flower, Gravel, Sugar. The CSV and JPEG readers
are cloudcli.data.kaggle's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from cloudcli import CLASSES
from cloudcli.config import DataConfig
from cloudcli.data.kaggle import IMAGE_DIRS
from cloudcli.data.sources.base import Source
from cloudcli.errors import DataError


@dataclass(frozen=True)
class KaggleCloudsSource(Source):
    kind: ClassVar[str] = "kaggle_clouds"
    default_classes: ClassVar[tuple[str, ...]] = CLASSES
    image_dirs: ClassVar[dict[str, str]] = IMAGE_DIRS  # ids are file names (0011165.jpg)

    rles: pd.DataFrame | None = None  # wide view of train.csv (and test_truth.csv)

    @classmethod
    def open(cls, data: DataConfig, common: dict, labels_only: bool) -> Source:
        """`labels_only`: train.csv alone; no test images."""
        from cloudcli.data.kaggle import SUBMISSION_CSV, TEST_TRUTH_CSV, TRAIN_CSV, image_paths, read_labels, to_wide

        root, classes = common["root"], common["classes"]
        wide = to_wide(read_labels(root / TRAIN_CSV, data.raw_size, classes), classes)  # validates every RLE first
        if labels_only:
            return cls(**common, train_ids=tuple(wide.index), test_ids=(), has_test_truth=False, rles=wide)
        test_ids = tuple(pd.unique(read_labels(root / SUBMISSION_CSV, None, classes)["image_id"]))
        image_paths(root, "train", list(wide.index)), image_paths(root, "test", list(test_ids))  # all there
        truth = (root / TEST_TRUTH_CSV).is_file()
        rles = wide
        if truth:  # the demo's hidden test labels: one set per test image, none for a training image
            hidden = to_wide(read_labels(root / TEST_TRUTH_CSV, data.raw_size, classes), classes)
            missing, shared = set(test_ids) - set(hidden.index), set(hidden.index) & set(wide.index)
            if missing or shared:
                what = f"no labels for {sorted(missing)[0]}" if missing else f"{sorted(shared)[0]} is a training image"
                raise DataError(f"{root / TEST_TRUTH_CSV}: {what}; it must label exactly the test images")
            rles = pd.concat([wide, hidden])
        return cls(**common, train_ids=tuple(wide.index), test_ids=test_ids, has_test_truth=truth, rles=rles)

    def raw_image(self, split: str, i: int) -> np.ndarray:
        from cloudcli.data.kaggle import read_image

        return read_image(self.root / self.image_dirs[split] / self.ids(split)[i], self.raw_size)

    def masks(self, split: str, i: int) -> np.ndarray:
        from cloudcli.rle import decode

        image_id = self.ids(split)[i]
        return np.stack([decode(r, self.raw_size) for r in self.rles.loc[image_id, list(self.classes)]])

    def areas(self) -> np.ndarray:
        """(N, C) coverage from the RLE run lengths alone, nothing decoded."""
        from cloudcli.rle import parse

        pixels = self.raw_size[0] * self.raw_size[1]
        rles = self.rles.loc[list(self.train_ids), list(self.classes)].to_numpy()
        return np.array([[parse(r, self.raw_size)[1].sum() if r else 0 for r in row] for row in rles]) / pixels

    def presence(self) -> np.ndarray:
        from cloudcli.data.kaggle import presence

        return presence(self.rles.loc[list(self.train_ids)], self.classes)  # the RLEs alone, nothing decoded

    def presence_and_areas(self, need_areas: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if not need_areas:
            return self.presence(), None
        areas = self.areas()
        return areas > 0, areas
