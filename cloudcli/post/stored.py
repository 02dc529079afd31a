"""Search counts of a model's stored OOF maps: its histograms as infer wrote them, plus one pass over
the maps, a batch at a time with the truth of that batch, where the component rule needs the
maps themselves. Nothing here grows with the data but the (N, columns) counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloudcli.data.cache import BITS
from cloudcli.data.maps import read_ahead
from cloudcli.data.predictions import read_histograms
from cloudcli.post.kernels import class_histograms
from cloudcli.post.search import Counts, component_columns, histogram_counts, with_components
from cloudcli.ui import progress


def oof_histograms(folder: Path, maps, truth) -> np.ndarray:
    """(N, C, 2, 256) histograms of a prediction folder's OOF `maps`: those its stage wrote
    (oof_hist.npy), or, for predictions without them (an earlier cloudcli's), counted in one pass."""
    if (folder / "oof_hist.npy").exists():
        return read_histograms(folder, len(maps))
    out = np.empty((len(maps), maps.shape[1], 2, 256), np.int32)
    with progress(f"histograms of {folder}", len(maps), "maps") as advance:
        for rows, (block,) in read_ahead([maps]):
            out[rows] = class_histograms(block, truth[rows])
            advance(rows.stop - rows.start)
    return out


def model_counts(
    maps, truth, hist: np.ndarray, min_components: tuple[int, ...], component_levels: tuple[int, ...]
) -> list[Counts]:
    """Per class, the counts of `counts()` (the 255 levels, then component_levels x each
    min_component > 1) for (N, C, H, W) `maps` with their (N, C, 2, 256) histograms; `truth[rows]`
    gives the packed truth of a batch of rows."""
    plain = [histogram_counts(hist[:, k, 0], hist[:, k, 1]) for k in range(hist.shape[1])]
    rules = tuple(sorted({int(c) for c in min_components if c > 1}))
    if not (rules and component_levels):
        return plain
    n, width = len(maps), len(component_levels) * len(rules)
    full = [
        with_components(
            c, np.zeros((n, width), np.int32), np.zeros((n, width), np.int32), tuple(component_levels), rules
        )
        for c in plain
    ]
    del plain  # the component columns are filled in place: one copy of the counts
    first = len(full[0].levels) - width
    with progress("components", n, "maps") as advance:
        for rows, (block,) in read_ahead([maps]):
            packed = truth[rows]
            for k, c in enumerate(full):
                a, i = component_columns(block[:, k], (packed & BITS[k]) != 0, tuple(component_levels), rules)
                c.area[rows, first:], c.inter[rows, first:] = a, i
            advance(rows.stop - rows.start)
    return full
