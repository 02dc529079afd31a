import json

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import cloudcli, load_maps, save_model, tiny_params

from cloudcli import CLASSES
from cloudcli.config import EnsembleConfig
from cloudcli.errors import ConfigError, DataError
from cloudcli.metrics import dice
from cloudcli.post.vote import majority, mean
from cloudcli.stages import ensemble

MEMBERS = ("seg2", "seg2b", "seg2c")


def brute_force_level(probs: np.ndarray, truth: np.ndarray) -> int:
    """Level of best mean Dice over the maps with a non-empty truth (a seg2 member's job)."""
    rows = truth.any((1, 2))
    scores = [np.mean([dice(p > level, t) for p, t in zip(probs[rows], truth[rows])]) for level in range(255)]
    return int(np.argmax(scores))


def test_majority_uses_each_members_own_tuned_levels(oof) -> None:
    root, maps, truth, _ = oof
    meta = ensemble.run(EnsembleConfig(MEMBERS, "majority", None, None), root / "pred", root / "cache", root / "ens")
    levels = np.array([[m["levels"][c] for c in CLASSES] for m in meta["members"]])
    for m, name in enumerate(MEMBERS):
        for k in (0, 3):
            assert levels[m, k] == brute_force_level(maps[name][:, k], truth[:, k] > 0)
    out = load_maps(root / "ens")
    for k in range(4):
        expected = majority(np.stack([maps[n][:, k] for n in MEMBERS]), levels[:, k])  # 2 of 3
        np.testing.assert_array_equal(out[:, k], expected)
    assert set(np.unique(out)) <= {0, 255} and meta["min_votes"] == 2
    assert (root / "ens/oof.csv").read_text() == (root / "pred/base/seg2/oof.csv").read_text()
    test = load_maps(root / "ens", "test")
    assert test.shape == load_maps(root / "pred/base/seg2", "test").shape


def test_mean_with_weights(oof) -> None:
    root, maps, _, _ = oof
    ensemble.run(EnsembleConfig(MEMBERS[:2], "mean", None, (3.0, 1.0)), root / "pred", root / "cache", root / "ens")
    expected = mean(np.stack([maps["seg2"], maps["seg2b"]]), [3.0, 1.0])
    np.testing.assert_array_equal(load_maps(root / "ens"), expected)
    assert json.loads((root / "ens/meta.json").read_text())["members"][0]["levels"] is None


def test_bad_members_are_clear_errors(oof) -> None:
    root, *_ = oof
    with pytest.raises(ConfigError, match="'classifier' is a classifier"):
        ensemble.run(
            EnsembleConfig(("seg2", "classifier"), "majority", None, None), root / "pred", root / "cache", root / "e"
        )
    with pytest.raises(DataError, match="no predictions of 'seg9'"):
        ensemble.run(
            EnsembleConfig(("seg2", "seg9"), "majority", None, None), root / "pred", root / "cache", root / "e"
        )
    ids = list(pd.read_csv(root / "pred/base/seg2/oof.csv")["image_id"])
    save_model(root / "pred/base/short", ids[:-1], "seg2", load_maps(root / "pred/base/seg2")[:-1])
    with pytest.raises(DataError, match="rows differ"):
        ensemble.run(
            EnsembleConfig(("seg2", "short"), "majority", None, None), root / "pred", root / "cache", root / "e"
        )
    save_model(root / "pred/base/old", ids[::-1], "seg2", load_maps(root / "pred/base/seg2")[::-1])
    with pytest.raises(DataError, match=r"in another order: predictions of an earlier cloudcli.*dvc repro --force"):
        ensemble.run(EnsembleConfig(("seg2", "old"), "majority", None, None), root / "pred", root / "cache", root / "e")
    assert not (root / "e").exists()


def test_command_line_flags_override_params(oof) -> None:
    root, maps, _, _ = oof
    p = tiny_params()
    p["models"].update({n: {"role": "seg2", "loss": {"dice_pos": 1.0}} for n in MEMBERS})
    p["cv"]["models"] = [*p["cv"]["models"], *MEMBERS[1:]]
    p["ensemble"].update(members=list(MEMBERS))
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    args = ["ensemble", "--predictions", "pred", "--cache", "cache", "--out", "ens"]
    cloudcli(*args, "--vote", "mean", "--members", "seg2,seg2c", cwd=root)
    np.testing.assert_array_equal(load_maps(root / "ens"), mean(np.stack([maps["seg2"], maps["seg2c"]])))
    bad = cloudcli(*args, "--min-votes", "4", cwd=root, check=False)
    assert bad.returncode == 1 and "ensemble.min_votes must be in 1..3" in bad.stderr and "Traceback" not in bad.stderr
    bad = cloudcli(*args, "--vote", "median", cwd=root, check=False)
    assert bad.returncode == 1 and "ensemble.vote" in bad.stderr and "Traceback" not in bad.stderr
