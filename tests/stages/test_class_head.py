"""A segmentation network with a class-presence head (loss term class_head) end to end: trained
and validated (head_auc), inferred (a probability column per class beside the maps), gating tune
as a classifier with the same probabilities would, and exported to a bundle that gates with it."""

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import load_maps, save_model, tiny_params, train_each_fold

from cloudcli import CLASSES
from cloudcli.bundle.export import Sources, export
from cloudcli.bundle.predictor import HEAD, Predictor
from cloudcli.config import ModelEntry, TuneConfig, load_params, resolve_model
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.data.predictions import read_classifier
from cloudcli.engine.predict import load_fold_net
from cloudcli.engine.validate import classifier_metrics
from cloudcli.errors import ConfigError, DataError
from cloudcli.post.tuned import load_tuned
from cloudcli.stages import infer, tune

MODEL = "seg1h"
LOSS = {"bce": 1.0, "class_head": 0.4}
TTA = ("none", "hflip")


def run_infer(tiny_cache, root, out, **changes):
    p = load_params(tiny_cache / "params.yaml")
    cfg = dataclasses.replace(p.infer, tta=TTA, **changes)
    cache, folds = tiny_cache / "artifacts/preprocessed", tiny_cache / "artifacts/folds.csv"
    infer.run(MODEL, cfg, p.cv, root / "models", cache, folds, out)
    return cfg


@pytest.fixture(scope="module")
def head(tiny_cache, tmp_path_factory):
    """seg1h (seg1 with a class head) trained 1 epoch on each of the 3 folds of the tiny cache, and
    its predictions (TTA none + hflip) in pred/base/seg1h."""
    root = tmp_path_factory.mktemp("head")
    p = load_params(tiny_cache / "params.yaml")
    train_each_fold(
        tiny_cache, resolve_model(MODEL, p.network, p.train, {**p.models, MODEL: ModelEntry("seg1", LOSS)}), root
    )
    run_infer(tiny_cache, root, root / "pred/base" / MODEL)
    return root


