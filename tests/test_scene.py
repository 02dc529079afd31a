"""Scenes: the tile layout, the blending (against a brute-force whole-scene blend), and what the
tuned rules mean on a scene (each training-image cell judged on its own), with hand-made networks
whose outputs are known exactly."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cloudcli.bundle.predictor import Model, Predictor
from cloudcli.bundle.raster import ArrayRaster
from cloudcli.bundle.scene import predict_array, predict_scene
from cloudcli.bundle.tiles import layout, ramp, starts
from cloudcli.errors import DataError


class Bright(nn.Module):
    """Segmentation: cloud where band 0 is bright, pixel by pixel (+ `context` x the tile's mean)."""

    def __init__(self, context: float = 0.0) -> None:
        super().__init__()
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        band = x[:, :1]
        return 40 * (band - 0.5) + self.context * band.mean((2, 3), keepdim=True)


class Flagged(nn.Module):
    """Classifier: cloud present where band 1 has a bright pixel anywhere in the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40 * (x[:, 1:2].amax((2, 3)) - 0.5)


def predictor(raw=(16, 16), score=(8, 8), seg: nn.Module | None = None, **pipeline) -> Predictor:
    """Two bands, one class; seg1 = Bright, classifier = Flagged, rules from `pipeline`."""
    settings = {"normalization": {"mean": [0, 0], "std": [1, 1]}, "input_size": list(raw)}
    settings["train_config"] = {"channels_last": False}
    models = {"seg1": Model("seg1", [seg or Bright()], ("none",), settings)}
    models["classifier"] = Model("classifier", [Flagged()], ("none",), settings)
    rule = {"level": 127, "min_area": 10, "min_component": 0, "gate_threshold": 0.5, "shape_level": 127}
    rule |= pipeline.pop("rule", {})
    spec = {
        "classes": ["cloud"],
        "input": {"raw_size": list(raw), "cache_size": list(raw), "score_size": list(score), "channels": 2},
        "pipeline": {"seg1": "seg1", "shape": None, "classifier": "classifier", "class_score": "classifier"}
        | {"top_k": 4, "at_least_one": False, "rules": {"cloud": rule}}
        | pipeline,
        "infer": {"batch_size": 3, "precision": "fp32", "stack_tta": False},
    }
    spec["input"] |= {"kind": "chips", "bands": None, "band_limits": None, "nodata": None}
    return Predictor(Path("<test>"), spec, models, torch.device("cpu"))


def test_window_starts_cover_the_length_and_end_on_the_edge() -> None:
    assert starts(40, 16, 12) == [0, 12, 24]
    assert starts(36, 16, 12) == [0, 12, 20]  # the last moved back to end at 36
    assert starts(16, 16, 12) == [0] and starts(10, 16, 12) == [0]
    for length in range(1, 80):
        s = starts(length, 16, 12)
        covered = np.zeros(length, bool)
        for a in s:
            covered[a : a + 16] = True
        assert covered.all() and s == sorted(set(s)) and s[-1] == max(length - 16, 0)


def test_ramps_of_neighbours_sum_to_one() -> None:
    tile, overlap = 16, 6
    left, right = ramp(tile, overlap, rise=False, fall=True), ramp(tile, overlap, rise=True, fall=False)
    np.testing.assert_allclose(left[tile - overlap :] + right[:overlap], 1.0, atol=1e-6)
    assert (left[: tile - overlap] == 1).all() and (right[overlap:] == 1).all()
    assert (np.diff(right[:overlap]) > 0).all() and right[0] > 0  # smooth rise, never 0
    assert (ramp(tile, 0, True, True) == 1).all()


def test_layout_sizes_and_bad_tiles() -> None:
    spec = {"raw_size": [1400, 2100], "cache_size": [64, 96], "score_size": [350, 525]}
    lay = layout((2800, 4200), spec, [(64, 96)])
    assert lay.size == (700, 1050) and lay.tile == (350, 525) and lay.rows.overlap == 88  # 350 / 4 at 1/4 scale
    assert lay.rows.cells == [(0, 350), (350, 700)] and lay.scaled((1400, 2100), (64, 96)) == (64, 96)
    assert layout((2800, 4200), spec, [(64, 96)], tile=(2800, 4200)).tile == (700, 1050)
    with pytest.raises(DataError, match="a height of 1000 px is not a size the models take; use a multiple of 700"):
        layout((2800, 4200), spec, [(64, 96)], tile=(1000, 2100))
    with pytest.raises(DataError, match="--overlap 1400"):
        layout((2800, 4200), spec, [(64, 96)], overlap=1400)
    edge = layout((40, 40), {"raw_size": [16, 16], "cache_size": [16, 16], "score_size": [8, 8]}, [(16, 16)])
    assert edge.rows.cells == [(0, 8), (8, 16), (16, 20)] and edge.rows.judged(16) == 12


def brute_force_blend(p: Predictor, image: np.ndarray, lay) -> np.ndarray:
    """seg1's blended levels over the whole scene at once: every tile predicted alone, weighted."""
    h, w = lay.size
    total, weight = np.zeros((1, h, w), np.float32), np.zeros((h, w), np.float32)
    for y in lay.rows.tiles:
        for x in lay.cols.tiles:
            rows, cols = lay.rows, lay.cols
            window = ArrayRaster(image, p.input).read(
                rows.to_input(y), rows.to_input(y + rows.tile), cols.to_input(x), cols.to_input(x + cols.tile)
            )[0]
            probs = p.run(window[None], segments=True, out_size=lay.tile)["seg1"][0].numpy()
            wt = lay.weights(y, x)[: h - y, : w - x]
            total[:, y : y + wt.shape[0], x : x + wt.shape[1]] += probs[:, : wt.shape[0], : wt.shape[1]] * wt
            weight[y : y + wt.shape[0], x : x + wt.shape[1]] += wt
    return np.clip(np.round(total / weight * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(40, 40), (64, 16), (10, 30), (50, 34)])
def test_streamed_blend_equals_the_whole_scene_blend(shape) -> None:
    """Row by row with bounded memory, the blend is the brute-force blend of every tile (a network
    that sees its tile's mean, so tiles disagree and the weights matter)."""
    p = predictor(seg=Bright(context=8.0))
    image = np.random.default_rng(0).integers(0, 256, (*shape, 2), dtype=np.uint8)
    lay = p.layout(shape, overlap=6)
    strips = list(predict_scene(p, ArrayRaster(image, p.input), lay))
    bounds = [s.rows for s in strips]  # consecutive input rows, top to bottom
    assert bounds[0][0] == 0 and bounds[-1][1] == shape[0] and all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    streamed = np.concatenate([s.maps["seg1"] for s in strips], axis=1)
    assert np.abs(streamed.astype(int) - brute_force_blend(p, image, lay)).max() <= 1


def scene(shape, squares) -> np.ndarray:
    """(H, W, 2) uint8: band 0 bright in `squares` (y0, y1, x0, x1), band 1 bright where flagged."""
    image = np.zeros((*shape, 2), np.uint8)
    for y0, y1, x0, x1, flagged in squares:
        image[y0:y1, x0:x1, 0] = 255
        image[y0:y1, x0:x1, 1] = 255 * flagged
    return image


def test_the_rules_judge_each_training_image_cell_on_its_own() -> None:
    """Cells of 16x16 input pixels (8x8 at the scoring size, min_area 10 there) on a 40x40 scene:
    a cell keeps a region of 16 scoring pixels, drops one of 4 (min_area), drops a flagged-off
    one (the classifier's gate, run on the cell); a region split by a cell edge is judged in each
    cell apart; the last row of cells, 8 pixels high, is judged on the 16-pixel window that ends at
    the edge."""
    image = scene(
        (40, 40),
        [
            (0, 8, 0, 8, True),  # cell (0, 0): 4x4 = 16 scoring pixels: kept
            (4, 8, 20, 24, True),  # cell (0, 1): 2x2 = 4 < 10: dropped
            (0, 8, 32, 40, False),  # cell (0, 2): no classifier flag: gated off
            (28, 36, 0, 8, True),  # rows 28..32 in cell (1, 0): 8 pixels, dropped; rows 32..36 in the
        ],  # edge cell (2, 0), judged on rows 24..40 where the whole region's 16 pixels are: kept
    )
    p = predictor()
    masks = predict_array(p, image, p.layout((40, 40), overlap=4))
    expected = np.zeros((1, 20, 20), np.uint8)
    expected[0, 0:4, 0:4] = 1
    expected[0, 16:18, 0:4] = 1
    np.testing.assert_array_equal(masks, expected)

    # at-least-one, per cell: a cell left empty keeps its best class, thresholded only
    kept = predict_array(predictor(at_least_one=True), image, p.layout((40, 40), overlap=4))
    expected[0, 2:4, 10:12] = 1  # cell (0, 1)'s small region comes back
    expected[0, 14:16, 0:4] = 1  # and the top half of the split region in cell (1, 0)
    expected[0, 0:4, 16:20] = 1  # the gated region too: the gate emptied the cell, at-least-one refills it
    np.testing.assert_array_equal(kept, expected)


def test_an_image_of_the_training_size_is_judged_whole_as_submit_does() -> None:
    """A scene of one training image and one tile is the image predicted whole: the same masks."""
    p = predictor()
    image = scene((16, 16), [(0, 8, 0, 8, True), (10, 14, 10, 14, True)])
    whole = p.predict(image)
    tiled = predict_array(p, image, p.layout((16, 16)))
    np.testing.assert_array_equal(whole, tiled)
    assert whole.sum() == 16 + 4  # the cell's area (20) passes min_area: both regions kept


def test_a_scene_smaller_than_one_image_is_judged_padded() -> None:
    p = predictor(rule={"min_area": 0})
    image = scene((10, 12), [(0, 4, 0, 4, True)])
    masks = p.predict(image)
    assert masks.shape == (1, 5, 6) and masks[0, :2, :2].all() and masks.sum() == 4
