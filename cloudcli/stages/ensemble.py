"""Stage `ensemble`: segmentation models combined pixel by pixel (the seg2 vote).

majority: each member is binarised per class at its own level, tuned on its out-of-fold maps
(exact over all 255 levels; on the non-empty rows for seg2 members, which only draw shapes where
another model says a class is present; on every row otherwise); a pixel is kept (255) where at
least min_votes members agree, else 0. mean: the (weighted) mean of the members' probabilities.

Writes, like a model's predictions: oof.zarr / test.zarr (N, C, H, W) uint8, oof.csv / test.csv
(row order), oof_hist.npy (the vote's OOF histograms, as infer writes them), meta.json (members,
their levels, the vote). With pseudo-label members, also oof_hist_base.npy: the histograms of the
vote of the other members alone, which tune reports as a step of its own.

One pass: the member levels come from the histograms infer wrote; each member's maps are read once,
a batch at a time, and the vote's histograms are counted as it is written.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudcli.config import EnsembleConfig
from cloudcli.data.cache import open_cache
from cloudcli.data.maps import MapWriter, maps_path, read_ahead
from cloudcli.data.predictions import (
    OofTruth,
    aligned_masks,
    classes_of,
    model_folder,
    read_meta,
)
from cloudcli.errors import ConfigError
from cloudcli.io import atomic_path, new_array, write_json
from cloudcli.paths import split_name
from cloudcli.post.kernels import class_histograms, majority_vote
from cloudcli.post.stored import oof_histograms
from cloudcli.post.twostage import member_levels
from cloudcli.post.vote import default_min_votes, vote
from cloudcli.ui import info, progress
from cloudcli.versions import versions

PARAMS = ("ensemble",)


def run(cfg: EnsembleConfig, predictions: Path, cache_dir: Path, out: Path) -> dict:
    folders = [model_folder(m, predictions) for m in cfg.members]
    roles = [read_meta(f)["role"] for f in folders]
    for name, role in zip(cfg.members, roles):
        if role == "classifier":
            raise ConfigError(f"ensemble.members: {name!r} is a classifier; members are segmentation models")
    oof_ids, oofs = aligned_masks(folders, "oof")
    _, tests = aligned_masks(folders, "test")
    classes, levels = classes_of(folders[0]), None
    truth = OofTruth(open_cache(cache_dir), oof_ids, folders[0] / "oof.csv")
    if cfg.vote == "majority":
        hists = [oof_histograms(f, o, truth) for f, o in zip(folders, oofs)]
        levels = np.array([member_levels(h, r) for h, r in zip(hists, roles)])  # (M, C)
    votes = [_Vote(cfg.vote, levels, cfg.min_votes or default_min_votes(len(folders)), cfg.weights)]
    base = [i for i, name in enumerate(cfg.members) if split_name(name)[1] is None]
    if 0 < len(base) < len(folders):  # the vote without pseudo-label members: a step tune reports
        votes.append(votes[0].without(base, cfg.min_votes))
    info(
        f"ensemble: {cfg.vote} of {', '.join(cfg.members)}"
        + (f", at least {votes[0].min_votes} of {len(folders)} votes" if cfg.vote == "majority" else "")
    )
    with atomic_path(out, is_dir=True) as tmp:
        _write_vote(tmp, "oof", oofs, votes, truth)
        _write_vote(tmp, "test", tests, votes[:1], None)
        for split in ("oof", "test"):
            shutil.copyfile(folders[0] / f"{split}.csv", tmp / f"{split}.csv")
        meta = _meta(cfg, classes, folders, roles, levels, votes[0].min_votes if cfg.vote == "majority" else None)
        write_json(tmp / "meta.json", meta)
    info(f"ensemble: wrote {out}")
    return meta


def _meta(cfg: EnsembleConfig, classes, folders: list[Path], roles: list[str], levels, min_votes) -> dict:
    return {
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


@dataclass(frozen=True)
class _Vote:
    """A vote over some of the members (`use`: their indices; None = all)."""

    how: str
    levels: np.ndarray | None  # (M, C) of all members
    min_votes: int
    weights: tuple[float, ...] | None
    use: tuple[int, ...] | None = None

    def without(self, use: list[int], asked: int | None) -> _Vote:
        """The same vote over members `use` only; min_votes capped to them (null: more than half)."""
        min_votes = default_min_votes(len(use)) if asked is None else min(asked, len(use))
        weights = None if self.weights is None else tuple(self.weights[i] for i in use)
        return _Vote(self.how, self.levels, min_votes, weights, tuple(use))

    def __call__(self, maps: list[np.ndarray]) -> np.ndarray:
        """M members' (n, C, H, W) maps -> the (n, C, H, W) vote."""
        use = list(range(len(maps))) if self.use is None else list(self.use)
        if self.how == "majority":
            return majority_vote([maps[m] for m in use], self.levels[use], self.min_votes)
        out = np.empty(maps[0].shape, np.uint8)
        for k in range(maps[0].shape[1]):
            out[:, k] = vote(np.stack([maps[m][:, k] for m in use]), self.how, None, None, self.weights)
        return out


def _write_vote(folder: Path, split: str, arrays: list, votes: list[_Vote], truth: OofTruth | None) -> None:
    """The first vote's maps of `split` (and, with the truth, the OOF histograms of every vote)."""
    n = len(arrays[0])
    names = ("oof_hist.npy", "oof_hist_base.npy")
    shape = (n, arrays[0].shape[1], 2, 256)
    hists = [] if truth is None else [new_array(folder / f, shape, np.int32) for f in names[: len(votes)]]
    writer = MapWriter(maps_path(folder, split), arrays[0].shape)
    with writer, progress(f"ensemble {split}", n, "images", lines=False) as advance:
        for rows, maps in read_ahead(arrays):  # each member's maps read once, the next batch meanwhile
            for i, v in enumerate(votes):
                voted = v(maps)
                if i == 0:
                    writer.write(voted)
                if hists:
                    hists[i][rows] = class_histograms(voted, truth[rows])
            advance(rows.stop - rows.start)
    for h in hists:
        h.flush()
