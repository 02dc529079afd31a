"""The trained pipeline, carried out of the project: `cloudcli export` writes a bundle folder (the
models, their settings, the tuned rules, a manifest), `cloudcli predict` and `Predictor` apply it
to new images and scenes offline.

manifest.py: the manifest and its checks; export.py: writing a bundle; predictor.py: loading one
and predicting an image; inputs.py: finding inputs; raster.py: reading them by windows; tiles.py:
a scene's tiles and cells; scene.py: predicting a scene a row of cells at a time; outputs.py: RLE
CSV, label rasters, probabilities and polygons; run.py: the predict loop.

In Python: `from cloudcli.bundle import Input, Predictor, read_input`.
"""

from __future__ import annotations

__all__ = ["Input", "Predictor", "read_input"]


def __getattr__(name: str):  # the API, imported when first used (torch loads with the predictor)
    if name == "Predictor":
        from cloudcli.bundle.predictor import Predictor

        return Predictor
    if name == "Input":
        from cloudcli.bundle.inputs import Input

        return Input
    if name == "read_input":
        from cloudcli.bundle.raster import read_input

        return read_input
    raise AttributeError(name)
