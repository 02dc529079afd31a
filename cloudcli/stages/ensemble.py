"""Stage `ensemble`: segmentation models combined pixel by pixel (the seg2 vote).

majority: each member is binarised per class at its own level, tuned on its out-of-fold maps
(exact over all 255 levels; on the non-empty rows for seg2 members, which only draw shapes where
another model says a class is present; on every row otherwise); a pixel is kept (255) where at
least min_votes members agree, else 0. mean: the (weighted) mean of the members' probabilities.

Writes, like a model's predictions: oof.npy / test.npy (N, C, H, W) uint8, oof.csv / test.csv
(row order), meta.json (members, their levels, the vote). Streams a few images at a time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cloudcli.config import EnsembleConfig
from cloudcli.data.cache import open_cache
from cloudcli.data.predictions import aligned_masks, classes_of, model_folder, oof_truth, read_meta
from cloudcli.errors import ConfigError
from cloudcli.io import atomic_path, new_array, write_json
from cloudcli.paths import split_name
from cloudcli.post.twostage import member_levels
from cloudcli.post.vote import default_min_votes, vote
from cloudcli.ui import info, progress
from cloudcli.versions import versions

PARAMS = ("ensemble",)
CHUNK = 16  # images voted at a time


def run(cfg: EnsembleConfig, predictions: Path, cache_dir: Path, out: Path) -> dict:
    folders = [model_folder(m, predictions) for m in cfg.members]
    roles = [read_meta(f)["role"] for f in folders]
    for name, role in zip(cfg.members, roles):
        if role == "classifier":
            raise ConfigError(f"ensemble.members: {name!r} is a classifier; members are segmentation models")
    oof_ids, oofs = aligned_masks(folders, "oof")
    _, tests = aligned_masks(folders, "test")
    classes, levels = classes_of(folders[0]), None
    if cfg.vote == "majority":
        truth = oof_truth(open_cache(cache_dir), oof_ids, folders[0] / "oof.csv")
        levels = np.array([member_levels(o, truth, r) for o, r in zip(oofs, roles)])  # (M, C)
    min_votes = (cfg.min_votes or default_min_votes(len(folders))) if cfg.vote == "majority" else None
    info(
        f"ensemble: {cfg.vote} of {', '.join(cfg.members)}"
        + (f", at least {min_votes} of {len(folders)} votes" if min_votes else "")
    )
    with atomic_path(out, is_dir=True) as tmp:
        for split, arrays in (("oof", oofs), ("test", tests)):
            _write_vote(tmp / f"{split}.npy", arrays, cfg, levels, min_votes, f"ensemble {split}")
            shutil.copyfile(folders[0] / f"{split}.csv", tmp / f"{split}.csv")
        meta = {
            "role": "ensemble",
            "classes": list(classes),
            "vote": cfg.vote,
            "min_votes": min_votes,
            "min_votes_param": cfg.min_votes,
            "weights": None if cfg.weights is None else list(cfg.weights),
            "members": [
                {
                    "name": name,
                    "folder": str(folder),
                    "role": role,
                    "pseudo": split_name(name)[1] is not None,  # a model@round
                    "levels": None if levels is None else dict(zip(classes, map(int, levels[m]))),
                }
                for m, (name, folder, role) in enumerate(zip(cfg.members, folders, roles))
            ],
            "versions": versions(),
        }
        write_json(tmp / "meta.json", meta)
    info(f"ensemble: wrote {out}")
    return meta


def _write_vote(path: Path, arrays: list[np.ndarray], cfg: EnsembleConfig, levels, min_votes, title: str) -> None:
    target = new_array(path, arrays[0].shape)
    n = len(target)
    with progress(title, n, "images", lines=False) as advance:
        for start in range(0, n, CHUNK):
            rows = slice(start, min(start + CHUNK, n))
            maps = np.stack([np.asarray(a[rows]) for a in arrays])  # (M, n, C, H, W)
            for k in range(maps.shape[2]):
                target[rows, k] = vote(
                    maps[:, :, k], cfg.vote, None if levels is None else levels[:, k], min_votes, cfg.weights
                )
            advance(rows.stop - rows.start)
    target.flush()