def net_input(cache, array: str, i: int, settings: dict) -> torch.Tensor:
    """(1, 3, h, w) normalised input of cache image i, as infer feeds it."""
    mean, std = (torch.tensor(settings["normalization"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    return (torch.from_numpy(cache.array(array)[i].copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std


def test_training_validates_the_head_and_records_it(tiny_cache, head) -> None:
    """summary.json's head_auc and head_accuracy are the fold model's head, by hand, on its
    validation images against class presence at the scoring size; best.pt records the loss."""
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    folds = pd.read_csv(tiny_cache / "artifacts/folds.csv", dtype={"image_id": str}).set_index("image_id")["fold"]
    for fold in (0, 1, 2):
        summary = json.loads((head / "models" / MODEL / f"fold{fold}/summary.json").read_text())
        net, settings = load_fold_net(head / "models" / MODEL / f"fold{fold}", torch.device("cpu"))
        assert settings["loss"] == LOSS and summary["monitor"] == "dice"
        rows = np.flatnonzero(folds.loc[cache.train["image_id"]].to_numpy() == fold)
        with torch.no_grad():
            outs = [net(net_input(cache, "train_images", i, settings)) for i in rows]
        assert all(isinstance(o, tuple) and o[0].shape == (1, 4, 32, 64) and o[1].shape == (1, 4) for o in outs)
        probs = torch.sigmoid(torch.cat([o[1] for o in outs])).numpy()
        presence = unpack_masks(cache.array("train_truth")[rows], 4).any((2, 3)).astype(np.float32)
        expected = classifier_metrics(probs, presence, CLASSES)
        metrics = summary["metrics"]
        assert metrics["head_auc"] == pytest.approx(expected["auc"], abs=1e-6)
        assert metrics["head_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-9)
        per_class = {f"head_{k}": v for k, v in expected.items() if k.startswith("auc_")}
        assert {k: v for k, v in metrics.items() if k.startswith("head_auc_")} == pytest.approx(per_class, abs=1e-6)
        assert "dice" in metrics and "auc" not in metrics  # the masks' own metrics stay as they were


def test_infer_writes_the_heads_probabilities_beside_the_maps(tiny_cache, head) -> None:
    """oof.csv, test.csv and test_fold<k>.csv hold the head's sigmoid (mean of the TTA views), by
    hand for one row of each; the maps are the same net's masks."""
    out = head / "pred/base" / MODEL
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    assert json.loads((out / "meta.json").read_text())["class_head"] is True
    index = pd.read_csv(out / "oof.csv", dtype={"image_id": str})
    assert list(index.columns) == ["image_id", "fold", *CLASSES]
    for name in ("test", "test_fold0", "test_fold1", "test_fold2"):
        assert list(pd.read_csv(out / f"{name}.csv").columns) == ["image_id", *CLASSES]

    def by_hand(fold: int, array: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        net, settings = load_fold_net(head / "models" / MODEL / f"fold{fold}", torch.device("cpu"))
        x = net_input(cache, array, i, settings)
        with torch.no_grad():
            (masks, logits), (flipped, flipped_logits) = net(x), net(x.flip(-1))
        probs = (torch.sigmoid(masks) + torch.sigmoid(flipped).flip(-1)) / 2
        maps = (F.interpolate(probs, size=(32, 48), mode="bilinear", align_corners=False) * 255).round()
        return maps[0].numpy(), ((torch.sigmoid(logits) + torch.sigmoid(flipped_logits)) / 2)[0].numpy()

    row = 5
    image_id, fold = index["image_id"][row], int(index["fold"][row])
    maps, classes = by_hand(fold, "train_images", int(np.flatnonzero(cache.train["image_id"] == image_id)[0]))
    np.testing.assert_allclose(index.loc[row, list(CLASSES)].to_numpy(float), classes, atol=1e-5)
    assert np.abs(load_maps(out)[row].astype(int) - maps.astype(int)).max() <= 1

    row, fold = 3, 1
    maps, classes = by_hand(fold, "test_images", row)
    alone = pd.read_csv(out / f"test_fold{fold}.csv")[list(CLASSES)].to_numpy()
    np.testing.assert_allclose(alone[row], classes, atol=1e-5)
    assert np.abs(load_maps(out, f"test_fold{fold}")[row].astype(int) - maps.astype(int)).max() <= 1
    each = np.stack([pd.read_csv(out / f"test_fold{k}.csv")[list(CLASSES)].to_numpy() for k in (0, 1, 2)])
    np.testing.assert_allclose(pd.read_csv(out / "test.csv")[list(CLASSES)].to_numpy(), each.mean(0), atol=2e-6)
    assert np.abs(each[0] - each[1]).max() > 1e-3  # the fold models differ


def tune_with(root, classifier: str, pred: str = "pred", out: str = "tune") -> tuple[dict, dict]:
    """thresholds.json (without the folders it names) and the report of tune: seg1h's maps, gated by `classifier`."""
    cfg = TuneConfig(
        metric="dice", seg1=MODEL, shape=None, classifier=classifier, class_score="classifier", top_k=20,
        at_least_one=False, min_areas=(0, 5, 10, 20), min_components=(0, 3, 8), component_thresholds=(0.4, 0.5, 0.6),
    )  # fmt: skip
    folder = root / out
    args = (folder / "thresholds.json", folder / "metrics.json", folder / "stages", folder / "curves.csv")
    report = tune.run(cfg, root / pred, root / "cache", root / "ens", *args)
    chosen = json.loads((folder / "thresholds.json").read_text())
    return {k: v for k, v in chosen.items() if k not in ("classifier", "fitted_on")}, report


@pytest.fixture
def gates(tiny_cache, head, tmp_path):
    """A project folder with seg1h's predictions and the cache, to tune on."""
    shutil.copytree(head / "pred", tmp_path / "pred")
    (tmp_path / "cache").symlink_to(tiny_cache / "artifacts/preprocessed")
    return tmp_path


def test_the_head_gates_as_a_classifier_with_its_probabilities(gates) -> None:
    """tune.classifier: seg1h chooses exactly what a classifier whose oof.csv holds the head's
    probabilities chooses; a classifier with other probabilities (the truth's presence) does not."""
    oof = pd.read_csv(gates / "pred/base" / MODEL / "oof.csv", dtype={"image_id": str})
    ids, probs = list(oof["image_id"]), oof[list(CLASSES)].to_numpy()
    save_model(gates / "pred/base/same", ids, "classifier", classifier_probs=probs)
    chosen, report = tune_with(gates, MODEL)
    assert (chosen, report) == tune_with(gates, "same")
    cache = open_cache(gates / "cache")
    rows = [list(cache.train["image_id"]).index(i) for i in ids]
    presence = unpack_masks(cache.array("train_truth")[rows], 4).any((2, 3)).astype(float)
    save_model(gates / "pred/base/other", ids, "classifier", classifier_probs=presence)
    other_chosen, other_report = tune_with(gates, "other")
    assert other_report["after"]["dice"] != report["after"]["dice"] and other_chosen["classes"] != chosen["classes"]


def test_a_segmentation_model_without_a_head_cannot_gate(gates) -> None:
    plain = gates / "pred/base/seg1plain"
    shutil.copytree(gates / "pred/base" / MODEL, plain)
    oof = pd.read_csv(plain / "oof.csv", dtype={"image_id": str})
    oof[["image_id", "fold"]].to_csv(plain / "oof.csv", index=False)  # as infer writes it without a head
    message = r"oof.csv: no class probabilities: seg1plain is a segmentation model trained without a class head; add"
    with pytest.raises(DataError, match=message + r" the loss term class_head"):
        read_classifier(plain, "oof", list(oof["image_id"]))
    with pytest.raises(DataError, match=message):
        tune_with(gates, "seg1plain")
    assert not (gates / "tune").exists()


def write_params(tmp_path, change) -> object:
    params = tiny_params()
    params["models"][MODEL] = {"role": "seg1", "loss": dict(LOSS)}
    params["cv"]["models"] = [*params["cv"]["models"], MODEL]
    change(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path / "params.yaml"


def test_a_model_with_a_head_may_gate_tune_and_pseudo_labels(tmp_path) -> None:
    assert load_params(write_params(tmp_path, lambda p: None)).tune.classifier == "classifier"
    gate = {"classifier": MODEL}
    params = load_params(write_params(tmp_path, lambda p: (p["tune"].update(gate), p["pseudo"].update(gate))))
    assert params.tune.classifier == MODEL and params.pseudo.classifier == MODEL


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p["tune"].update(classifier="seg1"),
            r"tune.classifier must be a classifier listed in cv.models, a segmentation model of cv.models trained "
            r"with a class head \(loss term class_head\), or null; got 'seg1'",
        ),
        (lambda p: p["pseudo"].update(classifier="seg2"), r"pseudo.classifier must be a classifier .* got 'seg2'"),
        (
            lambda p: p["models"][MODEL].update(loss={"class_head": 1.0}),
            r"models.seg1h.loss class_head trains the class-presence head only; add a mask loss, e.g. "
            r"\{bce: 1.0, class_head: 0.4\}",
        ),
        (
            lambda p: p["models"]["classifier"].update(loss={"bce": 1.0, "class_head": 0.4}),
            r"models.classifier.loss has unknown loss 'class_head' for role classifier",
        ),
    ],
)
def test_bad_class_head_params_name_the_key(tmp_path, change, message) -> None:
    path = write_params(tmp_path, change)
    with pytest.raises(ConfigError, match=message) as info:
        load_params(path)
    assert str(info.value).startswith(str(path))


def test_a_bundle_gated_by_the_head_draws_the_submitted_masks(tiny_cache, head, gates) -> None:
    """With scale TTA too: export of the pipeline tune chose (seg1h decides and gates) predicts, from
    the raw test images, the head probabilities of test.csv and the masks submit encodes."""
    pred = gates / "scaled/base" / MODEL
    cfg = run_infer(tiny_cache, head, pred, scales=(1.0, 1.25))
    assert json.loads((pred / "meta.json").read_text())["scales"] == [1.0, 1.25]
    tune_with(gates, MODEL, "scaled", "tune")
    chosen = json.loads((gates / "tune/thresholds.json").read_text())
    assert chosen["classifier"] == str(pred) and chosen["seg1"] == str(pred)
    assert any(c["gate_threshold"] is not None for c in chosen["classes"].values())  # the head gates a class
    sources = Sources(gates / "tune/thresholds.json", head / "models", gates / "cache")
    spec = export(sources, cfg, gates / "bundle")
    assert spec["pipeline"]["classifier"] == MODEL and spec["models"][MODEL]["scales"] == [1.0, 1.25]
    predictor = Predictor.load(gates / "bundle", device="cpu")
    assert predictor.gate_key == f"{MODEL}{HEAD}"
    tuned = load_tuned(gates / "tune/thresholds.json", "test")
    images = [cv2.cvtColor(cv2.imread(str(tiny_cache / "data/test_images" / i)), cv2.COLOR_BGR2RGB) for i in tuned.ids]
    n = predictor.batch_size  # infer's batches
    masks, probs = zip(*(predictor.predict_batch(np.stack(images[i : i + n])) for i in range(0, len(images), n)))
    test = pd.read_csv(pred / "test.csv", dtype={"image_id": str})
    np.testing.assert_array_equal(np.concatenate([p[predictor.gate_key] for p in probs]), test[list(CLASSES)])
    np.testing.assert_array_equal(np.concatenate([p[MODEL] for p in probs]), load_maps(pred, "test"))
    np.testing.assert_array_equal(np.concatenate(masks), np.stack([tuned.masks(i) for i in range(len(tuned.ids))]))
