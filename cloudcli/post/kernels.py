"""Per-pixel loops over uint8 maps that numpy does in several passes and temporaries, in one (numba).

`class_histograms`: per map and class, the level histogram of all pixels and of those inside the
class's truth bit, one look per pixel (numpy needed a uint16 copy, a shift and a 512-bin count).
`majority`: the members' votes counted in place, a byte per pixel (numpy stacked the members'
comparisons and summed them as int32). Both release the GIL, so reading and writing maps in other
threads overlaps them. tests/post/test_kernels.py compares each with its numpy definition.
"""

from __future__ import annotations

import numba
import numpy as np

ON = 255  # level of a pixel a majority vote keeps


@numba.njit(cache=True, nogil=True)
def _class_histograms(maps: np.ndarray, packed: np.ndarray, out: np.ndarray) -> None:
    n, n_classes, size = maps.shape
    lanes = np.zeros((4, 512), np.int32)  # 4 histograms filled in turn: no wait on the last increment
    for i in range(n):
        for k in range(n_classes):
            lanes[:] = 0
            for j in range(size):
                lanes[j & 3, maps[i, k, j] + (((packed[i, j] >> k) & 1) << 8)] += 1
            for v in range(256):
                inside = lanes[0, 256 + v] + lanes[1, 256 + v] + lanes[2, 256 + v] + lanes[3, 256 + v]
                out[i, k, 1, v] = inside
                out[i, k, 0, v] = inside + lanes[0, v] + lanes[1, v] + lanes[2, v] + lanes[3, v]


def class_histograms(maps: np.ndarray, packed: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(n, C, 2, 256) int32 of (n, C, H, W) uint8 maps and their (n, H, W) packed truth (bit k =
    class k): per map and class, the histogram of all pixels and of those inside the class.
    `valid` (n, H, W): only the pixels where it is non-zero count (data.nodata)."""
    n, n_classes = maps.shape[:2]
    out = np.zeros((n, n_classes, 2, 256), np.int32)
    if n:
        size = int(np.prod(maps.shape[2:]))
        maps, packed = np.ascontiguousarray(maps), np.ascontiguousarray(packed)
        if valid is not None:  # no data: level 0, outside every class, then taken off level 0
            keep = np.asarray(valid).reshape(n, 1, *maps.shape[2:]) != 0
            maps, packed = maps * keep, packed * keep[:, 0]
        _class_histograms(maps.reshape(n, n_classes, size), packed.reshape(n, size), out)
        if valid is not None:
            out[:, :, 0, 0] -= (~keep).reshape(n, -1).sum(1, dtype=np.int32)[:, None]
    return out


@numba.njit(cache=True, nogil=True)
def _majority(members, levels: np.ndarray, need: int, out: np.ndarray) -> None:
    n, n_classes, size = out.shape
    for m in range(len(members)):
        member = members[m]
        for i in range(n):
            for k in range(n_classes):
                level = levels[m, k]
                for j in range(size):
                    out[i, k, j] += member[i, k, j] > level
    for i in range(n):
        for k in range(n_classes):
            for j in range(size):
                out[i, k, j] = ON if out[i, k, j] >= need else 0


def majority_vote(members: list[np.ndarray], levels: np.ndarray, need: int) -> np.ndarray:
    """(n, C, H, W) uint8: ON where at least `need` of the members' (n, C, H, W) uint8 maps are above
    their (M, C) levels, class by class, else 0."""
    if not 1 <= need <= len(members) or len(members) > 254:
        raise ValueError(f"min_votes must be in 1..{len(members)} for {len(members)} members, got {need}")
    n, n_classes = members[0].shape[:2]
    out = np.zeros(members[0].shape, np.uint8)
    typed = numba.typed.List([np.ascontiguousarray(m).reshape(n, n_classes, -1) for m in members])
    _majority(typed, np.asarray(levels, np.int64).reshape(len(members), n_classes), need, out.reshape(n, n_classes, -1))
    return out
