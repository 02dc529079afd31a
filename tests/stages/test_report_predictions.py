import json
from dataclasses import replace

import cv2
import pandas as pd
import pytest

from cloudcli import CLASSES
from cloudcli.config import load_params
from cloudcli.data.cache import resize_mask
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.metrics import dice
from cloudcli.rle import decode
from cloudcli.stages import report_predictions
from cloudcli.viz import panel_shape

# -- on a reproduced tiny pipeline ----------------------------------------------------------------


@pytest.mark.slow
def test_prediction_report_agrees_with_tune_and_with_a_brute_force_rescore(baseline) -> None:
    p = load_params(baseline / "params.yaml")
    out = baseline / "reports/predictions"
    assert sorted(q.name for q in out.iterdir()) == sorted(p.report.models)
    s = json.loads((out / "ensemble/summary.json").read_text())
    tuned = json.loads((baseline / "metrics/tune.json").read_text())["after"]
    assert s["dice"] == pytest.approx(tuned["dice"], abs=1e-12)  # the pipeline submit applies, scored as tune did
    assert s["dice_non_empty"] == pytest.approx(tuned["dice_non_empty"], abs=1e-12)

    # every per-image Dice, recomputed from the written OOF masks and the labels at full size
    oof = to_wide(read_labels(out / "ensemble/oof_masks.csv", p.data.score_size, CLASSES), CLASSES)
    truth = to_wide(read_labels(baseline / "data/train.csv", None, CLASSES), CLASSES).loc[oof.index]
    per_image = pd.read_csv(out / "ensemble/per_image.csv").set_index("image_id").loc[oof.index]
    folds = pd.read_csv(baseline / "artifacts/folds.csv").set_index("image_id")["fold"]
    assert (per_image["fold"] == folds[oof.index]).all()
    confusion = {c: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for c in CLASSES}
    for image_id in oof.index:
        for c in CLASSES:
            pred = decode(oof.loc[image_id, c], p.data.score_size)
            true = resize_mask(decode(truth.loc[image_id, c], p.data.raw_size), p.data.score_size)
            assert per_image.loc[image_id, c] == pytest.approx(dice(pred, true), abs=1e-6)
            confusion[c][("t" if pred.any() == true.any() else "f") + ("p" if pred.any() else "n")] += 1
    assert s["confusion"] == confusion
    assert per_image[list(CLASSES)].to_numpy().mean() == pytest.approx(s["dice"], abs=1e-5)

    worst = sorted((q for q in (out / "ensemble/worst").iterdir()), key=lambda q: q.name)
    n = min(p.report.worst, len(oof))
    assert [w["image_id"] for w in s["worst"]] == list(per_image.sort_values(["dice"], kind="stable").index[:n])
    assert len(worst) == n and worst[0].name == f"01_{s['worst'][0]['image_id'].removesuffix('.jpg')}.png"
    for q in [*worst, *(out / "ensemble/test").iterdir(), out / "seg2/worst" / worst[0].name.replace("01_", "01_")]:
        if q.exists():
            image = cv2.imread(str(q))
            assert image.shape[:2] == panel_shape(p.report.tile, len(CLASSES)) and q.stat().st_size < 400_000
    assert len(list((out / "ensemble/test").iterdir())) == min(p.report.test_images, 6)
    assert len(list((out / "seg2/worst").iterdir())) == n


@pytest.mark.slow
def test_a_model_report_scores_as_tunes_seg1_rule(baseline, tmp_path) -> None:
    """seg1 binarised by its own best rule: the same Dice as tune's seg1 step."""
    p = load_params(baseline / "params.yaml")
    s = report_predictions.run(
        "seg1", p.report, p.tune, replace(p.data, raw=str(baseline / "data")),
        baseline / "predictions", baseline / "artifacts/preprocessed", baseline / "tune/thresholds.json",
        baseline / "submission.csv", baseline / "artifacts/folds.csv", tmp_path / "seg1",
    )  # fmt: skip
    step = json.loads((baseline / "metrics/stages/1_seg1.json").read_text())
    assert s["dice"] == pytest.approx(step["dice"], abs=1e-12)
    assert set(s["rules"]) == set(CLASSES) and {"level", "min_area", "min_component"} <= set(s["rules"]["Fish"])
