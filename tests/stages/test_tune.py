import json

import numpy as np
import pandas as pd
import pytest

from cloudcli import CLASSES
from cloudcli.config import TuneConfig
from cloudcli.data.cache import pack_masks
from cloudcli.metrics import kaggle_dice
from cloudcli.postprocess import ClassRule, postprocess
from cloudcli.stages import tune


@pytest.fixture
def oof(tmp_path):
    """A cache with 30 images' truth at 12x16 and noisy OOF probabilities of a seg model and a classifier."""
    rng = np.random.default_rng(0)
    n, shape = 30, (12, 16)
    truth = np.zeros((n, 4, *shape), np.uint8)
    for i in range(n):
        for k in rng.choice(4, rng.integers(1, 4), replace=False):
            y, x = rng.integers(0, 6, 2)
            truth[i, k, y : y + rng.integers(2, 7), x : x + rng.integers(2, 10)] = 1
    noise = rng.integers(0, 140, truth.shape)
    probs = np.clip(noise + truth * rng.integers(40, 120, (n, 4, 1, 1)), 0, 255).astype(np.uint8)
    specks = rng.random(truth.shape) < 0.01  # isolated confident false positives: the component rule's job
    probs[specks & (truth == 0)] = 250
    ids = [f"{i:03d}.jpg" for i in range(n)]
    cache = tmp_path / "cache"
    cache.mkdir()
    np.save(cache / "train_truth.npy", pack_masks(truth))
    pd.DataFrame({"image_id": ids}).assign(
        **{c: truth[:, k].any((1, 2)).astype(int) for k, c in enumerate(CLASSES)}
    ).to_csv(cache / "train.csv", index=False)
    pd.DataFrame({"image_id": ids}).to_csv(cache / "test.csv", index=False)
    (cache / "meta.json").write_text("{}")
    seg, cls = tmp_path / "pred/seg1", tmp_path / "pred/cls"
    seg.mkdir(parents=True), cls.mkdir()
    order = rng.permutation(n)  # OOF rows in another order than the cache
    np.save(seg / "oof.npy", probs[order])
    pd.DataFrame({"image_id": np.array(ids)[order], "fold": 0}).to_csv(seg / "oof.csv", index=False)
    cls_probs = np.clip(truth.any((2, 3)) * 0.5 + rng.random((n, 4)) * 0.6, 0, 1)
    pd.DataFrame({"image_id": ids, **{c: cls_probs[:, k] for k, c in enumerate(CLASSES)}}).to_csv(
        cls / "oof.csv", index=False
    )
    return tmp_path, probs[order], truth[order], cls_probs[order]


@pytest.mark.parametrize("classifier", [None, "cls"])
@pytest.mark.parametrize("min_components", [(0,), (0, 3, 8)])
def test_reported_dice_is_what_the_chosen_rules_give(oof, classifier, min_components) -> None:
    root, probs, truth, cls_probs = oof
    cfg = TuneConfig(
        model="seg1", classifier=classifier, min_areas=(0, 5, 10, 20), min_components=min_components,
        component_thresholds=(0.4, 0.5, 0.6),
    )  # fmt: skip
    report = tune.run(cfg, root / "pred", root / "cache", root / "t.json", root / "m.json", root / "c.csv")
    chosen = json.loads((root / "t.json").read_text())["classes"]
    rules = [ClassRule(c["level"], c["min_area"], c["min_component"], c["cls_threshold"]) for c in chosen.values()]
    masks = np.stack([postprocess(p, rules, cls_probs[i] if classifier else None) for i, p in enumerate(probs)])
    assert report["after"]["dice"] == pytest.approx(kaggle_dice(masks, truth).mean, abs=1e-12)
    plain = np.stack([postprocess(p, [ClassRule(level=128)] * 4) for p in probs])
    assert report["before"]["dice"] == pytest.approx(kaggle_dice(plain, truth).mean, abs=1e-12)
    assert report["after"]["dice"] >= report["before"]["dice"]
    curves = pd.read_csv(root / "c.csv")
    assert list(curves.columns) == ["threshold", *CLASSES] and len(curves) == 255
    assert json.loads((root / "m.json").read_text()) == json.loads(json.dumps(report))
    if classifier is None:
        assert all(c["cls_threshold"] is None for c in chosen.values())
    elif min_components == (0,):  # the classifier removes specks on empty masks: a gate wins somewhere
        assert any(c["cls_threshold"] is not None for c in chosen.values())
    if len(min_components) > 1:  # ... and specks make the component rule win somewhere
        assert any(c["min_component"] > 0 for c in chosen.values())
