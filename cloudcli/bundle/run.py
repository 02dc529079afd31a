"""`cloudcli predict`'s loop: every input opened, predicted, handed on a row of cells at a time.

Inputs of the training size (data.raw_size) are predicted whole, in batches of infer's size, as
`submit` predicted the test images; any other size is a scene, predicted in tiles and judged cell
by cell (cloudcli.bundle.scene).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cloudcli.bundle.inputs import Input
from cloudcli.bundle.predictor import Predictor
from cloudcli.bundle.raster import Raster
from cloudcli.bundle.scene import Strip, predict_scene
from cloudcli.errors import DataError
from cloudcli.ui import info, progress

Predicted = Iterator[tuple[Input, Raster, list[Strip] | Iterator[Strip]]]


def open_all(spec: dict, items: list[Input], whole_only: bool) -> list[tuple[int, int]]:
    """Every input's (H, W), each opened and checked (bands, pixel type) against the bundle's input
    `spec` before anything is predicted; with `whole_only`, inputs of another size than the
    training images are refused."""
    raw, shapes = tuple(spec["raw_size"]), []
    for item in items:
        with Raster(item, spec) as raster:
            shapes.append(raster.shape)
        if whole_only and raster.shape != raw:
            raise DataError(
                f"{item.path}: {raster.shape[0]}x{raster.shape[1]} pixels; --format rle writes whole images of the "
                f"training size ({raw[0]}x{raw[1]}): predict scenes to label rasters (--format tif or png)"
            )
    return shapes


def predict_inputs(
    predictor: Predictor,
    items: list[Input],
    tile: tuple[int, int] | None = None,
    overlap: int | None = None,
    shapes: list[tuple[int, int]] | None = None,
) -> Predicted:
    """(input, its Raster, its strips) of every input, in order; a scene's strips are predicted as
    they are taken. `shapes`: open_all's, when the inputs were checked already."""
    shapes = shapes or open_all(predictor.input, items, False)
    raw = tuple(predictor.input["raw_size"])
    layouts = {s: predictor.layout(s, tile, overlap) for s in set(shapes) if s != raw}  # bad --tile fails here
    scenes = sum(s != raw for s in shapes)
    info(
        f"predict: {len(items)} inputs ({scenes} scenes in tiles) with {predictor.folder} "
        f"({', '.join(predictor.models)}) on {predictor.device}"
    )
    with progress("predict", sum(h for h, _ in shapes), "image rows") as advance:
        batch: list[tuple[Input, Raster]] = []
        for item, shape in zip(items, shapes):
            raster = Raster(item, predictor.input)
            if shape == raw:
                batch.append((item, raster))
                if len(batch) == predictor.batch_size:
                    yield from _whole(predictor, batch, advance)
                continue
            yield from _whole(predictor, batch, advance)
            with raster:
                yield item, raster, _advancing(predict_scene(predictor, raster, layouts[shape]), advance)
        yield from _whole(predictor, batch, advance)


def _whole(predictor: Predictor, batch: list[tuple[Input, Raster]], advance) -> Predicted:
    """Inputs of the training size, predicted together as infer's batches were; `batch` emptied."""
    if not batch:
        return
    read = [raster.read(0, raster.shape[0], 0, raster.shape[1]) for _, raster in batch]  # (image, has data)
    valid = np.stack([v for _, v in read]) if predictor.input["nodata"] is not None else None
    masks, probs = predictor.predict_batch(np.stack([image for image, _ in read]), valid)
    maps = {name: p for name, p in probs.items() if name in predictor.models and predictor.models[name].segments}
    for k, (item, raster) in enumerate(batch):
        with raster:
            yield item, raster, [Strip((0, raster.shape[0]), masks[k], {n: m[k] for n, m in maps.items()})]
        advance(raster.shape[0])
    batch.clear()


def _advancing(strips: Iterator[Strip], advance) -> Iterator[Strip]:
    for strip in strips:
        yield strip
        advance(strip.rows[1] - strip.rows[0])
