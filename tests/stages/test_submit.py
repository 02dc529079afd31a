import json

import numpy as np
import pandas as pd
import pytest
from helpers import cloudcli, kaggle_data, write_cache_meta

from cloudcli import CLASSES
from cloudcli.data.predictions import fingerprint
from cloudcli.errors import DataError
from cloudcli.post.rules import ClassRule, postprocess
from cloudcli.rle import decode, encode
from cloudcli.stages import submit

SIZE = (8, 12)  # scoring size of these tests


@pytest.fixture(params=[False, True], ids=["seg1-only", "two-stage"])
def project(tmp_path, request):
    """Test probabilities of 3 images, thresholds, a classifier, sample_submission and test_truth."""
    rng = np.random.default_rng(0)
    ids = ["b.jpg", "a.jpg", "c.jpg"]  # the sample order differs from the prediction order below
    probs = rng.integers(0, 256, (3, 4, *SIZE), dtype=np.uint8)
    shape = rng.integers(0, 256, (3, 4, *SIZE), dtype=np.uint8) if request.param else None
    seg, classifier = tmp_path / "pred/base/seg1", tmp_path / "pred/base/classifier"
    seg.mkdir(parents=True), classifier.mkdir()
    for folder, maps in ((seg, probs), (tmp_path / "ens", shape)):
        if maps is not None:
            folder.mkdir(exist_ok=True)
            np.save(folder / "test.npy", maps)
            pd.DataFrame({"image_id": ["a.jpg", "b.jpg", "c.jpg"]}).to_csv(folder / "test.csv", index=False)
    classifier_probs = rng.random((3, 4))
    pd.DataFrame({"image_id": ["a.jpg", "b.jpg", "c.jpg"], **dict(zip(CLASSES, classifier_probs.T))}).to_csv(
        classifier / "test.csv", index=False
    )
    chosen = {
        c: {
            "level": 100 + 20 * k,
            "min_area": 10 * k,
            "min_component": 4 * (k == 2),
            "gate_threshold": 0.3 if k == 1 else None,
            "shape_level": 90 + 10 * k if request.param else None,
        }
        for k, c in enumerate(CLASSES)
    }
    (seg / "meta.json").write_text('{"role": "seg1"}')
    thresholds = {
        "seg1": str(seg), "shape": str(tmp_path / "ens") if request.param else None, "shape_is_ensemble": True,
        "classifier": str(classifier), "class_score": "classifier", "top_k": 5, "at_least_one": False, "classes": chosen,
        "fitted_on": {str(seg): fingerprint(seg)},
    }  # fmt: skip
    (tmp_path / "t.json").write_text(json.dumps(thresholds))
    raw = tmp_path / "data"
    raw.mkdir()
    labels = [f"{i}_{c}" for i in ids for c in CLASSES]
    pd.DataFrame({"Image_Label": labels, "EncodedPixels": "1 1"}).to_csv(raw / "sample_submission.csv", index=False)
    write_cache_meta(tmp_path / "cache", ids, SIZE, np.zeros((3, 4, *SIZE), np.uint8))  # empty test truth
    data = kaggle_data(raw, (16, 24), SIZE)
    return tmp_path, data, probs, classifier_probs, chosen, shape


def test_writer_round_trip_and_order(project) -> None:
    root, data, probs, classifier_probs, chosen, shape = project
    submit.run(data, root / "t.json", root / "cache", root / "sub.csv", root / "m.json")
    sub = pd.read_csv(root / "sub.csv", keep_default_na=False)
    sample = pd.read_csv(root / "data/sample_submission.csv")
    assert list(sub.columns) == ["Image_Label", "EncodedPixels"] and list(sub["Image_Label"]) == list(
        sample["Image_Label"]
    )
    rules = [ClassRule(c["level"], c["min_area"], c["min_component"], c["gate_threshold"]) for c in chosen.values()]
    for i, image_id in enumerate(["a.jpg", "b.jpg", "c.jpg"]):
        levels = [c["shape_level"] for c in chosen.values()]
        expected = postprocess(probs[i], rules, classifier_probs[i], False, None if shape is None else shape[i], levels)
        for k, c in enumerate(CLASSES):
            rle = sub.set_index("Image_Label").loc[f"{image_id}_{c}", "EncodedPixels"]
            np.testing.assert_array_equal(decode(rle, SIZE), expected[k])
    report = json.loads((root / "m.json").read_text())  # all-empty truth: Dice = share of empty predictions
    empty = (sub["EncodedPixels"] == "").mean()
    assert report["dice"] == pytest.approx(empty)
    assert submit.check(root / "sub.csv", sample_rows(root), SIZE, CLASSES, "sample") == 12


