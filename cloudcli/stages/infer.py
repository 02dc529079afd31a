"""Stage `infer@<model>`: out-of-fold and test probabilities of one model's fold checkpoints.

Writes to `out`, streamed batch by batch (memory stays bounded whatever the data size):
  segmentation: oof.zarr (n_oof, 4, H, W) and test.zarr (M, 4, H, W) uint8 = round(p * 255) at the
                scoring size (350x525), compressed (cloudcli.data.maps); each OOF row comes from the
                fold model that did not see it, rows grouped by fold (one model at a time, written in
                order); test rows average every fold model; oof.csv (image_id, fold) and test.csv give
                row order; images data.exclude leaves out (folds.csv's excluded column) have no OOF
                row. oof_hist.npy (n_oof, 4, 2, 256) int32: per image and class, the level histogram
                of all pixels and of those inside the truth, what every level search needs
                (later stages read it instead of the maps). With data.nodata, a pixel without data
                is 0 in every map and in neither histogram. With infer.fold_test, also
                test_fold<k>.zarr/.csv: fold k's model alone (what leak-free pseudo labels for fold k
                are made from).
                When the folds table marks images excluded (data.exclude), no fold model trained on
                them, so they are predicted as unseen images, like the test set: excluded.zarr/.csv
                (the fold mean, cache order) and, with infer.fold_test, excluded_fold<k> (what
                pseudo.sources: [excluded] relabels them from); none without excluded images.
                A model trained with a class head (loss term class_head) also has a probability
                column per class in oof.csv and test.csv (and test_fold<k>.csv), as a classifier's.
  classifier:   oof.csv and test.csv (and test_fold<k>.csv; excluded.csv, excluded_fold<k>.csv) with one
                probability column per class.
  meta.json:    TTA, folds, shapes, versions.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from cloudcli.config import CvConfig, InferConfig
from cloudcli.data.cache import Cache, open_cache
from cloudcli.data.dataset import CacheDataset, build_transform
from cloudcli.data.folds import read_split
from cloudcli.data.maps import MapWriter, maps_path
from cloudcli.engine.distributed import pick_device
from cloudcli.engine.predict import autocast_dtype, load_fold_net, mean_of, memory_format, predict_parts, to_uint8
from cloudcli.errors import ConfigError
from cloudcli.io import atomic_path, new_array, write_csv, write_json
from cloudcli.models.factory import has_class_head
from cloudcli.parallel import worker_cap
from cloudcli.post.kernels import class_histograms
from cloudcli.ui import info, progress
from cloudcli.versions import versions

PARAMS = ("infer", "cv.folds")
IN_TURN = 64  # test images each fold model predicts in its turn (infer.fold_models: one)


def run(
    model: str, cfg: InferConfig, cv: CvConfig, models_dir: Path, cache_dir: Path, folds_csv: Path, out: Path
) -> None:
    device = pick_device(cfg.device)
    cache = open_cache(cache_dir)
    folds, oof_rows, excluded = _oof_rows(cache, folds_csv, cv)  # checked before any model loads
    fold_nets = _load_fold_nets(model, models_dir, cv, cfg)  # in host memory
    settings, one = fold_nets[0][1], _one_at_a_time(cfg, [n for n, _ in fold_nets], device)
    if not one:
        for net, s in fold_nets:
            net.to(device, memory_format=memory_format(s))
    score_size, role, head = cache.score_size, settings["role"], has_class_head(settings.get("loss"))
    info(
        f"infer {model}: {len(oof_rows)} OOF + {len(cache.test)} test images"
        + (f" + {len(excluded)} excluded training images" if len(excluded) else "")
        + f", {len(cv.folds)} fold models, "
        f"TTA {'+'.join(cfg.tta)}"
        + (f" at scales {', '.join(map(str, cfg.scales))}" if cfg.scales != (1.0,) else "")
        + f", on {device}"
        + (", one fold model at a time" if one else "")
    )
    with atomic_path(out, is_dir=True) as tmp, ExitStack() as sinks:  # sinks end their writes first
        truth = cache.array("train_truth")
        train_valid = cache.valid("train")
        oof = sinks.enter_context(
            _Sink(tmp, "oof", role, len(oof_rows), score_size, cache.classes, truth, head, train_valid)
        )
        for (net, s), k in zip(fold_nets, cv.folds):  # rows grouped by fold: written in order
            rows = oof_rows[folds[oof_rows] == k]
            with _on(net, device, one):
                _predict_into([oof], [net], cache, rows, "train_images", s, cfg, device, f"infer {model} fold {k}")
        nets = [n for n, _ in fold_nets]
        for split, rows in (("test", np.arange(len(cache.test))), ("excluded", excluded)):
            if split == "test" or len(rows):  # no excluded image: no excluded split
                _unseen(sinks, tmp, split, rows, cache, nets, settings, cfg, cv, device, f"infer {model} {split}", one)
        oof_ids = cache.train["image_id"].iloc[oof_rows].to_numpy()
        oof.finish(pd.DataFrame({"image_id": oof_ids, "fold": folds[oof_rows]}))
        write_json(tmp / "meta.json", _meta(model, settings, cv, cfg, score_size, cache.classes))
    info(f"infer {model}: wrote {out}")


def _load_fold_nets(model: str, models_dir: Path, cv: CvConfig, cfg: InferConfig) -> list:
    """(net, settings) of each fold model in cv.folds, in host memory; the TTA must suit their input size."""
    fold_nets = [load_fold_net(models_dir / model / f"fold{k}", torch.device("cpu")) for k in cv.folds]
    size = tuple(fold_nets[0][1]["input_size"])
    if "transpose" in cfg.tta and size[0] != size[1]:
        raise ConfigError(f"infer.tta: transpose needs square inputs, {model} runs at {size[0]}x{size[1]}")
    return fold_nets


def _one_at_a_time(cfg: InferConfig, nets: list, device: torch.device) -> bool:
    """infer.fold_models: one fold model on the device at a time, or all; auto: one when the fold
    models' weights would take over a quarter of the GPU's free memory (activations need the rest)."""
    if cfg.fold_models != "auto" or device.type != "cuda":
        return cfg.fold_models == "one"
    weights = sum(p.numel() * p.element_size() for net in nets for p in net.parameters())
    return 4 * weights > torch.cuda.mem_get_info(device)[0]


@contextmanager
def _on(net, device: torch.device, one: bool):
    """`net` on `device` for the block, and back in host memory after when models go one at a time."""
    if one:
        net.to(device)
    try:
        yield net
    finally:
        if one:
            net.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _oof_rows(cache: Cache, folds_csv: Path, cv: CvConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fold of every cache training row, the rows predicted out of fold (in cv.folds), in the
    OOF order: grouped by fold in cv.folds' order, in cache order within a fold, and the excluded
    rows in cache order. Images the folds table marks excluded (data.exclude) get no OOF row, so no
    later stage scores them; no fold model trained on them, so they are predicted like test images."""
    folds, excluded = read_split(folds_csv, list(cache.train["image_id"]), need=tuple(cv.folds))
    oof = np.concatenate([np.flatnonzero((folds == k) & ~excluded) for k in cv.folds])
    return folds, oof, np.flatnonzero(excluded)


