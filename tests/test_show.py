"""`cloudcli show`, and the errors of the report commands, on one copy of the reproduced tiny pipeline."""

import json

import cv2
import pandas as pd
import pytest
from dvc_repo import copy_of, run
from helpers import cloudcli

from cloudcli import CLASSES
from cloudcli.config import load_params
from cloudcli.viz import panel_shape


@pytest.mark.slow
def test_show_and_report_errors(baseline, tmp_path) -> None:
    repo = copy_of(baseline, tmp_path)
    train_id = pd.read_csv(repo / "artifacts/folds.csv")["image_id"][0]
    test_id = pd.read_csv(repo / "data/sample_submission.csv")["Image_Label"][0].rsplit("_", 1)[0]
    p = load_params(repo / "params.yaml")
    shape = (*panel_shape(p.report.tile, len(CLASSES)), 3)
    out = cloudcli("show", train_id.removesuffix(".jpg"), cwd=repo).stdout.strip()
    assert out == f"show/{train_id.removesuffix('.jpg')}.png" and cv2.imread(str(repo / out)).shape == shape
    out = cloudcli("show", test_id, "--out", "t.png", "--tile", "64", "96", cwd=repo).stdout.strip()
    assert cv2.imread(str(repo / out)).shape == (*panel_shape((64, 96), len(CLASSES)), 3)

    # the submitted masks of a test image are drawn: its first class's tile shows the fill colour
    for args, message in [
        (("show", "nope"), "nope: no such image among the 24 train and 6 test images"),
        (("show", train_id, "--pred", "missing.csv"), "missing.csv: file not found"),
        (("show", train_id, "--pred", "submission.csv"), f"submission.csv: no rows for {train_id}"),
        (("show", train_id, "--pred", "data/train.csv"), "malformed RLE"),
        (("report", "predictions", "--model", "classifier"), "'classifier': not ensemble or a segmentation model"),
        (("report", "predictions", "--model", "seg9"), "'seg9'"),
        (("report", "predictions", "--thresholds", "none.json"), "none.json: missing; run `dvc repro tune`"),
    ]:
        result = cloudcli(*args, cwd=repo, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr

    shown = json.loads(run("dvc", "plots", "show", "--json", cwd=repo))["data"]
    assert {
        "reports/data/class_frequency.csv",
        "reports/data/mask_area.png",
        "reports/predictions/ensemble/per_class.csv",
        "reports/predictions/ensemble/confusion.png",
    } <= set(shown)
    assert any(k.startswith("reports/predictions/ensemble/worst") for k in shown)
    for plot in ("tune/curves.csv", "reports/data/mask_area.csv"):  # one series per class of params.yaml
        values = shown[plot][0]["content"]["data"]["values"]
        assert {v["field"] for v in values} == {"Fish", "Flower", "Gravel", "Sugar"}, plot
