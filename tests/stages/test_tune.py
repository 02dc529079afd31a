import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import load_maps

from cloudcli import CLASSES
from cloudcli.config import EnsembleConfig, TuneConfig
from cloudcli.data.maps import open_maps
from cloudcli.metrics import dice, kaggle_dice
from cloudcli.post.rules import ClassRule, postprocess
from cloudcli.post.tuned import class_scores
from cloudcli.stages import ensemble, tune


def run_tune(root, **changes):
    values = dict(
        metric="dice", seg1="seg1", shape="ensemble", classifier="classifier", class_score="classifier", top_k=20,
        at_least_one=False,
        min_areas=(0, 5, 10, 20), min_components=(0, 3, 8), component_thresholds=(0.4, 0.5, 0.6),
    )  # fmt: skip
    cfg = TuneConfig(**{**values, **changes})
    report = tune.run(
        cfg,
        root / "pred",
        root / "cache",
        root / "ens",
        root / "t.json",
        root / "m.json",
        root / "stages",
        root / "c.csv",
    )
    return cfg, report, json.loads((root / "t.json").read_text())


def apply_chosen(chosen, maps, probs_shape, classifier_probs):
    """Masks of every OOF image from thresholds.json, through the same postprocess the submission uses."""
    classes = list(chosen["classes"].values())
    rules = [ClassRule(c["level"], c["min_area"], c["min_component"], c["gate_threshold"]) for c in classes]
    out = []
    for i, seg1 in enumerate(maps["seg1"]):
        given = None if chosen["classifier"] is None else classifier_probs[i]
        scores = class_scores(chosen["class_score"], seg1, given, chosen["top_k"])
        shape = None if probs_shape is None else probs_shape[i]
        out.append(postprocess(seg1, rules, scores, chosen["at_least_one"], shape, [c["shape_level"] for c in classes]))
    return np.stack(out)


@pytest.mark.parametrize(
    ("shape", "members", "classifier", "class_score", "at_least_one"),
    [
        (None, None, None, "none", False),  # seg1 alone, tuned
        (None, None, "classifier", "classifier", False),
        ("seg2", None, "classifier", "mean", True),
        ("ensemble", ("seg2", "seg2b", "seg2c"), "classifier", "classifier", False),
        ("ensemble", ("seg2", "seg2b", "seg2c"), None, "topk", True),
    ],
)
def test_reported_dice_is_what_the_chosen_rules_give(oof, shape, members, classifier, class_score, at_least_one):
    root, maps, truth, classifier_probs = oof
    vote = None
    if members:
        ensemble.run(EnsembleConfig(members, "majority", None, None), root / "pred", root / "cache", root / "ens")
        vote = load_maps(root / "ens")
    _, report, chosen = run_tune(
        root, shape=shape, classifier=classifier, class_score=class_score, at_least_one=at_least_one
    )
    probs_shape = {None: None, "seg2": maps["seg2"], "ensemble": vote}[shape]
    masks = apply_chosen(chosen, maps, probs_shape, classifier_probs)
    assert report["after"]["dice"] == pytest.approx(kaggle_dice(masks, truth, CLASSES).mean, abs=1e-12)
    plain = np.stack([postprocess(p, [ClassRule(level=127)] * 4) for p in maps["seg1"]])
    assert report["before"]["dice"] == pytest.approx(kaggle_dice(plain, truth, CLASSES).mean, abs=1e-12)
    stages = sorted((root / "stages").iterdir(), key=lambda p: int(p.name.split("_")[0]))
    names = [p.stem.split("_", 1)[1] for p in stages]
    assert names[0] == "seg1" and json.loads(stages[-1].read_text()) == report["after"]
    seg1_alone = json.loads(stages[0].read_text())["dice"]
    assert report["after"]["dice"] >= seg1_alone - 1e-12 or shape is not None
    if shape == "ensemble":
        assert names[:5] == ["seg1", "seg2", "vote", "seg1_gate", "classifier" if classifier else "topk_score_gate"]
    curves = pd.read_csv(root / "c.csv")
    assert list(curves.columns) == ["threshold", *CLASSES] and len(curves) == 255


def test_component_rule_at_every_level_is_what_the_chosen_rules_give(oof) -> None:
    """component_thresholds: all searches a superset of the listed levels; its rules, re-applied, score as reported."""
    root, maps, truth, _ = oof
    some = run_tune(root, shape=None, classifier=None, class_score="none")[1]["after"]["dice"]
    _, report, chosen = run_tune(root, shape=None, classifier=None, class_score="none", component_thresholds="all")
    masks = apply_chosen(chosen, maps, None, None)
    assert report["after"]["dice"] == pytest.approx(kaggle_dice(masks, truth, CLASSES).mean, abs=1e-12)
    assert report["after"]["dice"] >= some - 1e-12