def _unseen(
    sinks: ExitStack, tmp: Path, split: str, rows: np.ndarray, cache: Cache, nets: list, settings: dict,
    cfg: InferConfig, cv: CvConfig, device: torch.device, title: str, one: bool,
) -> None:  # fmt: skip
    """Predict cache `rows` that no fold model saw (split test: the test images; excluded: the
    excluded training images) into `split` (the fold mean) and, with infer.fold_test, into
    `split`_fold<k> (fold k's model alone); each table lists the rows' image ids in order."""
    part = "test" if split == "test" else "train"
    names = [split] + ([f"{split}_fold{k}" for k in cv.folds] if cfg.fold_test else [])
    role, head, valid = settings["role"], has_class_head(settings.get("loss")), cache.valid(part)
    outs = [
        sinks.enter_context(_Sink(tmp, name, role, len(rows), cache.score_size, cache.classes, None, head, valid))
        for name in names
    ]
    _predict_into(outs, nets, cache, rows, f"{part}_images", settings, cfg, device, title, one)
    ids = (cache.test if part == "test" else cache.train)["image_id"].to_numpy()[rows]
    for sink in outs:
        sink.finish(pd.DataFrame({"image_id": ids}))


def _meta(model: str, settings: dict, cv: CvConfig, cfg: InferConfig, score_size: tuple, classes: tuple) -> dict:
    return {
        "model": model,
        "role": settings["role"],
        "folds": list(cv.folds),
        "tta": list(cfg.tta),
        "scales": list(cfg.scales),
        "class_head": has_class_head(settings.get("loss")),
        "fold_test": cfg.fold_test,
        "score_size": list(score_size),
        "classes": list(classes),
        "input_size": list(settings["input_size"]),
        "versions": versions(),
    }


