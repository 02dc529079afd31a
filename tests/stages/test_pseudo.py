"""Stage `pseudo`: which test images are kept, and the labels, masks and metrics written for them."""

import csv
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import load_maps, save_model

from cloudcli import CLASSES
from cloudcli.config import PseudoConfig, RoundConfig
from cloudcli.data.cache import pack_masks, resize_mask
from cloudcli.data.maps import maps_path, write_maps
from cloudcli.data.pseudo import read_pseudo
from cloudcli.errors import CloudcliError, DataError
from cloudcli.metrics import kaggle_dice
from cloudcli.post import pseudo as labelling
from cloudcli.post.rules import ClassRule, postprocess
from cloudcli.rle import decode
from cloudcli.stages import pseudo

SCORE = (12, 16)  # the prediction maps' size (= data.score_size) in the `oof` fixture
CACHE = (8, 10)  # the cache's image size, that masks.npy must have
SHAPE = ("seg2", "seg2b")
M = 24  # test images
HEADER = ["image_id", "test_row", *CLASSES, "confidence"]


def config(**changes) -> PseudoConfig:
    values = dict(
        models=("seg2_pl",), seg1="seg1", shape=SHAPE, classifier="classifier", rule="classifier", low=0.3, high=0.7,
        pixel_low=0.1, pixel_high=0.9, min_share=0.9, min_areas=(0, 5, 10, 20), soft=False, labels="mean",
    )  # fmt: skip
    return PseudoConfig(**{**values, **changes})


# ---------------------------------------------------------------------------------------------------- select


def brute_margin(row, low: float, high: float) -> tuple[bool, float]:
    """(kept, smallest distance beyond a bound), one class at a time in plain Python."""
    kept, margin = True, float("inf")
    for p in row:
        if p < low:
            d = low - p
        elif p > high:
            d = p - high
        else:
            kept, d = False, max(low - p, p - high)  # <= 0: not beyond either bound
        margin = min(margin, d)
    return kept, margin


def test_select_classifier_needs_every_class_strictly_beyond_a_bound() -> None:
    probs = np.array(
        [
            [0.1, 0.9, 0.2, 0.8],  # kept, margin 0.1
            [0.3, 0.9, 0.1, 0.8],  # 0.3 == low: not confident
            [0.1, 0.9, 0.2, 0.7],  # 0.7 == high: not confident
            [0.1, 0.5, 0.1, 0.9],  # one class in between
            [0.0, 1.0, 0.29, 0.71],  # kept, margin 0.01
            [0.29999, 0.70001, 0.0, 1.0],  # kept, margin 1e-5
            [0.5, 0.5, 0.5, 0.5],
            [0.0, 0.0, 0.0, 0.0],  # kept, all empty: margin 0.3
            [1.0, 1.0, 1.0, 1.0],  # kept, all present: margin 0.3
        ]
    )
    keep, margin = labelling.select(config(), probs, np.zeros((len(probs), 4, 2, 2), np.uint8))
    assert keep.tolist() == [True, False, False, False, True, True, False, True, True]
    np.testing.assert_allclose(margin, [0.1, 0.0, 0.0, -0.2, 0.01, 1e-5, -0.2, 0.3, 0.3], atol=1e-12)
    for row, k, m in zip(probs, keep, margin):
        assert (k, pytest.approx(m, abs=1e-12)) == brute_margin(row, 0.3, 0.7)
    assert (margin[keep] > 0).all() and (margin[~keep] <= 0).all()


def test_select_classifier_rule_without_classifier_is_an_error() -> None:
    with pytest.raises(DataError, match=r"needs pseudo\.classifier"):
        labelling.select(config(classifier=None), None, np.zeros((2, 4, 2, 2), np.uint8))


