"""`report labels`: confident disagreement of OOF maps with the labels, ranked; exact answers on
hand-made maps, a pixel-by-pixel reference, and the stage on the tiny cache with known corrupted images."""

import json
import re
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import cloudcli_here, save_model, tiny_params

from cloudcli import CLASSES
from cloudcli.config import ConfigError, load_params
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.data.maps import open_maps
from cloudcli.errors import DataError
from cloudcli.stages import report_labels
from cloudcli.suspects import KINDS, confident_levels, disagreement, judge
from cloudcli.viz import panel_shape

LEVELS = confident_levels(0.1, 0.9)  # (26, 229): p < 0.1 is m <= 25, p > 0.9 is m >= 230


def kinds(ranked) -> list[tuple]:
    """(score, class, kind, seen_as) of each image, names for indices."""
    name = lambda i: CLASSES[i] if i >= 0 else None  # noqa: E731
    return [
        (round(float(s), 12), name(c), KINDS[k] if k >= 0 else None, name(a))
        for s, c, k, a in zip(ranked.score, ranked.cls, ranked.kind, ranked.seen_as)
    ]


def hand_made() -> tuple[np.ndarray, np.ndarray]:
    """5 images of 10x10, Fish labelled on a 4x4 square; maps agree except where said."""
    truth = np.zeros((5, 4, 10, 10), np.uint8)
    truth[:, 0, 2:6, 2:6] = 1
    maps = (truth * 255).astype(np.uint8)
    maps[0, 1, 5:9, 5:9] = 255  # a Flower mask the label lacks
    maps[1, 0] = np.roll(truth[1, 0] * 255, 3, axis=1)  # Fish 3 px right of its label
    maps[2, 2], maps[2, 0] = maps[2, 0], 0  # Fish labelled where the model sees Gravel
    maps[3, 0, 2:4, 2:6] = 0  # half of the Fish label empty for the model
    maps[4, 0, 2:6, 2:6] = 128  # unsure: no disagreement
    maps[4, 3] = 229  # just below `high`: not confident
    return maps, truth


def test_known_answers_for_each_kind_of_error() -> None:
    maps, truth = hand_made()
    assert LEVELS == (26, 229)
    assert kinds(judge(disagreement([maps], truth, *LEVELS))) == [
        (0.16, "Flower", "missing label", None),  # 16 px of 100
        (0.24, "Fish", "wrong place", None),  # 12 px moved out, 12 px in
        (0.32, "Fish", "wrong class", "Gravel"),  # Fish extra 16 + Gravel missing 16
        (0.08, "Fish", "extra label", None),
        (0.0, None, None, None),
    ]


def test_several_models_count_a_pixel_only_where_all_are_sure_and_a_classifier_weighs_it() -> None:
    maps, truth = hand_made()
    other = maps.copy()
    other[0, 1, 5:9, 5:7] = 200  # the second model doubts half of the Flower mask
    d = disagreement([maps, other], truth, *LEVELS)
    assert (
        d.missing[0].tolist() == [0, 0.08, 0, 0]
        and d.scores[1:].tolist() == disagreement([maps], truth, *LEVELS).scores[1:].tolist()
    )
    probs = np.full((5, 4), 0.5)
    probs[2] = [0.25, 0.5, 1.0, 0.5]  # sure of Gravel, doubts Fish
    d = disagreement([maps], truth, *LEVELS, probs)
    assert d.missing[0, 1] == 0.08 and d.extra[3, 0] == 0.04
    assert d.extra[2, 0] == 0.16 * 0.75 and d.missing[2, 2] == 0.16 and d.swapped[2, 2, 0] == 0.16 * 0.75
    assert kinds(judge(d))[2] == (0.28, "Fish", "wrong class", "Gravel")


def brute_force(maps: list[np.ndarray], truth: np.ndarray, low: float, high: float) -> np.ndarray:
    """(n, C) scores, pixel by pixel from the probabilities m / 255."""
    n, k, h, w = truth.shape
    scores = np.zeros((n, k))
    for i in range(n):
        for c in range(k):
            for y in range(h):
                for x in range(w):
                    p = [m[i, c, y, x] / 255 for m in maps]
                    sure = all(q < low for q in p) if truth[i, c, y, x] else all(q > high for q in p)
                    if sure:
                        scores[i, c] += 1 / (h * w)
    return scores


@pytest.mark.parametrize(("low", "high"), [(0.1, 0.9), (0.2, 0.8)])  # 0.2 * 255 = 51: m = 51 is not below
def test_scores_match_a_pixel_by_pixel_reference(low, high) -> None:
    rng = np.random.default_rng(3)
    truth = (rng.random((3, 4, 9, 11)) < 0.4).astype(np.uint8)
    maps = [
        rng.choice(np.array([0, 25, 26, 50, 51, 52, 128, 203, 204, 205, 229, 230, 255], np.uint8), truth.shape)
        for _ in range(2)
    ]
    found = judge(disagreement(maps, truth, *confident_levels(low, high)))
    expected = brute_force(maps, truth, low, high)
    np.testing.assert_allclose(found.class_scores, expected, atol=1e-12)
    np.testing.assert_allclose(found.score, expected.sum(1), atol=1e-12)