class _Sink:
    """Where predictions go, in row order: compressed maps for masks (and, given the training truth,
    their OOF histograms), an in-memory table for class probabilities (a classifier's, or a
    segmentation network's class head's: `head`). Given `valid` (the cache's pixels with data at
    the scoring size), maps are 0 where it is 0 and histograms leave those pixels out."""

    def __init__(
        self,
        folder: Path,
        name: str,
        role: str,
        n: int,
        score_size: tuple[int, int],
        classes: tuple[str, ...],
        truth: np.ndarray | None = None,
        head: bool = False,
        valid: np.ndarray | None = None,
    ) -> None:
        self.folder, self.name, self.role, self.classes, self.truth, self.done = folder, name, role, classes, truth, 0
        self.valid = valid
        self.array = np.zeros((n, len(classes)), np.float32) if role == "classifier" or head else None
        if role != "classifier":
            self.maps = MapWriter(maps_path(folder, name), (n, len(classes), *score_size))  # (N, C, H, W) p * 255
            if truth is not None:
                self.hist = new_array(folder / f"{name}_hist.npy", (n, len(classes), 2, 256), np.int32)

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None and self.role != "classifier":  # a failure: the write in flight ends first
            self.maps.__exit__(kind, error, trace)

    def put(self, rows: np.ndarray, parts: tuple[torch.Tensor | None, torch.Tensor | None]) -> None:
        """Store the next batch: the (masks, class) probabilities of cache `rows` (predict_parts)."""
        masks, classes = parts
        if self.array is not None:
            self.array[self.done : self.done + len(rows)] = classes.cpu().numpy()
        if self.role != "classifier":
            maps = to_uint8(masks).cpu().numpy()
            valid = None if self.valid is None else self.valid[rows]
            if valid is not None:
                maps *= valid[:, None]  # no data: no class (0 in every map)
            self.maps.write(maps)
            if self.truth is not None:
                self.hist[self.done : self.done + len(maps)] = class_histograms(maps, self.truth[rows], valid)
        self.done += len(rows)

    def finish(self, index: pd.DataFrame) -> None:
        if self.array is not None:
            index = index.assign(**{c: self.array[:, k].round(6) for k, c in enumerate(self.classes)})
        if self.role != "classifier":
            self.maps.close()
            if self.truth is not None:
                self.hist.flush()
        write_csv(self.folder / f"{self.name}.csv", index)


def _loader(rows: np.ndarray, cache: Cache, images: str, settings: dict, cfg: InferConfig, device) -> DataLoader:
    """Batches of cache `rows` of `images`, in order, as the model takes them."""
    norm = settings["normalization"]
    size, cache_size = tuple(settings["input_size"]), cache.cache_size
    transform = build_transform(None, size, cache_size, tuple(norm["mean"]), tuple(norm["std"]))
    labels = np.zeros((len(rows) and int(rows.max()) + 1, len(cache.classes)), np.float32)
    ds = CacheDataset(cache.path(images), rows, labels, transform, with_masks=False)
    workers = worker_cap(cfg.workers)
    return DataLoader(ds, batch_size=cfg.batch_size, num_workers=workers, pin_memory=device.type == "cuda")


def _predict_into(
    sinks: list[_Sink],
    nets: list,
    cache: Cache,
    rows: np.ndarray,
    images: str,
    settings: dict,
    cfg: InferConfig,
    device: torch.device,
    title: str,
    in_turn: bool = False,
) -> None:
    """Predict cache `rows` of `images`, in order, into sinks[0] (the mean of `nets`) and, when
    there is one more sink per net, into each net's own sink. The mean is engine.predict.mean_of,
    as predict_folds' (a bundle, cloudcli.bundle, reproduces it bit for bit). `in_turn`: one net on
    the device at a time, each predicting a chunk of IN_TURN images (inputs and predictions kept in
    host memory) before the next; the same bits."""
    loader = _loader(rows, cache, images, settings, cfg, device)
    fmt, role = memory_format(settings), settings["role"]  # the format it trained with
    out_size = cache.score_size if role != "classifier" else None
    done, dtype, batches = 0, autocast_dtype(cfg.precision, device), iter(loader)
    step = max(1, IN_TURN // cfg.batch_size) if in_turn else 1
    with progress(title, len(loader), "batches", lines=False) as advance:
        while chunk := [b["image"] for b in itertools.islice(batches, step)]:
            by_net = []
            for net in nets:
                with _on(net, device, in_turn):
                    parts = [
                        predict_parts([net], x.to(device, non_blocking=True, memory_format=fmt), cfg.tta, out_size,
                                      dtype, cfg.stack_tta, cfg.scales)
                        for x in chunk
                    ]  # fmt: skip
                    by_net.append([_on_host(p) for p in parts] if in_turn else parts)
            for j, x in enumerate(chunk):
                these, each = rows[done : done + len(x)], [b[j] for b in by_net]
                sinks[0].put(these, _mean_parts(each))
                if len(sinks) > 1:  # infer.fold_test: every net alone too
                    for sink, probs in zip(sinks[1:], each, strict=True):
                        sink.put(these, probs)
                done += len(x)
            advance(len(chunk))


def _mean_parts(each: list[tuple]) -> tuple:
    """The fold mean (engine.predict.mean_of) of each part of the nets' (masks, classes)."""
    return tuple(None if part[0] is None else mean_of(list(part)) for part in zip(*each))


def _on_host(parts: tuple) -> tuple:
    return tuple(None if p is None else p.cpu() for p in parts)
