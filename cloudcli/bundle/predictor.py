"""The tuned pipeline of a bundle, applied to images: `Predictor.load("bundle/").predict(image)`.

Every step is the pipeline's own code, so a bundle reproduces `submit` bit for bit: the image
resized to the cache size as `preprocess` does, each model's fold models and TTA views averaged as
`infer` does (`predict_folds`, in batches of the size infer used), the seg2 vote of `ensemble`, and
the two-stage rules of `submit` (cloudcli.post). Masks come out at the scoring size (data.score_size).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cloudcli.bundle.manifest import verify
from cloudcli.data.cache import resize_image, resize_mask
from cloudcli.data.dataset import build_transform
from cloudcli.engine import checkpoint
from cloudcli.engine.distributed import pick_device
from cloudcli.engine.predict import autocast_dtype, memory_format, predict_folds, to_uint8, trained_net
from cloudcli.errors import DataError
from cloudcli.io import json_type, need_keys, read_json
from cloudcli.post.rules import ClassRule, postprocess
from cloudcli.post.tuned import class_scores
from cloudcli.post.vote import vote


@dataclass(frozen=True)
class Model:
    """One model of the pipeline: its fold networks and how to feed them."""

    role: str
    nets: list[torch.nn.Module]
    tta: tuple[str, ...]
    settings: dict
    scales: tuple[float, ...] = (1.0,)  # infer.scales

    @property
    def segments(self) -> bool:
        return self.role != "classifier"

    def inputs(self, images: np.ndarray, cache_size: tuple[int, int], device: torch.device) -> torch.Tensor:
        """(N, B, h, w) network input of (N, h, w, B) uint8 images at the cache resolution, as infer
        feeds it: a training image (`cache_size`) or a tile of a scene scaled the same way."""
        norm = self.settings["normalization"]
        size = tuple(self.settings["input_size"])
        if tuple(images.shape[1:3]) != tuple(cache_size):  # a tile: the network's input at the same scale
            size = tuple(images.shape[1 + i] * size[i] // cache_size[i] for i in range(2))
            cache_size = tuple(images.shape[1:3])
        transform = build_transform(None, size, cache_size, tuple(norm["mean"]), tuple(norm["std"]))
        x = torch.stack([transform(image=np.asarray(image))["image"] for image in images])
        return x.to(device, memory_format=memory_format(self.settings))


class Predictor:
    """A loaded bundle: `predict(image)` gives the (C, H, W) 0/1 masks `submit` would encode."""

    def __init__(self, folder: Path, spec: dict, models: dict[str, Model], device: torch.device) -> None:
        """Use `Predictor.load`."""
        self.folder, self.spec, self.models, self.device = folder, spec, models, device
        self.classes: tuple[str, ...] = tuple(spec["classes"])
        self.input: dict = spec["input"]
        pipeline = spec["pipeline"]
        self.rules = [ClassRule(**{k: pipeline["rules"][c][k] for k in RULE_KEYS}) for c in self.classes]
        self.shape_levels = [pipeline["rules"][c]["shape_level"] for c in self.classes]
        gate = pipeline["classifier"]  # a classifier, or a segmentation model whose class head gates
        self.gate_key = gate if gate is None or not models[gate].segments else f"{gate}{HEAD}"

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> Predictor:
        """Check the bundle's manifest, then build every fold network (no download) and load its
        weights (weights_only)."""
        folder = Path(folder)
        spec = read_spec(folder)
        target = pick_device(device)
        models = {}
        for name, m in spec["models"].items():
            nets = []
            for k in m["folds"]:
                path = folder / "models" / name / f"fold{k}.pt"
                nets.append(
                    trained_net(m["settings"], checkpoint.load(path, "export the bundle again")["model"], target)
                )
            models[name] = Model(m["role"], nets, tuple(m["tta"]), m["settings"], tuple(m.get("scales", [1.0])))
        return cls(folder, spec, models, target)

    @property
    def batch_size(self) -> int:
        return int(self.spec["infer"]["batch_size"])

    def check(self, image: np.ndarray) -> None:
        """Refuse an image the bundle's models cannot take: another size or band count."""
        raw = tuple(self.input["raw_size"])
        if image.ndim != 3 or image.shape[:2] != raw or image.shape[2] != self.input["channels"]:
            raise DataError(
                f"an image of shape {image.shape}; the bundle's models take whole images of {raw[0]}x{raw[1]} "
                f"with {self.input['channels']} bands (inputs of other sizes are not supported yet)"
            )

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """(H, W, B) uint8 raw-size image (cloudcli.bundle.inputs.read_input) -> the cache-size image."""
        self.check(image)
        return resize_image(image, tuple(self.input["cache_size"]))

    def probabilities(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each model's output on (N, h, w, B) cache-size images: (N, C, H, W) uint8 maps at the
        scoring size for segmentation models, (N, C) probabilities for classifiers (rounded as
        infer writes them)."""
        maps = self.run(images, segments=True)
        return {name: to_uint8(mean).cpu().numpy() for name, mean in maps.items()} | self.classify(images)

    def classify(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Each classifier's (N, C) probabilities of (N, h, w, B) cache-size images, rounded as
        infer's test.csv holds them (6 decimals of a float32)."""
        scores = self.run(images, segments=False)
        if self.gate_key is not None and self.gate_key not in self.models:  # a class head gates
            gate = self.models[self.spec["pipeline"]["classifier"]]
            scores[self.gate_key] = self._predict(gate, images, "classifier", None)
        return {name: p.cpu().numpy().round(6).astype(str).astype(np.float64) for name, p in scores.items()}

    def run(self, images: np.ndarray, segments: bool, out_size: tuple[int, int] | None = None) -> dict:
        """Each segmentation model's (N, C, *out_size) float probabilities (default: the scoring
        size) of (N, h, w, B) images at the cache resolution (whole images or tiles), or each
        classifier's (N, C): the mean of its folds and TTA views, as infer takes it."""
        size = tuple(out_size or self.input["score_size"]) if segments else None
        return {
            name: self._predict(model, images, model.role, size)
            for name, model in self.models.items()
            if model.segments == segments
        }

    def _predict(self, model: Model, images: np.ndarray, role: str, size: tuple[int, int] | None) -> torch.Tensor:
        """`model`'s fold mean on (N, h, w, B) cache-resolution images, as infer takes it: its masks
        at `size`, or with role classifier its class probabilities (a class head's, for a
        segmentation model)."""
        dtype, stacked = autocast_dtype(self.spec["infer"]["precision"], self.device), self.spec["infer"]["stack_tta"]
        x = model.inputs(images, tuple(self.input["cache_size"]), self.device)
        return predict_folds(model.nets, x, model.tta, role, size, dtype, stacked, model.scales)[0]

    def masks(self, probs: dict[str, np.ndarray]) -> np.ndarray:
        """(N, C, H, W) 0/1 masks of the tuned pipeline from `probabilities`' output."""
        pipeline = self.spec["pipeline"]
        seg1, shape = probs[pipeline["seg1"]], self._shape(probs)
        classifier = None if self.gate_key is None else probs[self.gate_key]
        out = []
        for i in range(len(seg1)):
            scores = class_scores(
                pipeline["class_score"], seg1[i], None if classifier is None else classifier[i], pipeline["top_k"]
            )
            one = None if shape is None else shape[i]
            out.append(postprocess(seg1[i], self.rules, scores, pipeline["at_least_one"], one, self.shape_levels))
        return np.stack(out)

    def predict(
        self,
        image: np.ndarray,
        tile: tuple[int, int] | None = None,
        overlap: int | None = None,
        valid: np.ndarray | None = None,
    ) -> np.ndarray:
        """(C, h, w) 0/1 masks at the scoring resolution of one (H, W, B) uint8 image (read_input):
        of the training size, exactly as `submit` draws them; of any other size, a scene predicted
        in tiles and judged cell by cell (cloudcli.bundle.tiles). `valid` (H, W), for a bundle of
        data with no-data pixels (data.nodata): where the image has data, as the raster reader
        gives it; without it every pixel counts as data (`cloudcli predict` passes it)."""
        if image.ndim == 3 and image.shape[:2] == tuple(self.input["raw_size"]):
            return self.predict_batch(image[None], None if valid is None else valid[None])[0][0]
        from cloudcli.bundle.scene import predict_array

        if image.ndim != 3 or image.shape[2] != self.input["channels"]:
            raise DataError(
                f"an image of shape {image.shape}; the bundle's models take (H, W, {self.input['channels']})"
            )
        return predict_array(self, image, self.layout(image.shape[:2], tile, overlap))

    def predict_batch(
        self, images: np.ndarray, valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(N, C, H, W) masks and every model's probabilities of (N, H, W, B) raw-size images.
        `valid` (N, H, W): where they hold data (nodata); every map is 0 elsewhere, as infer writes it."""
        probs = self.probabilities(np.stack([self.prepare(image) for image in images]))
        if valid is not None:
            keep = np.stack([resize_mask(v.astype(np.uint8), tuple(self.input["score_size"])) for v in valid])
            for name, model in self.models.items():
                if model.segments:
                    probs[name] = probs[name] * keep[:, None]
        return self.masks(probs), probs

    def predict_many(
        self, images: Iterable[np.ndarray], valid: Iterable[np.ndarray] | None = None
    ) -> Iterator[np.ndarray]:
        """The masks of each raw-size image, in order, predicted in batches of the size infer used;
        `valid`: each image's (H, W) pixels with data, as in `predict`."""
        pairs = zip(images, valid, strict=True) if valid is not None else ((image, None) for image in images)
        batch: list[tuple] = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) == self.batch_size:
                yield from self._predict_pairs(batch)
                batch = []
        if batch:
            yield from self._predict_pairs(batch)

    def _predict_pairs(self, batch: list[tuple]) -> np.ndarray:
        valid = None if batch[0][1] is None else np.stack([v for _, v in batch])
        return self.predict_batch(np.stack([image for image, _ in batch]), valid)[0]

    def layout(self, scene: tuple[int, int], tile: tuple[int, int] | None = None, overlap: int | None = None):
        """The tiles and cells of a scene of `scene` (H, W) input pixels (cloudcli.bundle.tiles)."""
        from cloudcli.bundle.tiles import layout

        nets = [tuple(m.settings["input_size"]) for m in self.models.values() if m.segments]
        return layout(scene, self.input, nets, tile, overlap)

    def _shape(self, probs: dict[str, np.ndarray]) -> np.ndarray | None:
        shape = self.spec["pipeline"]["shape"]
        if shape is None:
            return None
        if "model" in shape:
            return probs[shape["model"]]
        maps = np.stack([probs[m] for m in shape["members"]])  # (M, N, C, H, W)
        levels = None if shape["levels"][0] is None else np.asarray(shape["levels"])  # (M, C)
        return np.stack(
            [
                vote(
                    maps[:, :, k],
                    shape["vote"],
                    None if levels is None else levels[:, k],
                    shape["min_votes"],
                    shape["weights"],
                )
                for k in range(len(self.classes))
            ],
            axis=1,
        )


RULE_KEYS = ("level", "min_area", "min_component", "gate_threshold")
HEAD = "#head"  # probabilities' key suffix of a segmentation model's class head that gates


SPEC_KEYS = {"classes": list, "input": dict, "infer": dict, "models": dict, "pipeline": dict}
SECTION_KEYS = {  # what the predictor reads of bundle.json's sections (cloudcli.bundle.export)
    "input": {"raw_size": list, "cache_size": list, "score_size": list, "channels": int},
    "infer": {"batch_size": int, "precision": str, "stack_tta": bool},
    "pipeline": {
        "seg1": str,
        "shape": (dict, type(None)),
        "classifier": (str, type(None)),
        "class_score": str,
        "top_k": int,
        "at_least_one": bool,
        "rules": dict,
    },
}
MODEL_KEYS = {"role": str, "folds": list, "tta": list, "settings": dict}
VOTE_KEYS = {
    "members": list,
    "levels": list,
    "vote": str,
    "min_votes": (int, type(None)),
    "weights": (list, type(None)),
}


def read_spec(folder: Path) -> dict:
    """bundle.json, once the manifest says the bundle is whole and unchanged, checked to hold
    every key the predictor reads."""
    verify(folder)
    path, again = folder / "bundle.json", "export the bundle again"
    spec = read_json(path, again)
    need_keys(spec, SPEC_KEYS, path, again)
    for section, keys in SECTION_KEYS.items():
        need_keys(spec[section], keys, f"{path}: {section}", again)
    for name, model in spec["models"].items():
        if not isinstance(model, dict):
            raise DataError(f"{path}: models.{name} is {json_type(model)}, expected an object; {again}")
        need_keys(model, MODEL_KEYS, f"{path}: models.{name}", again)
    _check_pipeline(spec, path, again)
    return spec


def _check_pipeline(spec: dict, path: Path, again: str) -> None:
    """The pipeline names only the bundle's models and has a whole rule for each class."""
    pipeline, shape = spec["pipeline"], spec["pipeline"]["shape"]
    if shape is None:
        shape = {}
    else:
        need_keys(shape, {"model": str} if "model" in shape else VOTE_KEYS, f"{path}: pipeline.shape", again)
    for name in (pipeline["seg1"], pipeline["classifier"], shape.get("model"), *shape.get("members", [])):
        if name is not None and (not isinstance(name, str) or name not in spec["models"]):
            raise DataError(f"{path}: the pipeline uses {name!r}, which is not among its models; {again}")
    for c in spec["classes"]:
        rule = pipeline["rules"].get(c) if isinstance(c, str) else None
        if not isinstance(rule, dict) or any(k not in rule for k in (*RULE_KEYS, "shape_level")):
            raise DataError(f"{path}: pipeline.rules has no whole rule of class {c!r}; {again}")
