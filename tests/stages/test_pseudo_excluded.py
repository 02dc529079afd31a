"""Stage `pseudo` with pseudo.sources listing excluded: the training images data.exclude leaves out,
predicted by infer as unseen images (excluded / excluded_fold<k>), are kept and labelled by the
same rules as the test images, and written with their source and cache row."""

# ruff: noqa: F811 (the `project` fixture, imported from test_pseudo, is each test's argument)
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import save_model

sys.path.insert(0, str(Path(__file__).parent))
from test_pseudo import (
    CACHE,
    FOLDS,
    SHAPE,
    blobs,
    brute_margin,
    classifier_probs,
    labels_by_hand,
    make_maps,
    project,  # noqa: F401 (a fixture)
    read_labels_csv,
    read_rules,
    run_stage,
    run_stage_folds,
    spread_over_folds,
    write_test_truth,
)

from cloudcli import CLASSES
from cloudcli.data.cache import pack_masks, resize_mask
from cloudcli.data.pseudo import read_pseudo
from cloudcli.errors import DataError

E = 16  # excluded training images
HEADER = ["image_id", "source", "cache_row", *CLASSES, "confidence"]


def add_excluded(project, splits=("excluded",)) -> dict:
    """E of the cache's training images, excluded: every labeller's predictions of them in each of
    `splits` (another draw each), and a cache whose training images have the test images' size."""
    root, rng = project["root"], np.random.default_rng(21)
    train_ids = list(pd.read_csv(root / "cache/train/index.csv", dtype={"image_id": str})["image_id"])
    ids = [train_ids[i] for i in sorted(rng.choice(len(train_ids), E, replace=False))]
    drawn = {}
    for split in splits:
        truth = blobs(rng, E)
        maps = make_maps(rng, truth)[0]
        for name, probs in maps.items():
            save_model(root / "pred/base" / name, ids, "seg1" if name == "seg1" else "seg2", probs, split=split)
        probs = classifier_probs(rng, truth)
        save_model(root / "pred/base/classifier", ids, "classifier", classifier_probs=probs, split=split)
        drawn[split] = (maps, probs)
    meta = json.loads((root / "cache/train/meta.json").read_text())
    meta["arrays"]["train_images"] = [len(train_ids), *CACHE, 3]
    (root / "cache/train/meta.json").write_text(json.dumps(meta))
    return {"ids": ids, "train_ids": train_ids, "drawn": drawn}


