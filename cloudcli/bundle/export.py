"""`cloudcli export`: the tuned pipeline as a self-contained bundle folder.

    bundle/bundle.json              what the pipeline is (below), the classes, the versions that made it
    bundle/models/<name>/fold<k>.pt one fold model's weights ({"model": state_dict}; weights_only loadable)
    bundle/manifest.json            every file's sha256 (cloudcli.bundle.manifest)

bundle.json holds everything `submit` applies, with models named as in params (`seg2_pl@r1`):
  input     how a raw image becomes the network's input: kind, raw and cache sizes, bands, band
            limits, nodata, the scoring size (masks come out at it)
  models    each model the pipeline uses (seg1, the vote members or shape model, the classifier):
            role, folds, TTA views, scales and its training settings (architecture, encoder, loss
            terms, channels, normalisation, input size)
  pipeline  thresholds.json's choice: seg1, shape (a model, or the vote: members, levels, min
            votes, weights), classifier, gate score, per-class rules
  infer     batch size, precision and stacking of the TTA views, as `infer` ran
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path

from cloudcli import paths
from cloudcli.bundle.manifest import FORMAT, FORMAT_VERSION, write_manifest
from cloudcli.config import InferConfig
from cloudcli.data.cache import open_cache
from cloudcli.data.predictions import read_ensemble, read_meta, read_thresholds
from cloudcli.engine import checkpoint
from cloudcli.errors import DataError
from cloudcli.io import atomic_path, write_json
from cloudcli.ui import info, progress
from cloudcli.versions import versions


@dataclasses.dataclass(frozen=True)
class Sources:
    """Where the pipeline's outputs are (cloudcli.paths by default)."""

    thresholds: Path = paths.TUNED
    models: Path = paths.MODELS
    cache: Path = paths.CACHE


def export(sources: Sources, infer: InferConfig, out: Path, folds: tuple[int, ...] | None = None) -> dict:
    """Write the bundle of the tuned pipeline to `out`; its bundle.json."""
    chosen = read_thresholds(sources.thresholds)
    pipeline, folders = _pipeline(chosen)
    cache = open_cache(sources.cache)
    models = {name: _model(name, folder, folds) for name, folder in folders.items()}
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _created(),
        "classes": list(cache.classes),
        "input": _input(cache),
        "infer": {"batch_size": infer.batch_size, "precision": infer.precision, "stack_tta": infer.stack_tta},
        "models": models,
        "pipeline": pipeline,
        "versions": versions(),
    }
    n = sum(len(m["folds"]) for m in models.values())
    info(f"export: {len(models)} models ({', '.join(models)}), {n} fold checkpoints -> {out}")
    with atomic_path(out, is_dir=True) as tmp, progress("export", n, "checkpoints") as advance:
        for name, model in models.items():
            for k in model["folds"]:
                path = _checkpoint(sources.models, name, k)
                ckpt = checkpoint.load(path)
                _record_settings(model, checkpoint.settings_of(ckpt, path), path)
                (tmp / "models" / name).mkdir(parents=True, exist_ok=True)
                checkpoint.save({"model": ckpt["model"]}, tmp / "models" / name / f"fold{k}.pt")
                advance(1)
        write_json(tmp / "bundle.json", spec)
        write_manifest(tmp)
    info(f"export: wrote {out}")
    return spec


def _pipeline(chosen: dict) -> tuple[dict, dict[str, Path]]:
    """thresholds.json with model names for folders; the prediction folder of every model it uses."""
    folders: dict[str, Path] = {}

    def name_of(folder: str | Path) -> str:
        folder = Path(folder)
        model = read_meta(folder).get("model")
        if model is None:
            raise DataError(f"{folder / 'meta.json'}: names no model; rerun `dvc repro infer`")
        round_ = folder.parent.name
        name = model if round_ == paths.BASE else f"{model}@{round_}"
        folders[name] = folder
        return name

    shape = None
    if chosen["shape"] is not None and chosen["shape_is_ensemble"]:
        vote = read_ensemble(Path(chosen["shape"]))
        members = [name_of(m["folder"]) for m in vote["members"]]
        levels = [[m["levels"][c] for c in vote["classes"]] if m["levels"] else None for m in vote["members"]]
        shape = {"vote": vote["vote"], "members": members, "levels": levels, "min_votes": vote["min_votes"]}
        shape["weights"] = vote["weights"]
    elif chosen["shape"] is not None:
        shape = {"model": name_of(chosen["shape"])}
    pipeline = {
        "seg1": name_of(chosen["seg1"]),
        "shape": shape,
        "classifier": None if chosen["classifier"] is None else name_of(chosen["classifier"]),
        "class_score": chosen["class_score"],
        "top_k": chosen["top_k"],
        "at_least_one": chosen["at_least_one"],
        "rules": chosen["classes"],
    }
    return pipeline, folders


def _model(name: str, folder: Path, folds: tuple[int, ...] | None) -> dict:
    meta = read_meta(folder)
    trained = list(meta["folds"])
    if folds is not None:
        missing = sorted(set(folds) - set(trained))
        if missing:
            raise DataError(f"--folds: {name} has no fold {missing[0]} (its predictions use folds {trained})")
        trained = [k for k in trained if k in folds]
    return {
        "role": meta["role"],
        "folds": trained,
        "tta": list(meta["tta"]),
        "scales": list(meta.get("scales", [1.0])),
        "settings": None,
    }


def _checkpoint(models: Path, name: str, fold: int) -> Path:
    model, round_ = paths.split_name(name)
    path = paths.checkpoints(model, fold, round_, models) / "best.pt"
    if not path.exists():
        raise DataError(f"{path}: missing; train it (dvc repro) before exporting")
    return path


def _input(cache) -> dict:
    data = cache.meta["params"]["data"]
    return {
        "kind": cache.meta["kind"],
        "raw_size": list(data["raw_size"]),
        "cache_size": list(cache.cache_size),
        "score_size": list(cache.score_size),
        "bands": cache.meta.get("bands"),
        "band_limits": cache.meta.get("band_limits"),
        "nodata": data.get("nodata"),
        "channels": cache.channels,
    }


SHARED = ("role", "network", "loss", "input_size", "normalization", "in_channels", "classes", "train_config")
# loss: a class_head term builds the network with its class-presence head (models.factory.has_class_head)


def _record_settings(model: dict, settings: dict, path: Path) -> None:
    """Keep the settings every fold of a model shares (what builds and feeds its network)."""
    shared = {k: settings.get(k) for k in SHARED}
    if model["settings"] is None:
        model["settings"] = shared
    elif model["settings"] != shared:
        raise DataError(f"{path}: trained with other network settings than the model's other folds; retrain it")


def _created() -> str:
    """When the bundle was made: now, or $SOURCE_DATE_EPOCH (the reproducible-builds convention), so
    that two exports of the same models can be byte-identical."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit() else datetime.now(timezone.utc)
    return when.isoformat(timespec="seconds")
