"""A scene predicted a row of cells at a time (the layout: cloudcli.bundle.tiles).

Tiles are read, predicted and blended into running sums a row of tiles at a time; as soon as no
later tile reaches a row of cells, its cells are judged by the tuned rules and the row is handed
on and dropped. Memory is a few rows of tiles, whatever the scene's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cloudcli.bundle.predictor import Predictor
from cloudcli.bundle.raster import Raster
from cloudcli.bundle.tiles import Layout
from cloudcli.data.cache import resize_image


@dataclass(frozen=True)
class Strip:
    """One row of cells: input rows [rows); the masks and each segmentation model's probabilities
    at the scoring resolution."""

    rows: tuple[int, int]
    masks: np.ndarray  # (C, h, w) 0/1 uint8
    maps: dict[str, np.ndarray]  # model -> (C, h, w) uint8 probabilities


class Sums:
    """Weighted sums of the tiles' probabilities over the scene's rows [base, base + height)."""

    def __init__(self, names: list[str], classes: int, width: int) -> None:
        self.base, self.width = 0, width
        self.maps = {n: np.zeros((classes, 0, width), np.float32) for n in names}
        self.weight = np.zeros((0, width), np.float32)

    def add(self, name: str, y: int, x: int, probs: np.ndarray, weights: np.ndarray) -> None:
        """Add (C, h, w) probabilities with (h, w) weights at scene row y, column x."""
        h, w = weights.shape
        self._grow(y + h)
        self.maps[name][:, y - self.base : y - self.base + h, x : x + w] += probs * weights

    def weigh(self, y: int, x: int, weights: np.ndarray) -> None:
        h, w = weights.shape
        self._grow(y + h)
        self.weight[y - self.base : y - self.base + h, x : x + w] += weights

    def levels(self, name: str, y0: int, y1: int) -> np.ndarray:
        """(C, y1 - y0, width) uint8 blended probabilities of rows [y0, y1) (0 where no tile was run)."""
        rows = slice(y0 - self.base, y1 - self.base)
        mean = self.maps[name][:, rows] / np.maximum(self.weight[rows], 1e-12)
        return np.clip(np.round(mean * 255), 0, 255).astype(np.uint8)

    def drop(self, below: int) -> None:
        """Forget the rows above scene row `below`."""
        cut = max(0, below - self.base)
        self.maps = {n: m[:, cut:].copy() for n, m in self.maps.items()}
        self.weight, self.base = self.weight[cut:].copy(), self.base + cut

    def _grow(self, top: int) -> None:
        more = top - self.base - len(self.weight)
        if more > 0:
            self.maps = {
                n: np.concatenate([m, np.zeros((m.shape[0], more, self.width), np.float32)], 1)
                for n, m in self.maps.items()
            }
            self.weight = np.concatenate([self.weight, np.zeros((more, self.width), np.float32)])


def predict_scene(predictor: Predictor, raster: Raster, lay: Layout) -> Iterator[Strip]:
    """Every row of cells of the scene, top to bottom."""
    rows = lay.rows
    names = [n for n, m in predictor.models.items() if m.segments]
    sums = Sums(names, len(predictor.classes), lay.cols.length)
    scores = CellScores(predictor, raster, lay)
    cells, done = rows.cells, 0
    for complete in _add_tiles(predictor, raster, lay, sums):
        while done < len(cells) and min(rows.judged(cells[done][0]) + rows.cell, rows.length) <= complete:
            yield _judge_row(predictor, lay, sums, cells[done], scores.row(done))
            done += 1
            if done < len(cells):
                sums.drop(rows.judged(cells[done][0]))


def _add_tiles(predictor: Predictor, raster: Raster, lay: Layout, sums: Sums) -> Iterator[int]:
    """Predict every tile, row by row, in batches of infer's size (a batch may span rows, so a
    narrow scene fills its batches as a wide one does) and add them to the sums; after each batch,
    yield the scene row above which no later tile adds anything."""
    raw, cache = tuple(predictor.input["raw_size"]), tuple(predictor.input["cache_size"])
    positions = [(y, x) for y in lay.rows.tiles for x in lay.cols.tiles]
    batch: list[tuple[int, int, np.ndarray]] = []
    for i, (y, x) in enumerate(positions):
        image, valid = _window(raster, lay, y, y + lay.rows.tile, x, x + lay.cols.tile)
        if valid.any():  # a tile of no-data only is not predicted: its pixels are written as no-data
            batch.append((y, x, resize_image(image, lay.scaled(raw, cache))))
        if len(batch) == predictor.batch_size or i + 1 == len(positions):
            _predict_tiles(predictor, lay, sums, batch)
            batch = []
            yield positions[i + 1][0] if i + 1 < len(positions) else lay.rows.length


def _predict_tiles(predictor: Predictor, lay: Layout, sums: Sums, batch: list[tuple[int, int, np.ndarray]]) -> None:
    if not batch:
        return
    probs = predictor.run(np.stack([t for _, _, t in batch]), segments=True, out_size=lay.tile)
    for k, (y, x, _) in enumerate(batch):
        h, w = min(lay.rows.tile, lay.rows.length - y), min(lay.cols.tile, lay.cols.length - x)
        weights = lay.weights(y, x)[:h, :w]
        sums.weigh(y, x, weights)
        for name, p in probs.items():
            sums.add(name, y, x, p[k, :, :h, :w].cpu().numpy(), weights)


class CellScores:
    """The classifiers' probabilities of every cell's training-size window, computed in row-major
    order in batches of infer's size (ahead of the row being judged) and handed out a row at a time."""

    def __init__(self, predictor: Predictor, raster: Raster, lay: Layout) -> None:
        self.predictor, self.raster, self.lay = predictor, raster, lay
        self.active = predictor.gate_key is not None or any(not m.segments for m in predictor.models.values())
        self.windows = [(lay.rows.judged(y), lay.cols.judged(x)) for y, _ in lay.rows.cells for x, _ in lay.cols.cells]
        self.ready: dict[int, dict[str, np.ndarray]] = {}
        self.next = 0

    def row(self, r: int) -> dict[str, np.ndarray]:
        """Each classifier's (cells in a row, C) probabilities of row r's cells."""
        if not self.active:
            return {}
        per_row = len(self.lay.cols.cells)
        while self.next < (r + 1) * per_row:
            self._classify()
        found = [self.ready.pop(i) for i in range(r * per_row, (r + 1) * per_row)]
        return {n: np.stack([f[n] for f in found]) for n in found[0]}

    def _classify(self) -> None:
        lay, cache = self.lay, tuple(self.predictor.input["cache_size"])
        todo = range(self.next, min(self.next + self.predictor.batch_size, len(self.windows)))
        images = []
        for i in todo:
            y, x = self.windows[i]
            images.append(resize_image(_window(self.raster, lay, y, y + lay.rows.cell, x, x + lay.cols.cell)[0], cache))
        scores = self.predictor.classify(np.stack(images))
        for k, i in enumerate(todo):
            self.ready[i] = {n: p[k] for n, p in scores.items()}
        self.next = todo.stop