# -- the stage on the tiny cache ------------------------------------------------------------------


def corrupted(root) -> tuple[list[str], np.ndarray, list[np.ndarray], dict]:
    """OOF ids (grouped by fold), their truth, and two models' maps that agree with it confidently
    except on four images: image id -> (class, kind, seen_as)."""
    cache = open_cache(root / "artifacts/preprocessed")
    folds = pd.read_csv(root / "artifacts/folds.csv").sort_values(["fold", "image_id"], kind="stable")
    ids = list(folds["image_id"])
    truth = unpack_masks(cache.array("train_truth")[pd.Index(cache.train["image_id"]).get_indexer(ids)], 4)
    area = truth.sum((2, 3))
    have = [i for i in range(len(ids)) if area[i, 0] >= 40 and area[i, 1] == 0]  # Fish, no Flower
    i_drop, i_shift, i_swap, i_extra = have[:4]
    rng = np.random.default_rng(0)
    models = []
    for _ in range(2):  # sure or unsure, never sure of the wrong answer ...
        maps = np.where(truth == 1, rng.integers(26, 256, truth.shape), rng.integers(0, 230, truth.shape))
        maps = maps.astype(np.uint8)
        maps[i_drop, 1, :, :20] = 255  # ... but where a Flower mask is missing from the labels
        maps[i_shift, 0] = np.roll(truth[i_shift, 0], 5, axis=1) * 255  # Fish moved 5 px
        maps[i_swap, 1], maps[i_swap, 0] = truth[i_swap, 0] * 255, 0  # labelled Fish, seen as Flower
        maps[i_extra, 0] = 0  # a Fish label the models never see
        models.append(maps)
    known = {
        ids[i_drop]: ("Flower", "missing label", ""),
        ids[i_shift]: ("Fish", "wrong place", ""),
        ids[i_swap]: ("Fish", "wrong class", "Flower"),
        ids[i_extra]: ("Fish", "extra label", ""),
    }
    return ids, truth, models, known


@pytest.fixture
def project(tiny_cache, tmp_path):
    """A copy of the tiny cache's project with the OOF maps of seg1 and seg2 (tmp_path/predictions)."""
    root = tmp_path / "project"
    shutil.copytree(tiny_cache, root)
    ids, truth, models, known = corrupted(root)
    save_model(root / "predictions/base/seg1", ids, "seg1", models[0])
    save_model(root / "predictions/base/seg2", ids, "seg2", models[1])
    return root, ids, truth, models, known


def run_stage(root, **changes):
    p = load_params(root / "params.yaml")
    cfg = replace(p.report_labels, **changes)
    data = replace(p.data, raw=str(root / "data"))
    pred, cache, folds = root / "predictions", root / "artifacts/preprocessed", root / "artifacts/folds.csv"
    return report_labels.run(cfg, (64, 96), data, pred, cache, folds, root / "out", root / "labels.json")


def test_the_corrupted_labels_rank_first_with_their_kind_and_class(project) -> None:
    root, ids, truth, models, known = project
    summary = run_stage(root, models=("seg1", "seg2"), top=3)
    table = pd.read_csv(root / "out/suspects.csv", dtype={"image_id": str}, keep_default_na=False)
    assert list(table.columns) == ["image_id", "score", "class", "kind", "seen_as", "fold", *CLASSES]
    assert set(table["image_id"]) == set(known) and len(table) == 4  # only the images that disagree
    assert {r["image_id"]: (r["class"], r["kind"], r["seen_as"]) for r in table.to_dict("records")} == known
    assert list(table["score"]) == sorted(table["score"], reverse=True)
    folds = pd.read_csv(root / "artifacts/folds.csv").set_index("image_id")["fold"]
    assert (table["fold"].to_numpy() == folds[table["image_id"]].to_numpy()).all()
    row = {image_id: i for i, image_id in enumerate(ids)}
    picked = [row[i] for i in table["image_id"][:2]]  # a couple of images, pixel by pixel
    expected = brute_force([m[picked] for m in models], truth[picked], 0.1, 0.9)
    np.testing.assert_allclose(table[list(CLASSES)].to_numpy()[:2], expected, atol=1e-6)
    np.testing.assert_allclose(table["score"][:2], expected.sum(1), atol=1e-6)

    overlays = sorted(q.name for q in (root / "out/overlays").iterdir())
    assert overlays == [f"{k:02d}_{table['image_id'][k - 1].removesuffix('.jpg')}.png" for k in (1, 2, 3)]
    assert cv2.imread(str(root / "out/overlays" / overlays[0])).shape[:2] == panel_shape((64, 96), 4)
    assert summary == json.loads((root / "labels.json").read_text())
    assert summary["images"] == len(ids) and summary["disagreeing"] == 4 and summary["listed"] == 4
    assert summary["drawn"] == 3 and summary["kinds"] == dict.fromkeys(KINDS, 1)
    assert summary["classes"] == {"Fish": 3, "Flower": 1, "Gravel": 0, "Sugar": 0}
    assert summary["max_score"] == table["score"][0] and summary["over_1pct"] == 4


