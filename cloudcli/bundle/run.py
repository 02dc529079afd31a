"""`cloudcli predict`'s loop: every input read, predicted in batches, handed on one by one."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cloudcli.bundle.inputs import Input, read_input
from cloudcli.bundle.predictor import Predictor
from cloudcli.errors import DataError
from cloudcli.ui import info, progress


def predict_inputs(predictor: Predictor, items: list[Input]) -> Iterator[tuple[Input, np.ndarray, tuple[int, int]]]:
    """(input, (C, H, W) masks at the scoring size, the input's (H, W)) of every input, in order."""
    info(f"predict: {len(items)} inputs with {predictor.folder} ({', '.join(predictor.models)}) on {predictor.device}")
    sizes: list[tuple[int, int]] = []

    def images() -> Iterator[np.ndarray]:
        for item in items:
            image = read_input(item, predictor.input)
            sizes.append(image.shape[:2])
            try:
                predictor.check(image)  # here, to name the file
            except DataError as e:
                raise DataError(f"{item.path}: {e}") from None
            yield image

    with progress("predict", len(items), "inputs") as advance:
        for i, masks in enumerate(predictor.predict_many(images())):
            advance(1)
            yield items[i], masks, sizes[i]