@pytest.mark.parametrize("m", [3, 2 * labelling.CHUNK + 6])
def test_select_pixels_share_is_strictly_above_min_share(m: int) -> None:
    """pixel_low 0.2 and pixel_high 0.8 are the levels 51 and 204 exactly: neither is confident."""
    rng = np.random.default_rng(1)
    n_pixels = 4 * 4 * 5
    sure_values, unsure_values = np.array([0, 50, 205, 255]), np.array([51, 52, 128, 203, 204])
    n_sure = rng.integers(0, n_pixels + 1, m)
    n_sure[:3] = [n_pixels // 2, n_pixels // 2 + 1, n_pixels // 2 - 1]  # == min_share is not kept
    maps = np.empty((m, n_pixels), np.uint8)
    for i, n in enumerate(n_sure):
        values = np.concatenate([rng.choice(sure_values, n), rng.choice(unsure_values, n_pixels - n)])
        values[: min(n, 2)] = [50, 205][: min(n, 2)]  # the boundaries' neighbours are always there
        if n_pixels - n >= 2:
            values[n : n + 2] = [51, 204]
        maps[i] = rng.permutation(values)
    maps = maps.reshape(m, 4, 4, 5)
    cfg = config(rule="pixels", classifier=None, pixel_low=0.2, pixel_high=0.8, min_share=0.5)
    keep, share = labelling.select(cfg, None, maps)
    np.testing.assert_array_equal(share, n_sure / n_pixels)
    direct = ((maps < 51) | (maps > 204)).reshape(m, -1).mean(1)  # the whole stack at once, no chunks
    np.testing.assert_array_equal(share, direct)
    np.testing.assert_array_equal(keep, n_sure > n_pixels // 2)
    assert keep[:3].tolist() == [False, True, False]
    assert keep.dtype == bool and keep.shape == share.shape == (m,)


# ---------------------------------------------------------------------------------------------------- run


def blobs(rng, n: int) -> np.ndarray:
    """(n, 4, H, W) 0/1 truth: 1 to 3 rectangles per image, one class each."""
    truth = np.zeros((n, 4, *SCORE), np.uint8)
    for i in range(n):
        for k in rng.choice(4, rng.integers(1, 4), replace=False):
            y, x = rng.integers(0, 6, 2)
            truth[i, k, y : y + rng.integers(2, 7), x : x + rng.integers(2, 10)] = 1
    return truth


def seg_maps(rng, truth: np.ndarray, noise: int, offset: tuple[int, int], false_blobs: np.ndarray | None = None):
    """Noise 0..noise, plus a per-map offset inside the truth: the levels a member needs differ by
    member and class. `false_blobs` (n, 4) bool: a confident 4x6 false positive (seg1's rule cannot
    remove it, the classifier gate can)."""
    n = len(truth)
    probs = rng.integers(0, noise, truth.shape) + truth * rng.integers(*offset, (n, 4, 1, 1))
    if false_blobs is not None:
        probs[..., 6:10, 8:14] = np.where(false_blobs[..., None, None], 250, probs[..., 6:10, 8:14])
    return np.clip(probs, 0, 255).astype(np.uint8)


def make_maps(rng, truth: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """seg1 and the two shape members, all with the same false blobs on some empty maps; the blobs."""
    false_blobs = (truth.max((2, 3)) == 0) & (rng.random(truth.shape[:2]) < 0.4)
    maps = {
        "seg1": seg_maps(rng, truth, 150, (50, 120), false_blobs),
        "seg2": seg_maps(rng, truth, 120, (40, 140), false_blobs),
        "seg2b": seg_maps(rng, truth, 170, (30, 90), false_blobs),
    }
    return maps, false_blobs


def classifier_probs(rng, truth: np.ndarray) -> np.ndarray:
    """Rows 0..11 confidently right (some right at the edge), then boundary and uncertain rows."""
    present = truth.any((2, 3))
    probs = np.where(present, rng.uniform(0.75, 1.0, present.shape), rng.uniform(0.0, 0.25, present.shape))
    probs[0, 0] = 0.29999 if not present[0, 0] else 0.70001
    probs[1] = [0.0, 1.0, 0.0, 1.0] * ~present[1] + present[1] * 1.0
    probs[12, 1] = 0.3  # == low: not kept
    probs[13, 2] = 0.7  # == high: not kept
    probs[14, 3] = 0.5
    probs[15:] = rng.uniform(0, 1, (len(probs) - 15, 4))  # mostly not kept; the brute force says
    return probs


@pytest.fixture
def project(oof):
    """The `oof` fixture's cache and truth with harder OOF maps (levels differ by member and class,
    the classifier gate pays), test maps of M distinct test images, a cache that lists them in
    another order at image size CACHE, and their truth (the demo's test_truth.csv)."""
    root, _, truth, _ = oof
    rng = np.random.default_rng(5)
    oof_ids = list(pd.read_csv(root / "pred/base/seg1/oof.csv", dtype={"image_id": str})["image_id"])
    maps, false_blobs = make_maps(rng, truth)
    present = truth.any((2, 3))
    classifier_oof = np.where(present, rng.uniform(0.55, 1.0, present.shape), rng.uniform(0.0, 0.7, present.shape))
    classifier_oof[false_blobs] = rng.uniform(0.0, 0.3, false_blobs.sum())
    for name, probs in maps.items():
        save_model(root / "pred/base" / name, oof_ids, "seg1" if name == "seg1" else "seg2", probs)
    save_model(root / "pred/base/classifier", oof_ids, "classifier", classifier_probs=classifier_oof)

    test_ids = [f"t{i:03d}.jpg" for i in range(M)]
    test_truth = blobs(rng, M)
    test, _ = make_maps(rng, test_truth)
    for name, probs in test.items():
        shutil.rmtree(root / "pred/base" / name / "test.zarr")
        save_model(root / "pred/base" / name, test_ids, "seg1" if name == "seg1" else "seg2", probs, split="test")
    classifier_test = classifier_probs(rng, test_truth)
    save_model(root / "pred/base/classifier", test_ids, "classifier", classifier_probs=classifier_test, split="test")
    cache_order = list(rng.permutation(test_ids))
    pd.DataFrame({"image_id": cache_order}).to_csv(root / "cache/test/index.csv", index=False)
    (root / "cache/test/meta.json").write_text(
        json.dumps({"classes": list(CLASSES), "arrays": {"test_images": [M, *CACHE, 3]}})
    )
    return {
        "root": root,
        "oof": (maps, truth, classifier_oof),
        "test": test,
        "test_ids": test_ids,
        "cache_order": cache_order,
        "classifier_test": classifier_test,
        "test_truth": test_truth,
    }


def write_test_truth(project) -> None:
    """The demo's hidden test masks, as preprocess stores them: test_truth.npy in the cache's order."""
    root, order = project["root"], [project["test_ids"].index(i) for i in project["cache_order"]]
    np.save(root / "cache/test/truth.npy", pack_masks(project["test_truth"][order]))
    meta = json.loads((root / "cache/test/meta.json").read_text())
    meta["arrays"]["test_truth"] = [len(order), *SCORE]
    (root / "cache/test/meta.json").write_text(json.dumps(meta))


def run_stage(project, out: str = "out", **changes) -> tuple[PseudoConfig, dict]:
    """Run the stage; the report of its set for fold 0 (every OOF row of the fixture is in fold 0)."""
    root = project["root"]
    cfg = config(**changes)
    report = pseudo.run(cfg, "r1", RoundConfig("base", {}), root / "pred", root / "cache", root / out, root / "m.json")
    assert list(report["folds"]) == ["fold0"]
    return cfg, report["folds"]["fold0"]


def brute_force_member_level(probs: np.ndarray, truth: np.ndarray) -> int:
    """A seg2 member's level: best mean Dice over the maps whose truth is not empty."""
    rows = truth.any((1, 2))
    p, t = probs[rows], truth[rows] != 0
    best, level = -1.0, -1
    for v in range(255):
        pred = p > v
        inter, total = (pred & t).sum((1, 2)), pred.sum((1, 2)) + t.sum((1, 2))
        score = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0).mean()
        if score > best:
            best, level = score, v
    return level


def read_rules(meta: dict) -> tuple[list[ClassRule], list[int], np.ndarray]:
    classes = [meta["rules"][c] for c in CLASSES]
    rules = [ClassRule(r["level"], r["min_area"], 0, r["gate_threshold"]) for r in classes]
    return rules, [r["shape_level"] for r in classes], np.array([r["member_levels"] for r in classes])  # (C, S)


def labels_by_hand(seg1, members, classifier_probs, rules, shape_levels, member_levels) -> np.ndarray:
    """seg1 decides presence, the 2-member vote (both members above their own level) draws the mask."""
    vote = np.stack([(members[0][k] > member_levels[k, 0]) & (members[1][k] > member_levels[k, 1]) for k in range(4)])
    return postprocess(seg1, rules, classifier_probs, False, vote.astype(np.uint8) * 255, shape_levels)


def read_labels_csv(path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Image_Label", "EncodedPixels"]
    return {label: decode(rle, SCORE) for label, rle in rows[1:]}


@pytest.mark.parametrize("with_truth", [False, True])
def test_run_writes_the_kept_images_two_stage_labels_and_masks(project, with_truth: bool) -> None:
    root = project["root"]
    if with_truth:
        write_test_truth(project)
    cfg, report = run_stage(project)
    out = root / "out/fold0"
    assert sorted(p.name for p in out.iterdir()) == ["images.csv", "labels.csv", "masks.npy", "meta.json"]
    made = json.loads((root / "m.json").read_text())
    assert {k: made[k] for k in ("round", "after", "relabel", "labels_from", "leak_free")} == {
        "round": "r1", "after": "base", "relabel": {}, "labels_from": "mean", "leak_free": False
    }  # fmt: skip
    assert made["folds"]["fold0"] == json.loads(json.dumps(report)) and made["images"] == report["images"]

    # which images: brute force from the classifier's CSV
    with open(root / "pred/base/classifier/test.csv", newline="") as f:
        classifier_rows = list(csv.DictReader(f))
    expected = []
    for r in classifier_rows:
        kept, margin = brute_margin([float(r[c]) for c in CLASSES], cfg.low, cfg.high)
        if kept:
            expected.append((r["image_id"], margin))
    assert 8 <= len(expected) < M  # the fixture keeps a good part of the images, not all
    images = pd.read_csv(out / "images.csv", dtype={"image_id": str})
    assert list(images.columns) == HEADER
    assert list(images["image_id"]) == [i for i, _ in expected]
    np.testing.assert_allclose(images["confidence"], [m for _, m in expected], atol=6e-7)
    assert [project["cache_order"][r] for r in images["test_row"]] == list(images["image_id"])
    assert report["images"] == len(expected) and report["test_images"] == M
    assert report["share"] == round(len(expected) / M, 4)

    # the rules: member levels tuned on the OOF maps, rules whose OOF Dice is the one reported
    meta = json.loads((out / "meta.json").read_text())
    rules, shape_levels, member_levels = read_rules(meta)
    maps, truth, classifier_oof = project["oof"]
    assert all(r.gate_threshold is not None for r in rules)  # the fixture makes the gate pay ...
    assert (member_levels[:, 0] != member_levels[:, 1]).all()  # ... and its members need other levels
    for s, name in enumerate(SHAPE):
        for k in range(4):
            assert member_levels[k, s] == brute_force_member_level(maps[name][:, k], truth[:, k])
    oof_labels = np.stack(
        [
            labels_by_hand(
                maps["seg1"][i], [maps[n][i] for n in SHAPE], classifier_oof[i], rules, shape_levels, member_levels
            )
            for i in range(len(truth))
        ]
    )
    assert report["oof"] == pytest.approx(kaggle_dice(oof_labels, truth, CLASSES).as_dict(), abs=1e-12)
    assert meta["report"] == json.loads(json.dumps(report)) and meta["rule"] == "classifier"
    assert meta["thresholds"] == {"low": 0.3, "high": 0.7}
    assert meta["seg1"] == str(root / "pred/base/seg1") and meta["classifier"] == str(root / "pred/base/classifier")
    assert meta["shape"] == [str(root / "pred/base" / n) for n in SHAPE]

    # the labels: exactly the two-stage masks, at the score size in labels.csv, at the cache size in masks.npy
    test, row_of = project["test"], {i: j for j, i in enumerate(project["test_ids"])}
    decoded = read_labels_csv(out / "labels.csv")
    assert list(decoded) == [f"{i}_{c}" for i in images["image_id"] for c in CLASSES]
    small = np.load(out / "masks.npy")
    assert small.shape == (len(expected), *CACHE) and small.dtype == np.uint8
    labels = []
    for j, image_id in enumerate(images["image_id"]):
        i = row_of[image_id]
        masks = labels_by_hand(
            test["seg1"][i],
            [test[n][i] for n in SHAPE],
            project["classifier_test"][i],
            rules,
            shape_levels,
            member_levels,
        )
        labels.append(masks)
        for k, c in enumerate(CLASSES):
            np.testing.assert_array_equal(decoded[f"{image_id}_{c}"], masks[k])
            assert images.loc[j, c] == int(masks[k].any())
        np.testing.assert_array_equal(small[j], pack_masks(np.stack([resize_mask(m, CACHE) for m in masks])))
    labels = np.stack(labels)
    present = labels.any((2, 3))
    assert present.any() and not present.all()  # some classes present, some empty
    assert 0 < images[list(CLASSES)].to_numpy().mean() < 1

    if with_truth:
        kept_truth = project["test_truth"][[row_of[i] for i in images["image_id"]]]
        assert report["labels"] == pytest.approx(kaggle_dice(labels, kept_truth, CLASSES).as_dict(), abs=1e-12)
        assert report["labels"]["n_rows"] == 4 * len(expected)
    else:
        assert "labels" not in report

    pset = read_pseudo(out, project["cache_order"], CACHE, CLASSES)
    assert len(pset.images) == len(expected)
    np.testing.assert_array_equal(pset.labels, images[list(CLASSES)].to_numpy())


def test_run_pixels_rule_keeps_images_by_seg1_share(project) -> None:
    root, seg1 = project["root"], project["test"]["seg1"]
    share = ((seg1 < 0.4 * 255) | (seg1 > 0.6 * 255)).reshape(M, -1).mean(1)  # 102 and 153 are not confident
    min_share = float(np.median(share))
    _, report = run_stage(project, rule="pixels", classifier=None, pixel_low=0.4, pixel_high=0.6, min_share=min_share)
    images = pd.read_csv(root / "out/fold0/images.csv", dtype={"image_id": str})
    kept = [i for i, s in zip(project["test_ids"], share) if s > min_share]
    assert 0 < len(kept) < M
    assert list(images["image_id"]) == kept and report["images"] == len(kept)
    np.testing.assert_allclose(images["confidence"], share[share > min_share], atol=6e-7)
    meta = json.loads((root / "out/fold0/meta.json").read_text())
    assert meta["thresholds"] == {"pixel_low": 0.4, "pixel_high": 0.6, "min_share": min_share}
    assert meta["classifier"] is None
    rules, shape_levels, member_levels = read_rules(meta)
    assert all(r.gate_threshold is None for r in rules)
    decoded = read_labels_csv(root / "out/fold0/labels.csv")
    for image_id in kept:
        i = project["test_ids"].index(image_id)
        test = project["test"]
        masks = labels_by_hand(test["seg1"][i], [test[n][i] for n in SHAPE], None, rules, shape_levels, member_levels)
        for k, c in enumerate(CLASSES):
            np.testing.assert_array_equal(decoded[f"{image_id}_{c}"], masks[k])


def test_run_without_shape_models_labels_are_seg1_masks(project) -> None:
    root = project["root"]
    run_stage(project, shape=())
    meta = json.loads((root / "out/fold0/meta.json").read_text())
    classes = [meta["rules"][c] for c in CLASSES]
    assert all(r["member_levels"] is None and r["shape_level"] is None for r in classes)
    rules = [ClassRule(r["level"], r["min_area"], 0, r["gate_threshold"]) for r in classes]
    images = pd.read_csv(root / "out/fold0/images.csv", dtype={"image_id": str})
    decoded = read_labels_csv(root / "out/fold0/labels.csv")
    assert len(images) > 0
    for image_id in images["image_id"]:
        i = project["test_ids"].index(image_id)
        masks = postprocess(project["test"]["seg1"][i], rules, project["classifier_test"][i])
        for k, c in enumerate(CLASSES):
            np.testing.assert_array_equal(decoded[f"{image_id}_{c}"], masks[k])


def test_no_image_kept_writes_a_valid_empty_set(project) -> None:
    root = project["root"]
    write_test_truth(project)
    _, report = run_stage(project, low=0.0, high=1.0)  # nothing is < 0 or > 1
    out = root / "out/fold0"
    assert report["images"] == 0 and report["share"] == 0.0 and "labels" not in report
    assert (out / "images.csv").read_text().splitlines() == [",".join(HEADER)]
    assert (out / "labels.csv").read_text().splitlines() == ["Image_Label,EncodedPixels"]
    assert np.load(out / "masks.npy").shape == (0, *CACHE)
    assert json.loads((out / "meta.json").read_text())["report"]["images"] == 0
    pset = read_pseudo(out, project["cache_order"], CACHE, CLASSES)
    assert len(pset.images) == 0 and pset.masks.shape == (0, *CACHE) and pset.labels.shape == (0, 4)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seg1": "classifier"}, "pred/base/classifier: a classifier's predictions"),
        ({"shape": ("seg2", "classifier")}, "pred/base/classifier: a classifier's predictions"),
        (
            {"seg1": "seg9"},
            "pred/base/seg9: no predictions of 'seg9'; run `dvc repro` (or `cloudcli infer --model seg9`)",
        ),
        ({"shape": ("seg2", "seg9")}, "pred/base/seg9: no predictions of 'seg9'"),
        ({"classifier": "classifier9"}, "pred/base/classifier9: no predictions of 'classifier9'"),
        ({"classifier": None}, "needs pseudo.classifier"),
    ],
)
def test_errors_name_the_file_and_leave_no_output(project, changes, message) -> None:
    root = project["root"]
    (root / "out").mkdir()
    (root / "out/old.txt").write_text("a previous set")
    with pytest.raises(CloudcliError, match=re.escape(message)) as err:
        run_stage(project, **changes)
    assert isinstance(err.value, DataError)
    assert [p.name for p in (root / "out").iterdir()] == ["old.txt"]  # the previous set is untouched
    assert not list(root.glob(".out*")) and not (root / "m.json").exists()


def test_kept_image_missing_from_the_cache_is_an_error(project) -> None:
    root = project["root"]
    gone = project["test_ids"][2]  # rows 0..11 are confidently right: kept
    order = [i for i in project["cache_order"] if i != gone]
    pd.DataFrame({"image_id": order}).to_csv(root / "cache/test/index.csv", index=False)
    with pytest.raises(DataError, match="images not in"):
        run_stage(project)
    assert not (root / "out").exists() and not list(root.glob(".out*"))


def test_a_later_round_labels_with_the_pseudo_models_of_the_round_it_follows(tmp_path) -> None:
    """pseudo_rounds.r2: {after: r1, relabel: {seg2: seg2_pl}} -> seg2's place goes to seg2_pl@r1
    (predictions/r1/seg2_pl); the other labellers stay the base models (predictions/base/)."""
    maps = np.zeros((1, 4, 2, 2), np.uint8)
    for folder, role in (
        ("base/seg1", "seg1"),
        ("base/seg2", "seg2"),
        ("base/seg2b", "seg2"),
        ("r1/seg2_pl", "seg2"),
    ):
        save_model(tmp_path / "pred" / folder, ["a"], role, maps)
    save_model(tmp_path / "pred/base/classifier", ["a"], "classifier", classifier_probs=np.zeros((1, 4)))
    first = pseudo.Labellers.of_round(config(), RoundConfig("base", {}), tmp_path / "pred")
    assert first == pseudo.Labellers(
        tmp_path / "pred/base/seg1", tuple(tmp_path / "pred/base" / m for m in SHAPE), tmp_path / "pred/base/classifier"
    )
    second = pseudo.Labellers.of_round(config(), RoundConfig("r1", {"seg2": "seg2_pl"}), tmp_path / "pred")
    assert second.seg1 == first.seg1 and second.classifier == first.classifier
    assert second.shape == tuple(tmp_path / "pred" / ("r1/seg2_pl" if m == "seg2" else f"base/{m}") for m in SHAPE)
    with pytest.raises(DataError, match=r"pred/r2/seg2_pl: no predictions of 'seg2_pl@r2'; .*infer_pl@r2-seg2_pl"):
        pseudo.Labellers.of_round(config(), RoundConfig("r2", {"seg2": "seg2_pl"}), tmp_path / "pred")


# ---------------------------------------------------------------------------------------------------- folds

FOLDS = 3


def spread_over_folds(project) -> None:
    """The project's OOF rows spread over 3 folds (row i in fold i % 3), and test maps of each
    fold's models (test_fold<k>, as infer writes them): another draw per fold."""
    root, rng = project["root"], np.random.default_rng(11)
    for name in ("seg1", *SHAPE, "classifier"):
        table = pd.read_csv(root / "pred/base" / name / "oof.csv", dtype={"image_id": str})
        table.assign(fold=np.arange(len(table)) % FOLDS).to_csv(root / "pred/base" / name / "oof.csv", index=False)
    for k in range(FOLDS):
        redraw_test_maps(project, k, rng)


def redraw_test_maps(project, fold: int, rng) -> None:
    root, ids, truth = project["root"], project["test_ids"], project["test_truth"]
    for name, probs in make_maps(rng, truth)[0].items():
        save_model(
            root / "pred/base" / name, ids, "seg1" if name == "seg1" else "seg2", probs, split=f"test_fold{fold}"
        )
    probs = classifier_probs(rng, truth)
    save_model(root / "pred/base/classifier", ids, "classifier", classifier_probs=probs, split=f"test_fold{fold}")


def replace_validation_images(project, fold: int) -> None:
    """Everything of fold `fold`'s validation images that the stage reads changes: their OOF maps
    of every labeller and their classifier probabilities (other validation predictions), and their
    truth masks in the cache (other labels)."""
    root, rng = project["root"], np.random.default_rng(99)
    table = pd.read_csv(root / "pred/base/seg1/oof.csv", dtype={"image_id": str})
    rows = np.flatnonzero(table["fold"] == fold)
    for name in ("seg1", *SHAPE):
        maps = load_maps(root / "pred/base" / name)
        maps[rows] = rng.integers(0, 256, maps[rows].shape, dtype=np.uint8)
        shutil.rmtree(maps_path(root / "pred/base" / name, "oof"))
        write_maps(maps_path(root / "pred/base" / name, "oof"), maps)
    ids = list(table["image_id"].iloc[rows])
    clf = pd.read_csv(root / "pred/base/classifier/oof.csv", dtype={"image_id": str}).set_index("image_id")
    clf.loc[ids, list(CLASSES)] = rng.uniform(0, 1, (len(ids), 4))
    clf.reset_index().to_csv(root / "pred/base/classifier/oof.csv", index=False)
    index = pd.Index(pd.read_csv(root / "cache/train/index.csv", dtype={"image_id": str})["image_id"])
    truth = np.load(root / "cache/train/truth.npy")
    truth[index.get_indexer(ids)] = pack_masks(np.ones((len(ids), 4, *SCORE), np.uint8))  # every class everywhere
    np.save(root / "cache/train/truth.npy", truth)


def files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_no_fold_labels_depend_on_that_folds_validation_images(project) -> None:
    """pseudo.labels fold: fold 1's set is made by the fold-1 models' test maps with rules fitted on
    folds 0 and 2: replacing fold 1's validation predictions and labels, and the other folds' test
    maps, leaves it byte for byte the same, while the other folds' sets change."""
    root = project["root"]
    spread_over_folds(project)
    _, before = run_stage_folds(project, "before")
    assert before["leak_free"] and list(before["folds"]) == ["fold0", "fold1", "fold2"]
    replace_validation_images(project, fold=1)
    rng = np.random.default_rng(5)
    for k in (0, 2):
        redraw_test_maps(project, k, rng)
    _, after = run_stage_folds(project, "after")
    assert after["folds"]["fold1"] == before["folds"]["fold1"]
    assert files(root / "after/fold1") == files(root / "before/fold1")
    for k in (0, 2):
        assert files(root / f"after/fold{k}") != files(root / f"before/fold{k}")
        old, new = (json.loads((root / run / f"fold{k}/meta.json").read_text())["rules"] for run in ("before", "after"))
        assert old != new  # fold 1's rows are among those its rules are fitted on

    # each fold's images: those its own classifier is sure of (brute force from test_fold<k>.csv)
    for k in range(FOLDS):
        with open(root / f"pred/base/classifier/test_fold{k}.csv", newline="") as f:
            sure = [
                r["image_id"] for r in csv.DictReader(f) if brute_margin([float(r[c]) for c in CLASSES], 0.3, 0.7)[0]
            ]
        images = pd.read_csv(root / f"after/fold{k}/images.csv", dtype={"image_id": str})
        assert list(images["image_id"]) == sure
        assert json.loads((root / f"after/fold{k}/meta.json").read_text())["fitted_on"] == 20  # the other folds' rows


def test_mean_labels_leak_the_validation_images(project) -> None:
    """pseudo.labels mean (the 3rd place's way) is the same set for every fold, and fold 1's set
    changes with fold 1's validation labels: the leak the default avoids."""
    root = project["root"]
    spread_over_folds(project)
    _, before = run_stage_folds(project, "before", labels="mean")
    assert not before["leak_free"] and files(root / "before/fold0") == files(root / "before/fold2")
    replace_validation_images(project, fold=1)
    run_stage_folds(project, "after", labels="mean")
    old, new = (json.loads((root / run / "fold1/meta.json").read_text())["rules"] for run in ("before", "after"))
    assert old != new


def test_fold_labels_need_each_fold_models_test_maps(project) -> None:
    root = project["root"]
    spread_over_folds(project)
    for name in ("seg1", *SHAPE):
        (root / "pred/base" / name / "test_fold2.csv").unlink()
    with pytest.raises(DataError, match=re.escape("test_fold2.csv: missing; pseudo.labels fold")) as err:
        run_stage_folds(project, "out")
    assert "infer.fold_test: true" in str(err.value) and not (root / "out").exists()


def test_one_trained_fold_says_its_labels_are_not_leak_free(project, capsys) -> None:
    _, report = run_stage_folds(project, "out", labels="fold", missing_ok=True)
    assert not report["leak_free"] and "only fold 0 has out-of-fold predictions" in capsys.readouterr().err


def run_stage_folds(project, out: str, missing_ok: bool = False, **changes) -> tuple[PseudoConfig, dict]:
    """Run the stage with pseudo.labels fold (unless changed); its whole report."""
    root = project["root"]
    cfg = config(**{"labels": "fold", **changes})
    if missing_ok:  # one fold only: its test maps as the mean's
        for name in ("seg1", *SHAPE, "classifier"):
            folder = root / "pred/base" / name
            shutil.copy(folder / "test.csv", folder / "test_fold0.csv")
            if (folder / "test.zarr").exists():
                shutil.copytree(folder / "test.zarr", folder / "test_fold0.zarr")
    report = pseudo.run(cfg, "r1", RoundConfig("base", {}), root / "pred", root / "cache", root / out, root / "m.json")
    return cfg, report


def test_a_fold_that_keeps_no_image(project) -> None:
    """Fold 2's classifier is sure of nothing: its set is empty and has no label scores; the round's
    scores average the folds that have them."""
    root = project["root"]
    spread_over_folds(project)
    write_test_truth(project)
    unsure = np.full((M, 4), 0.5)
    save_model(
        root / "pred/base/classifier", project["test_ids"], "classifier", classifier_probs=unsure, split="test_fold2"
    )
    _, report = run_stage_folds(project, "out")
    folds = report["folds"]
    assert folds["fold2"]["images"] == 0 and "labels" not in folds["fold2"] and folds["fold0"]["images"] > 0
    assert report["images"] == round((folds["fold0"]["images"] + folds["fold1"]["images"]) / 3, 4)
    dice = [folds[f"fold{k}"]["labels"]["dice"] for k in (0, 1)]
    assert report["labels"]["dice"] == round(float(np.mean(dice)), 4)
    assert len(pd.read_csv(root / "out/fold2/images.csv")) == 0
