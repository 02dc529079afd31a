"""The component rule at every level of uint8 probability maps, in one pass per map. Numpy + numba.

A pixel is on at level L when p > L (L = 0..254); the rule drops the 8-connected components of
fewer than c pixels. Lowering the level only adds pixels, so the components of every level come
from one sweep: visit the pixels from the highest value down (a counting sort) and join each to
its neighbours already visited (union-find: path halving, the smaller set under the larger),
keeping per set its size and how many of its pixels are inside the true mask. Once the pixels of
value v are all in, the sets are exactly the components at level v - 1 (the pixels with p >= v,
i.e. p > v - 1). Pixels of value 0 are never on, so they are never visited.

For each rule c the sweep keeps the total size and truth count of the sets smaller than c: when a
set grows or two sets merge, the old sets leave the totals of the rules above their sizes and the
new one enters those above its size. After value v, the area kept at level v - 1 is the pixels
visited minus that total, and the same for the intersection with the truth. So every (level,
rule) is exact, as if OpenCV's connected components ran at every level (tests/post/
test_components.py compares with that), for one sort and one look at 8 neighbours per pixel.

Three details make it fast: neighbours already visited that touch each other are in one set
already, so a table of the 256 neighbourhoods gives one neighbour per group (one union-find look
per pixel, nearly always); the totals are kept as differences between consecutive rules, so a
set entering or leaving them is one addition, whatever the number of rules; and a count of
pixels and its count of truth pixels travel as one int64 (pixels + truth << 32: sums of such
numbers stay exact, and so does their difference where both parts end >= 0).
"""

from __future__ import annotations

import os

import numba
import numpy as np

N_LEVELS = 255  # levels 0..254: pixel on when p > level
BLOCK = 8  # maps per parallel task
LOW = (1 << 32) - 1  # pixel counts in the low 32 bits of a packed (pixels, truth pixels) int64
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))  # (dy, dx), bit 0..7 of a code


def _label_root(label: dict[int, int], k: int) -> int:
    while label[k] != k:
        k = label[k]
    return k


def _neighbour_groups() -> tuple[np.ndarray, np.ndarray]:
    """For each set of visited neighbours (8 bits, NEIGHBOURS order): how many groups of mutually
    8-connected neighbours it makes (0..4), and one neighbour of each group."""
    first, groups = np.zeros((256, 4), np.int64), np.zeros(256, np.int64)
    for bits in range(256):
        label = {k: k for k in range(8) if bits >> k & 1}
        for a in label:
            for b in label:
                if max(abs(NEIGHBOURS[a][0] - NEIGHBOURS[b][0]), abs(NEIGHBOURS[a][1] - NEIGHBOURS[b][1])) == 1:
                    label[_label_root(label, a)] = _label_root(label, b)
        reps = sorted({_label_root(label, k) for k in label})
        groups[bits], first[bits, : len(reps)] = len(reps), reps
    return first, groups


FIRST, GROUPS = _neighbour_groups()


@numba.njit(cache=True, nogil=True)
def _root(parent: np.ndarray, a: int) -> int:
    """The root of pixel a's set (path halving on the way)."""
    a = parent[a]
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@numba.njit(cache=True, nogil=True)
def _sorted_pixels(p: np.ndarray, truth: np.ndarray, order: np.ndarray, count: np.ndarray) -> None:
    """order[:on] = (padded index << 1 | truth bit) of the pixels with p > 0, highest p first,
    in raster order within a value (a counting sort); count[v] = pixels of value v. The padded
    image has a one-pixel border that is never visited."""
    h, w = p.shape
    count[:] = 0
    for y in range(h):
        for x in range(w):
            count[p[y, x]] += 1
    start = np.empty(256, np.int64)
    s = 0
    for v in range(255, 0, -1):
        start[v] = s
        s += count[v]
    for y in range(h):
        for x in range(w):
            v = p[y, x]
            if v:
                order[start[v]] = (((y + 1) * (w + 2) + x + 1) << 1) | (1 if truth[y, x] else 0)
                start[v] += 1


