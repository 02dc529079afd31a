import json

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import cloudcli, kaggle_data

from cloudcli import CLASSES
from cloudcli.config import load_params
from cloudcli.data.kaggle import read_labels, to_wide
from cloudcli.data.sources import open_source
from cloudcli.rle import decode, encode
from cloudcli.stages import report_data

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
    table = report_data.label_table(open_source(kaggle_data(hand_made / "data", SIZE, SIZE), labels_only=True))
    assert table.loc["a.jpg"].tolist() == [0.5, 0.0, 0.0, 0.1] and table.loc["b.jpg", "Fish"] == 0.05
    s = report_data.data_summary(table, pd.read_csv(hand_made / "folds.csv"))
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
    params["data"].update(raw="data", raw_size=list(SIZE), score_size=[5, 10])
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# -- on a reproduced tiny pipeline ----------------------------------------------------------------


@pytest.mark.slow
def test_data_report_agrees_with_the_labels(baseline) -> None:
    """summary.json against the masks decoded from train.csv and the folds table."""
    p = load_params(baseline / "params.yaml")
    wide = to_wide(read_labels(baseline / "data/train.csv", None, CLASSES), CLASSES)
    masks = np.array([[decode(r, p.data.raw_size) for r in row] for row in wide.to_numpy()])  # (N, 4, H, W)
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