def sample_rows(root) -> list[str]:
    return list(pd.read_csv(root / "data/sample_submission.csv")["Image_Label"])


def test_predictions_changed_since_tune_is_a_clear_error(project) -> None:
    root, data, *_ = project
    (root / "pred/base/seg1/meta.json").write_text('{"role": "seg1", "folds": [0, 1]}')  # re-inferred since tune
    with pytest.raises(DataError, match=r"pred/base/seg1/meta.json changed since .*t.json was tuned on it; rerun"):
        submit.run(data, root / "t.json", root / "cache", root / "sub.csv", root / "m.json")
    chosen = json.loads((root / "t.json").read_text())
    del chosen["fitted_on"]
    (root / "t.json").write_text(json.dumps(chosen))
    with pytest.raises(DataError, match=r"t.json: no fitted_on .*rerun `dvc repro tune`"):
        submit.run(data, root / "t.json", root / "cache", root / "sub.csv", root / "m.json")
    assert not (root / "sub.csv").exists()


def write(path, rows) -> None:
    path.write_text("\n".join(rows) + "\n")


def good_rows() -> list[str]:
    return ["Image_Label,EncodedPixels"] + [
        f"{i}_{c},{encode(np.eye(8, 12, dtype=np.uint8))}" for i in ("b.jpg", "a.jpg", "c.jpg") for c in CLASSES
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: ["ImageId,EncodedPixels", *r[1:]], "expected header"),
        (lambda r: r[:-1], "c.jpg has no row for Sugar"),
        (lambda r: [*r, "d.jpg_Fish,", "d.jpg_Flower,", "d.jpg_Gravel,", "d.jpg_Sugar,"], "unexpected row d.jpg_Fish"),
        (lambda r: [r[0], *r[5:9], *r[1:5], *r[9:]], "line 2: a.jpg_Fish where .* has b.jpg_Fish"),
        (lambda r: [*r[:3], "b.jpg_Gravel,90 10", *r[4:]], "line 4 .*beyond the 8x12 image"),
        (lambda r: [*r[:3], "b.jpg_Gravel,5 2 3", *r[4:]], "line 4 .*odd number"),
        (lambda r: [*r[:3], "b.jpg_Gravel,5 2 4 2", *r[4:]], "line 4 .*overlaps"),
    ],
)
def test_check_catches_each_kind_of_malformed_file(project, change, message: str) -> None:
    root = project[0]
    write(root / "s.csv", good_rows())
    assert submit.check(root / "s.csv", sample_rows(root), SIZE, CLASSES, "sample") == 12
    write(root / "s.csv", change(good_rows()))
    with pytest.raises(DataError, match=message):
        submit.check(root / "s.csv", sample_rows(root), SIZE, CLASSES, "sample")


def test_check_from_the_command_line(project) -> None:
    root = project[0]
    params = root.parent / "params.yaml"
    import yaml
    from helpers import tiny_params

    p = tiny_params()
    p["data"].update(raw=str(root / "data"), score_size=list(SIZE))
    params.write_text(yaml.safe_dump(p))
    write(root / "s.csv", good_rows())
    ok = cloudcli("submit", "--params", str(params), "--check", str(root / "s.csv"), cwd=root)
    assert "valid submission, 12 rows" in ok.stdout
    write(root / "s.csv", good_rows()[:-1])
    bad = cloudcli("submit", "--params", str(params), "--check", str(root / "s.csv"), cwd=root, check=False)
    assert bad.returncode == 1 and "no row for Sugar" in bad.stderr and "Traceback" not in bad.stderr