def sure(path: Path) -> list[tuple[str, float]]:
    """(image, margin) of each row of a classifier table the classifier rule keeps, by brute force."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = [(r["image_id"], brute_margin([float(r[c]) for c in CLASSES], 0.3, 0.7)) for r in rows]
    return [(i, m) for i, (kept, m) in out if kept]


def test_excluded_images_are_kept_and_labelled_by_the_test_images_rules(project) -> None:
    root = project["root"]
    write_test_truth(project)
    excluded = add_excluded(project)
    _, alone = run_stage(project, out="alone")  # sources [test]: what the test images get
    _, report = run_stage(project, sources=("test", "excluded"))
    out = root / "out/fold0"
    images = pd.read_csv(out / "images.csv", dtype={"image_id": str})
    assert list(images.columns) == HEADER

    # which images: the classifier rule on each source's table, test images first
    expected = [(i, m, "test") for i, m in sure(root / "pred/base/classifier/test.csv")]
    expected += [(i, m, "excluded") for i, m in sure(root / "pred/base/classifier/excluded.csv")]
    n_test = sum(s == "test" for *_, s in expected)
    assert 0 < len(expected) - n_test < E
    assert list(zip(images["image_id"], images["source"])) == [(i, s) for i, _, s in expected]
    np.testing.assert_allclose(images["confidence"], [m for _, m, _ in expected], atol=6e-7)
    order = {"test": project["cache_order"], "excluded": excluded["train_ids"]}
    assert [order[s][r] for s, r in zip(images["source"], images["cache_row"])] == list(images["image_id"])

    # the labels: the same rules (fitted on the same OOF rows) draw the excluded images' masks
    meta = json.loads((out / "meta.json").read_text())
    assert meta["sources"] == ["test", "excluded"]
    assert meta["rules"] == json.loads((root / "alone/fold0/meta.json").read_text())["rules"]
    rules, shape_levels, member_levels = read_rules(meta)
    maps, probs = excluded["drawn"]["excluded"]
    decoded, small = read_labels_csv(out / "labels.csv"), np.load(out / "masks.npy")
    for j in range(n_test, len(images)):
        i = excluded["ids"].index(images["image_id"][j])
        masks = labels_by_hand(
            maps["seg1"][i], [maps[n][i] for n in SHAPE], probs[i], rules, shape_levels, member_levels
        )
        for k, c in enumerate(CLASSES):
            np.testing.assert_array_equal(decoded[f"{images['image_id'][j]}_{c}"], masks[k])
            assert images.loc[j, c] == int(masks[k].any())
        np.testing.assert_array_equal(small[j], pack_masks(np.stack([resize_mask(m, CACHE) for m in masks])))
    test_alone = pd.read_csv(root / "alone/fold0/images.csv", dtype={"image_id": str})
    assert list(test_alone["image_id"]) == list(images["image_id"][:n_test])  # the test images as without
    np.testing.assert_array_equal(small[:n_test], np.load(root / "alone/fold0/masks.npy"))

    # counts per source; label Dice on the test images alone (the excluded images' labels are unknown)
    assert report["sources"] == {
        "test": {"images": n_test, "candidates": len(project["test_ids"])},
        "excluded": {"images": len(expected) - n_test, "candidates": E},
    }
    assert report["images"] == len(expected) and report["candidates"] == len(project["test_ids"]) + E
    assert report["labels"] == alone["labels"] and report["oof"] == alone["oof"]
    made = json.loads((root / "m.json").read_text())
    assert made["sources"] == {k: {n: float(v) for n, v in c.items()} for k, c in report["sources"].items()}

    pset = read_pseudo(out, project["cache_order"], CACHE, CLASSES, excluded["train_ids"])
    at, rows = pset.of_source("excluded")
    assert at.tolist() == list(range(n_test, len(images))) and rows.tolist() == list(images["cache_row"][n_test:])


def test_fold_k_relabels_with_fold_k_models_alone(project) -> None:
    """pseudo.labels fold, sources [excluded]: fold k's set holds the excluded images fold k's own
    classifier is sure of (excluded_fold<k>.csv), and no test image."""
    root = project["root"]
    spread_over_folds(project)
    add_excluded(project, [f"excluded_fold{k}" for k in range(FOLDS)])
    _, report = run_stage_folds(project, "out", sources=("excluded",))
    for k in range(FOLDS):
        images = pd.read_csv(root / f"out/fold{k}/images.csv", dtype={"image_id": str})
        kept = [i for i, _ in sure(root / f"pred/base/classifier/excluded_fold{k}.csv")]
        assert list(images["image_id"]) == kept and set(images["source"]) <= {"excluded"}
        assert report["folds"][f"fold{k}"]["sources"] == {"excluded": {"images": len(kept), "candidates": E}}
    assert report["leak_free"]


def test_excluded_without_its_predictions_says_what_to_run(project) -> None:
    root = project["root"]
    with pytest.raises(DataError, match=re.escape("excluded.csv: missing; pseudo.sources lists excluded, but infer")):
        run_stage(project, sources=("test", "excluded"))
    assert not (root / "out").exists()
    spread_over_folds(project)
    add_excluded(project, ["excluded", "excluded_fold0", "excluded_fold1"])
    with pytest.raises(DataError, match=r"excluded_fold2.csv: missing; .*infer.fold_test: true"):
        run_stage_folds(project, "out", sources=("test", "excluded"))