def test_fewer_rows_a_classifier_and_one_model(project) -> None:
    root, ids, _, _, known = project
    run_stage(root, models=("seg1",), rows=2, top=0)
    table = pd.read_csv(root / "out/suspects.csv", dtype={"image_id": str}, keep_default_na=False)
    assert len(table) == 2 and set(table["image_id"]) <= set(known) and not list((root / "out/overlays").iterdir())
    probs = np.full((len(ids), 4), 0.5)
    drop = next(i for i, v in known.items() if v[1] == "missing label")
    probs[ids.index(drop), 1] = 0.0  # the classifier is sure there is no Flower: not a suspect
    save_model(root / "predictions/base/classifier", ids, "classifier", classifier_probs=probs)
    run_stage(root, classifier="classifier")
    table = pd.read_csv(root / "out/suspects.csv", dtype={"image_id": str}, keep_default_na=False)
    assert set(table["image_id"]) == set(known) - {drop}


def test_command_writes_the_report_and_bad_inputs_say_what_to_run(project) -> None:
    root, ids, _, models, _ = project
    cloudcli_here("report", "labels", cwd=root, check=True)
    assert (root / "reports/labels/suspects.csv").is_file() and (root / "metrics/labels.json").is_file()
    assert len(list((root / "reports/labels/overlays").iterdir())) == 4  # top 24, 4 suspects

    save_model(root / "predictions/base/seg1", ids, "seg1", models[0][:, :, :16])  # another score size
    result = cloudcli_here("report", "labels", cwd=root)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "maps of shape (24, 4, 16, 48), the cache's truth is (24, 4, 32, 48)" in " ".join(result.stderr.split())
    shutil.rmtree(root / "predictions/base/seg1")
    with pytest.raises(
        DataError, match=r"no predictions of 'seg1'; run `dvc repro` \(or `cloudcli infer --model seg1`\)"
    ):
        run_stage(root)
    save_model(root / "predictions/base/seg1", ids, "classifier", classifier_probs=np.zeros((len(ids), 4)))
    with pytest.raises(
        DataError, match=re.escape("'seg1' is a classifier; report_labels.models takes segmentation models")
    ):
        run_stage(root)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"models": ["classifier"]},
            "report_labels.models 'classifier' is not a segmentation model of cv.models (seg1, seg2, seg2_unet)",
        ),
        ({"models": ["seg9"]}, "report_labels.models 'seg9' is not a segmentation model of cv.models"),
        ({"classifier": "seg2"}, "report_labels.classifier must be a classifier listed in cv.models"),
        (
            {"low": 0.9, "high": 0.1},
            "report_labels.low and report_labels.high must satisfy 0 < low < high < 1, got 0.9 and 0.1",
        ),
        ({"rows": 10, "top": 11}, "report_labels.top must be in 0..report_labels.rows (10), got 11"),
    ],
)
def test_bad_params_name_the_key(tmp_path, change, message) -> None:
    params = tiny_params(report_labels=change)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_params(tmp_path / "params.yaml")


@pytest.mark.slow
def test_labels_report_of_the_reproduced_pipeline_agrees_with_a_pixel_by_pixel_rescore(baseline) -> None:
    p = load_params(baseline / "params.yaml")
    table = pd.read_csv(baseline / "reports/labels/suspects.csv", dtype={"image_id": str}, keep_default_na=False)
    summary = json.loads((baseline / "metrics/labels.json").read_text())
    assert summary["listed"] == len(table) <= p.report_labels.rows and (table["score"] > 0).all()
    assert len(table) == p.report_labels.rows or summary["disagreeing"] == len(table)
    assert len(list((baseline / "reports/labels/overlays").iterdir())) == min(p.report_labels.top, len(table))
    if table.empty:
        return
    folders = [baseline / "predictions/base" / m for m in p.report_labels.models]
    ids = list(pd.read_csv(folders[0] / "oof.csv", dtype={"image_id": str})["image_id"])
    cache = open_cache(baseline / "artifacts/preprocessed")
    i, row = ids.index(table["image_id"][0]), pd.Index(cache.train["image_id"]).get_loc(table["image_id"][0])
    truth = unpack_masks(cache.array("train_truth")[row : row + 1], len(CLASSES))
    maps = [open_maps(f, "oof")[i : i + 1] for f in folders]
    expected = brute_force(maps, truth, p.report_labels.low, p.report_labels.high)[0]
    np.testing.assert_allclose(table.loc[0, list(CLASSES)].to_numpy(float), expected, atol=1e-6)