@numba.njit(cache=True, nogil=True)
def _sweep_map(p, truth, n_below, groups, first, order, count, seen, parent, sets, area, inter) -> None:
    """area, inter (255, R): kept area and intersection of one (H, W) map at every (level, rule).
    A set's pixels and truth pixels are one int64, pixels + truth << 32 (one load, one add).
    long: one loop over the pixels with the joins inlined (it runs ~200k times a map)."""
    _sorted_pixels(p, truth, order, count)
    wp = p.shape[1] + 2
    ring = (-wp - 1, -wp, -wp + 1, -1, 1, wp - 1, wp, wp + 1)  # NEIGHBOURS as offsets in the padded image
    step = np.empty_like(first)  # [code, g]: offset of the neighbour standing for group g
    for code in range(256):
        for g in range(first.shape[1]):
            step[code, g] = ring[first[code, g]]
    seen[:] = 0  # bits 0, 1, 2 of seen[x]: whether x - 1, x, x + 1 are visited
    n_rules, top = area.shape[1], len(n_below) - 1  # a set of `top` pixels or more is below no rule
    delta = np.zeros(n_rules + 1, np.int64)  # totals of the small sets, as differences (last: none)
    visited, i = 0, 0
    for v in range(255, 0, -1):
        for k in range(i, i + count[v]):
            q, pixel = order[k] >> 1, 1 + (np.int64(order[k] & 1) << 32)
            row = seen[q]  # the visited neighbours: 3 above, left and right, 3 below
            bits = seen[q - wp] | ((row & 1) | ((row >> 1) & 2)) << 3 | seen[q + wp] << 5
            seen[q - 1] |= 4
            seen[q] |= 2
            seen[q + 1] |= 1
            n_groups = groups[bits]
            root, a = q, 0  # alone: q grows an empty set
            if n_groups:  # q joins the set of its first group of neighbours
                root = _root(parent, q + step[bits, 0])
                a = sets[root]
            parent[q] = root
            size = a & LOW
            if size < top:
                delta[n_below[size]] -= a
                delta[n_below[size + 1]] += a + pixel
            sets[root] = a + pixel
            for g in range(1, n_groups):  # and the sets of its other groups join that one
                other = _root(parent, q + step[bits, g])
                if other == root:
                    continue
                a, b = sets[root], sets[other]
                if min(a & LOW, b & LOW) < top:
                    delta[n_below[min(a & LOW, top)]] -= a  # above top: n_below[top], the last slot
                    delta[n_below[min(b & LOW, top)]] -= b
                    delta[n_below[min((a + b) & LOW, top)]] += a + b
                if a & LOW < b & LOW:  # the smaller set goes under the larger
                    root, other = other, root
                parent[other] = root
                sets[root] = a + b
            visited += pixel
        i += count[v]
        small = 0
        for r in range(n_rules):  # every pixel with p >= v is in: level v - 1
            small += delta[r]
            area[v - 1, r], inter[v - 1, r] = (visited - small) & LOW, (visited - small) >> 32


@numba.njit(cache=True, parallel=True)
def _sweep(probs, truth, n_below, groups, first, area, inter) -> None:
    n, h, w = probs.shape
    for b in numba.prange((n + BLOCK - 1) // BLOCK):  # each task: its own buffers, reused over its maps
        order, count = np.empty(h * w, np.int32), np.empty(256, np.int64)
        seen = np.empty((h + 2) * (w + 2), np.uint8)  # padded: which of a pixel and its 2 row neighbours are visited
        parent = np.empty((h + 2) * (w + 2), np.int32)
        sets = np.empty((h + 2) * (w + 2), np.int64)  # at a set's root: its pixels + truth pixels << 32
        for i in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            bufs = order, count, seen, parent, sets
            _sweep_map(probs[i], truth[i], n_below, groups, first, *bufs, area[i], inter[i])


def thread_budget() -> int:
    """Threads this process may use: OMP_NUM_THREADS when set (`cloudcli run` sets it per stage),
    else numba's pool (the cores), and never more than the pool."""
    budget, pool = os.environ.get("OMP_NUM_THREADS", ""), numba.config.NUMBA_NUM_THREADS
    return max(1, min(pool, int(budget))) if budget.isdigit() else pool


def component_sweep(
    probs: np.ndarray, truth: np.ndarray, min_components: tuple[int, ...], threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 255, R) int32 area, and intersection with the truth, kept at [map, level, rule] by the
    rule min_components[rule] (0 or 1: keep every component), for (n, H, W) uint8 maps and
    (n, H, W) bool truth masks. Maps run in parallel on `threads` (default: thread_budget())."""
    if probs.ndim != 3 or probs.dtype != np.uint8 or truth.shape != probs.shape:
        raise ValueError(f"expected (n, H, W) uint8 maps and truth of their shape, got {probs.shape}, {truth.shape}")
    rules, column = np.unique(np.asarray(min_components, np.int64), return_inverse=True)
    top = min(int(rules.max(initial=0)), probs[0].size if len(probs) else 0)  # no set is larger than a map
    n_below = np.searchsorted(rules, np.arange(top + 1), "right").astype(np.int16)  # [s]: rules c <= s
    # (a set larger than top is below no rule: top is the largest rule, n_below[top] = R, the last slot)
    area = np.zeros((len(probs), N_LEVELS, len(rules)), np.int32)
    inter = np.zeros_like(area)
    numba.set_num_threads(threads or thread_budget())
    probs, truth = np.ascontiguousarray(probs), np.ascontiguousarray(truth, dtype=np.bool_)
    _sweep(probs, truth, n_below, GROUPS, FIRST, area, inter)
    return area[..., column.reshape(-1)], inter[..., column.reshape(-1)]