def test_shape_alone_row_is_the_best_plain_rule(oof) -> None:
    """The 'seg2' row: seg2's maps tuned on their own per class (threshold x min_area), by brute force."""
    root, maps, truth, _ = oof
    run_tune(root, shape="seg2", classifier=None, class_score="none")
    row = json.loads(next((root / "stages").glob("2_*.json")).read_text())
    best = np.zeros(4)
    for k in range(4):
        for level in range(255):
            for min_area in (0, 5, 10, 20):
                masks = maps["seg2"][:, k] > level
                masks[masks.sum((1, 2)) < min_area] = False
                best[k] = max(best[k], np.mean([dice(m, t) for m, t in zip(masks, truth[:, k])]))
    assert row["dice"] == pytest.approx(best.mean(), abs=1e-12)
    assert [row[f"dice_{c}"] for c in CLASSES] == pytest.approx(best, abs=1e-12)


def test_missing_ensemble_is_a_clear_error(oof) -> None:
    from cloudcli.errors import DataError

    root, *_ = oof
    with pytest.raises(DataError, match=r"ens/meta.json: missing; run `dvc repro ensemble`"):
        run_tune(root)
    assert not (root / "t.json").exists()


def test_seg1_rules_written_for_the_report_are_the_reports_own_search(oof) -> None:
    """tune records seg1's own best rule per class; `report predictions` of that model reads it
    instead of searching again, and a search gives the same rules. Once seg1's maps change, the
    report searches again."""
    from cloudcli.data.cache import open_cache
    from cloudcli.data.predictions import OofTruth, read_masks
    from cloudcli.post.stored import oof_histograms
    from cloudcli.stages.report_predictions import fit_model_rules, tuned_seg1_rules

    root = oof[0]
    cfg, _, chosen = run_tune(root, shape=None, classifier=None, class_score="none")
    folder = root / "pred/base/seg1"
    ids, probs = read_masks(folder, "oof")
    truth = OofTruth(open_cache(root / "cache"), ids, folder / "oof.csv")
    searched = fit_model_rules(probs, truth, oof_histograms(folder, probs, truth), cfg)
    assert list(chosen["seg1_rules"]) == list(CLASSES)
    read = tuned_seg1_rules(root / "t.json", folder, CLASSES)
    assert read == searched
    assert tuned_seg1_rules(root / "t.json", root / "pred/base/seg2", CLASSES) is None  # another model
    meta = folder / "meta.json"
    meta.write_text(meta.read_text().replace("}", ', "retrained": true}'))
    assert tuned_seg1_rules(root / "t.json", folder, CLASSES) is None  # changed since tune


def test_stages_read_the_npy_maps_of_earlier_versions_alike(oof, tmp_path) -> None:
    """The same predictions as raw .npy (no histograms, as earlier versions wrote them): ensemble
    and tune give the same maps and choices as on the zarr store."""
    root = oof[0]
    legacy = tmp_path / "legacy"
    shutil.copytree(root, legacy)
    for store in sorted((legacy / "pred").rglob("*.zarr")):
        np.save(store.with_suffix(".npy"), open_maps(store.parent, store.stem)[:])
        shutil.rmtree(store)
    members = ("seg2", "seg2b", "seg2c")
    tune_cfg = dict(metric="dice", seg1="seg1", shape="ensemble", classifier="classifier", class_score="classifier",
                    top_k=20, at_least_one=False, min_areas=(0, 5, 10), min_components=(0, 3), component_thresholds="all")  # fmt: skip
    chosen = []
    for where in (root, legacy):
        ensemble.run(EnsembleConfig(members, "majority", None, None), where / "pred", where / "cache", where / "ens")
        out = (where / "t.json", where / "m.json", where / "stages", where / "c.csv")
        tune.run(TuneConfig(**tune_cfg), where / "pred", where / "cache", where / "ens", *out)
        choice = json.loads((where / "t.json").read_text())
        del choice["fitted_on"]  # fingerprints of meta.json files that name their own folders
        chosen.append((load_maps(where / "ens"), json.dumps(choice).replace(str(where), "")))
    np.testing.assert_array_equal(chosen[0][0], chosen[1][0])
    assert chosen[0][1] == chosen[1][1]
