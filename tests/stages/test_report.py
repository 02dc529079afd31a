import json
from dataclasses import replace

import cv2
import numpy as np
import pandas as pd
import pytest
from dvc_repo import copy_of, run
from helpers import cloudcli, kaggle_data

from cloudcli import CLASSES
from cloudcli.config import load_params
from cloudcli.data.cache import resize_mask
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.sources import open_source
from cloudcli.metrics import dice
from cloudcli.rle import decode, encode
from cloudcli.stages import report
from cloudcli.viz import panel_shape

SIZE = (10, 20)  # raw image size of the hand-made labels


def labels(rows: dict[str, list[np.ndarray | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"{i}_{c}", "" if m is None else encode(m)) for i, masks in rows.items() for c, m in zip(CLASSES, masks)],
        columns=["Image_Label", "EncodedPixels"],
    )


def box(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros(SIZE, np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


@pytest.fixture
def hand_made(tmp_path):
    """3 images of 10x20: a: Fish 50% + Sugar 10%; b: Fish 5%; c: nothing. Folds a,b: 0, c: 1."""
    raw = tmp_path / "data"
    raw.mkdir()
    labels({
        "a.jpg": [box(0, 10, 0, 10), None, None, box(0, 2, 0, 10)],
        "b.jpg": [box(0, 1, 0, 10), None, None, None],
        "c.jpg": [None, None, None, None],
    }).to_csv(raw / "train.csv", index=False)  # fmt: skip
    pd.DataFrame({"image_id": ["c.jpg", "a.jpg", "b.jpg"], "fold": [1, 0, 0]}).to_csv(
        tmp_path / "folds.csv", index=False
    )
    return tmp_path


def test_data_report_known_answers(hand_made) -> None:
    table = report.label_table(open_source(kaggle_data(hand_made / "data", SIZE, SIZE), labels_only=True))
    assert table.loc["a.jpg"].tolist() == [0.5, 0.0, 0.0, 0.1] and table.loc["b.jpg", "Fish"] == 0.05
    s = report.data_summary(table, pd.read_csv(hand_made / "folds.csv"))
    assert s["images"] == 3
    assert s["class_frequency"]["Fish"] == {"images": 2, "share": round(2 / 3, 6)}
    assert s["class_frequency"]["Flower"] == {"images": 0, "share": 0.0}
    assert s["classes_per_image"] == {"0": 1, "1": 1, "2": 1, "3": 0, "4": 0}
    assert s["cooccurrence"]["Fish"] == {"Fish": 2, "Flower": 0, "Gravel": 0, "Sugar": 1}
    assert s["cooccurrence"]["Sugar"]["Fish"] == 1 and s["cooccurrence"]["Sugar"]["Sugar"] == 1
    fish = s["mask_area"]["Fish"]
    assert fish["masks"] == 2 and fish["mean"] == 0.275 and fish["median"] == 0.275
    assert fish["histogram"][1] == 1 and fish["histogram"][10] == 1 and sum(fish["histogram"]) == 2  # 5% and 50%
    assert s["mask_area"]["Flower"] == {"masks": 0, "mean": None, "median": None, "histogram": [0] * 20}
    assert s["folds"] == {
        "0": {"images": 2, "Fish": 1.0, "Flower": 0.0, "Gravel": 0.0, "Sugar": 0.5},
        "1": {"images": 1, "Fish": 0.0, "Flower": 0.0, "Gravel": 0.0, "Sugar": 0.0},
    }


def test_report_data_command_writes_tables_and_pngs(hand_made) -> None:
    params = yaml_params(hand_made)
    cloudcli("report", "data", "--params", str(params), "--folds", "folds.csv", cwd=hand_made)
    out = hand_made / "reports/data"
    names = {p.name for p in out.iterdir()}
    views = ["class_frequency", "classes_per_image", "cooccurrence", "mask_area", "fold_balance"]
    assert names == {"summary.json", *(f"{v}.csv" for v in views), *(f"{v}.png" for v in views)}
    for v in views:
        image = cv2.imread(str(out / f"{v}.png"))
        assert image is not None and image.shape[0] >= 300 and image.shape[1] >= 400
        assert (out / f"{v}.png").stat().st_size < 100_000
    freq = pd.read_csv(out / "class_frequency.csv")
    assert freq["images"].tolist() == [2, 0, 0, 1] and freq["class"].tolist() == list(CLASSES)
    co = pd.read_csv(out / "cooccurrence.csv").set_index(["class", "with"])["images"]
    assert co[("Fish", "Sugar")] == 1 and co[("Sugar", "Fish")] == 1 and co[("Fish", "Fish")] == 2


def test_report_data_errors_name_the_file(hand_made) -> None:
    params = yaml_params(hand_made)
    result = cloudcli("report", "data", "--params", str(params), "--folds", "none.csv", cwd=hand_made, check=False)
    assert result.returncode == 1 and "none.csv" in result.stderr and "dvc repro fold" in result.stderr
    pd.DataFrame({"image_id": ["a.jpg"], "fold": [0]}).to_csv(hand_made / "few.csv", index=False)
    result = cloudcli("report", "data", "--params", str(params), "--folds", "few.csv", cwd=hand_made, check=False)
    assert result.returncode == 1 and "no fold for 2 training images" in result.stderr
    assert not (hand_made / "reports").exists()  # nothing half-written
    (hand_made / "data/train.csv").write_text("Image_Label,EncodedPixels\na.jpg_Fish,1 999\n")
    result = cloudcli("report", "data", "--params", str(params), "--folds", "folds.csv", cwd=hand_made, check=False)
    assert result.returncode == 1 and "train.csv" in result.stderr and "Traceback" not in result.stderr


def yaml_params(folder):
    import yaml
    from helpers import tiny_params

    params = tiny_params()
    params["data"].update(raw="data", image_size=list(SIZE), score_size=[5, 10])
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# -- on a reproduced tiny pipeline ----------------------------------------------------------------


@pytest.mark.slow
def test_data_report_agrees_with_the_labels(baseline) -> None:
    """summary.json against the masks decoded from train.csv and the folds table."""
    p = load_params(baseline / "params.yaml")
    wide = to_wide(read_labels(baseline / "data/train.csv"))
    masks = np.array([[decode(r, p.data.image_size) for r in row] for row in wide.to_numpy()])  # (N, 4, H, W)
    areas = masks.mean((2, 3))
    s = json.loads((baseline / "reports/data/summary.json").read_text())
    assert s["images"] == len(wide) == 24
    for k, c in enumerate(CLASSES):
        assert s["class_frequency"][c]["images"] == int((areas[:, k] > 0).sum())
        for j, d in enumerate(CLASSES):
            assert s["cooccurrence"][c][d] == int(((areas[:, k] > 0) & (areas[:, j] > 0)).sum())
        hist = np.histogram(areas[areas[:, k] > 0, k], np.linspace(0, 1, 21))[0]
        assert s["mask_area"][c]["histogram"] == hist.tolist()
    per_image = (areas > 0).sum(1)
    assert s["classes_per_image"] == {str(j): int((per_image == j).sum()) for j in range(5)}
    folds = pd.read_csv(baseline / "artifacts/folds.csv").set_index("image_id")["fold"][wide.index]
    for f, v in s["folds"].items():
        rows = (folds == int(f)).to_numpy()
        assert v["images"] == rows.sum() and v["Gravel"] == round(float((areas[rows, 2] > 0).mean()), 6)


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
    oof = to_wide(read_labels(out / "ensemble/oof_masks.csv", p.data.score_size))
    truth = to_wide(read_labels(baseline / "data/train.csv")).loc[oof.index]
    per_image = pd.read_csv(out / "ensemble/per_image.csv").set_index("image_id").loc[oof.index]
    folds = pd.read_csv(baseline / "artifacts/folds.csv").set_index("image_id")["fold"]
    assert (per_image["fold"] == folds[oof.index]).all()
    confusion = {c: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for c in CLASSES}
    for image_id in oof.index:
        for c in CLASSES:
            pred = decode(oof.loc[image_id, c], p.data.score_size)
            true = resize_mask(decode(truth.loc[image_id, c], p.data.image_size), p.data.score_size)
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
            assert image.shape[:2] == panel_shape(p.report.tile) and q.stat().st_size < 400_000
    assert len(list((out / "ensemble/test").iterdir())) == min(p.report.test_images, 6)
    assert len(list((out / "seg2/worst").iterdir())) == n


@pytest.mark.slow
def test_a_model_report_scores_as_tunes_seg1_rule(baseline, tmp_path) -> None:
    """seg1 binarised by its own best rule: the same Dice as tune's seg1 step."""
    p = load_params(baseline / "params.yaml")
    s = report.run_predictions(
        "seg1", p.report, p.tune, replace(p.data, raw=str(baseline / "data")),
        baseline / "predictions", baseline / "artifacts/preprocessed", baseline / "tune/thresholds.json",
        baseline / "submission.csv", baseline / "artifacts/folds.csv", tmp_path / "seg1",
        baseline / "pseudo/predictions",
    )  # fmt: skip
    step = json.loads((baseline / "metrics/stages/1_seg1.json").read_text())
    assert s["dice"] == pytest.approx(step["dice"], abs=1e-12)
    assert set(s["rules"]) == set(CLASSES) and {"level", "min_area", "min_component"} <= set(s["rules"]["Fish"])


@pytest.mark.slow
def test_show_and_report_errors(baseline, tmp_path) -> None:
    repo = copy_of(baseline, tmp_path)
    train_id = pd.read_csv(repo / "artifacts/folds.csv")["image_id"][0]
    test_id = pd.read_csv(repo / "data/sample_submission.csv")["Image_Label"][0].rsplit("_", 1)[0]
    p = load_params(repo / "params.yaml")
    shape = (*panel_shape(p.report.tile), 3)
    out = cloudcli("show", train_id.removesuffix(".jpg"), cwd=repo).stdout.strip()
    assert out == f"show/{train_id.removesuffix('.jpg')}.png" and cv2.imread(str(repo / out)).shape == shape
    out = cloudcli("show", test_id, "--out", "t.png", "--tile", "64", "96", cwd=repo).stdout.strip()
    assert cv2.imread(str(repo / out)).shape == (*panel_shape((64, 96)), 3)

    # the submitted masks of a test image are drawn: its first class's tile shows the fill colour
    for args, message in [
        (("show", "nope"), "nope: no such image among the 24 train and 6 test images"),
        (("show", train_id, "--pred", "missing.csv"), "missing.csv: file not found"),
        (("show", train_id, "--pred", "submission.csv"), f"submission.csv: no rows for {train_id}"),
        (("show", train_id, "--pred", "data/train.csv"), "malformed RLE"),
        (("report", "predictions", "--model", "cls"), "'cls': not ensemble or a segmentation model"),
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