def _judge_row(
    predictor: Predictor, lay: Layout, sums: Sums, cell: tuple[int, int], scores: dict[str, np.ndarray]
) -> Strip:
    """The masks of one row of cells, each judged by the rules on its training-size window."""
    rows, cols = lay.rows, lay.cols
    (c0, c1), jy = cell, rows.judged(cell[0])
    band = {n: _pad(sums.levels(n, jy, min(jy + rows.cell, rows.length)), rows.cell, 1) for n in sums.maps}
    masks = np.zeros((len(predictor.classes), c1 - c0, cols.length), np.uint8)
    for k, (x0, x1) in enumerate(cols.cells):
        jx = cols.judged(x0)
        probs = {n: _pad(b[:, :, jx : jx + cols.cell], cols.cell, 2)[None] for n, b in band.items()}
        probs |= {n: s[k : k + 1] for n, s in scores.items()}
        masks[:, :, x0:x1] = predictor.masks(probs)[0][:, c0 - jy : c1 - jy, x0 - jx : x1 - jx]
    maps = {n: b[:, c0 - jy : c1 - jy, : cols.length] for n, b in band.items()}
    return Strip((rows.to_input(c0), rows.to_input(c1)), masks, maps)


def _window(raster: Raster, lay: Layout, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """The input pixels under scene window [y0, y1) x [x0, x1) (scoring pixels), zero-padded."""
    rows, cols = lay.rows, lay.cols
    return raster.read(rows.to_input(y0), rows.to_input(y1), cols.to_input(x0), cols.to_input(x1))


def _pad(array: np.ndarray, size: int, axis: int) -> np.ndarray:
    """`array` zero-padded along `axis` to `size` (a scene smaller than one training image)."""
    missing = size - array.shape[axis]
    if missing <= 0:
        return array
    pad = [(0, 0)] * array.ndim
    pad[axis] = (0, missing)
    return np.pad(array, pad)


@torch.inference_mode()
def predict_array(predictor: Predictor, image: np.ndarray, lay: Layout) -> np.ndarray:
    """(C, h, w) masks at the scoring resolution of a whole (H, W, B) uint8 scene in memory."""
    from cloudcli.bundle.raster import ArrayRaster

    strips = list(predict_scene(predictor, ArrayRaster(image, predictor.input), lay))
    return np.concatenate([s.masks for s in strips], axis=1)
