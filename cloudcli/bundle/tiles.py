"""Where a scene is read, predicted and judged: the geometry of `cloudcli predict` on inputs larger
(or smaller) than the images the bundle's models were trained on.

Everything is laid out at the scoring resolution (data.score_size per training image), where the
tuned rules were fitted:

- **tiles** of `tile` input pixels, `overlap` apart, are what the networks see; the last tile of a
  row or column is moved back to end at the scene's edge. Their probabilities are blended with a
  raised-cosine ramp over each overlap, so two neighbours' weights sum to 1 and no seam shows; a
  tile edge on the scene's edge keeps weight 1.
- **cells** of one training image each (data.raw_size), from the top-left corner, are what the
  rules judge: each cell is decided as one image (gate, min_area, min_component, at-least-one),
  on a window of exactly the training size. A cell cut short by the scene's edge is judged on the
  full-size window that ends at the edge, and only its own pixels are written; a scene smaller
  than one image is judged padded with zeros (the value no-data takes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cloudcli.errors import DataError


def starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts covering [0, length) with windows of `size`, `stride` apart, the last moved
    back to end at `length` (one window at 0 when length <= size)."""
    if length <= size:
        return [0]
    out = list(range(0, length - size, stride))
    return [*out, length - size]


def ramp(size: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """(size,) float32 weights: sin^2 rising over the first `overlap` samples (if `rise`), cos^2
    falling over the last (if `fall`), 1 between; a rise and the fall it overlaps sum to 1."""
    w = np.ones(size, np.float32)
    if overlap > 0:
        edge = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap).astype(np.float32) ** 2
        if rise:
            w[:overlap] *= edge
        if fall:
            w[size - overlap :] *= edge[::-1]
    return w


@dataclass(frozen=True)
class Axis:
    """One axis of a scene's layout, in scoring pixels unless said."""

    pixels: int  # the scene's input pixels along this axis
    length: int  # the scene at the scoring resolution
    tile: int  # a tile
    overlap: int
    cell: int  # one training image

    @property
    def tiles(self) -> list[int]:
        return starts(self.length, self.tile, self.tile - self.overlap)

    def weights(self, start: int) -> np.ndarray:
        """The blending weights of the tile at `start` (no ramp on the scene's edge)."""
        return ramp(self.tile, self.overlap, start > 0, start + self.tile < self.length)

    @property
    def cells(self) -> list[tuple[int, int]]:
        """(start, end) of each cell, the last cut short by the scene's edge."""
        return [(c, min(c + self.cell, self.length)) for c in range(0, self.length, self.cell)]

    def judged(self, start: int) -> int:
        """Start of the full-size window that judges the cell at `start`."""
        return max(min(start, self.length - self.cell), 0)

    def to_input(self, position: int) -> int:
        """The input pixel where scoring pixel `position` begins."""
        return round(position * self.pixels / self.length)


@dataclass(frozen=True)
class Layout:
    rows: Axis
    cols: Axis
    pixels: tuple[int, int]  # a tile in input pixels

    def scaled(self, raw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
        """A tile at the resolution where a training image is `size` (the cache, a network's input)."""
        return self.pixels[0] * size[0] // raw[0], self.pixels[1] * size[1] // raw[1]

    @property
    def cell(self) -> tuple[int, int]:
        return self.rows.cell, self.cols.cell

    @property
    def tile(self) -> tuple[int, int]:
        return self.rows.tile, self.cols.tile

    @property
    def size(self) -> tuple[int, int]:
        return self.rows.length, self.cols.length

    def weights(self, y: int, x: int) -> np.ndarray:
        """(tile) blending weights of the tile at (y, x)."""
        return np.outer(self.rows.weights(y), self.cols.weights(x))


def layout(
    scene: tuple[int, int],
    spec: dict,
    nets: list[tuple[int, int]],
    tile: tuple[int, int] | None = None,
    overlap: int | None = None,
) -> Layout:
    """The layout of a scene of `scene` (H, W) input pixels for a bundle's input spec (raw_size,
    cache_size, score_size) and its networks' input sizes `nets`; `tile` and `overlap` in input
    pixels (default: one training image, a quarter of it). Fails naming the option when a tile is
    not something the networks can take."""
    raw, cache, score = (tuple(spec[k]) for k in ("raw_size", "cache_size", "score_size"))
    tile = tuple(tile or raw)
    if min(tile) < 1:
        raise DataError(f"--tile {tile[0]} {tile[1]}: must be positive")
    axes = []
    for i, name in enumerate(("height", "width")):
        unit = _unit(raw[i], score[i], cache[i], [n[i] for n in nets])
        if tile[i] % unit and tile[i] != raw[i]:
            raise DataError(
                f"--tile: a {name} of {tile[i]} px is not a size the models take; use a multiple of {unit} px "
                f"(the bundle's models see {raw[i]} px at {sorted({n[i] for n in nets})}, and a network input is a "
                "multiple of 32)"
            )
        o = tile[i] // 4 if overlap is None else overlap
        if not 0 <= o < tile[i]:
            raise DataError(f"--overlap {o}: must be at least 0 and less than the tile ({tile[i]} px)")
        length = max(1, round(scene[i] * score[i] / raw[i]))
        axes.append(Axis(scene[i], length, tile[i] * score[i] // raw[i], round(o * score[i] / raw[i]), score[i]))
    return Layout(axes[0], axes[1], tile)


def _unit(raw: int, score: int, cache: int, nets: list[int]) -> int:
    """The smallest tile (input pixels) that is a whole number of pixels at the scoring and cache
    resolutions and a multiple of 32 at every network's input size."""
    unit = 1
    for target, times in [(score, 1), (cache, 1)] + [(n, 32) for n in nets]:
        step = raw * times // math.gcd(raw * times, target)  # tile * target / raw a multiple of `times`
        unit = unit * step // math.gcd(unit, step)
    return unit
