"""Damaged JSON files written by earlier stages: each reader ends in one DataError naming the file
and what is wrong (and the key, where a key is missing or of another type), never a traceback.

Every reader is called directly on small files under tmp_path; `cloudcli cv` shows the whole
command line ending in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import cloudcli_here, save_model, write_cache

from cloudcli import CLASSES
from cloudcli.errors import DataError
from cloudcli.io import need_keys, read_json

DAMAGED = {  # every JSON reader refuses these, whatever keys it wants
    "truncated": (b'{"classes": ["Fish", ', "not valid JSON (Expecting value: line 1 column 22 (char 21))"),
    "empty": (b"", "not valid JSON (Expecting value: line 1 column 1 (char 0))"),
    "not UTF-8": (b"\xff\xfe", "not UTF-8 text (invalid start byte at byte 0)"),
    "latin-1": ('{"name": "Gravel\xe9"}'.encode("latin-1"), "not UTF-8 text (invalid continuation byte at byte 16)"),
    "a list": (b"[]", "not a JSON object (a list)"),
    "a number": (b"3", "not a JSON object (a whole number)"),
    "null": (b"null", "not a JSON object (null)"),
}


def expect(run, path: Path, *words: str) -> str:
    """`run()` raises one DataError naming `path`, holding every word; its message."""
    with pytest.raises(DataError) as caught:
        run()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


# ------------------------------------------------------------------------------------- io.read_json


@pytest.mark.parametrize("case", list(DAMAGED))
def test_read_json_names_the_file_and_what_is_wrong(case: str, tmp_path: Path) -> None:
    content, what = DAMAGED[case]
    (tmp_path / "x.json").write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_json(tmp_path / "x.json", "rerun `dvc repro x`")
    assert str(caught.value) == f"{tmp_path / 'x.json'}: {what}; rerun `dvc repro x`"


def test_read_json_of_a_missing_file_or_a_folder(tmp_path: Path) -> None:
    fix = "rerun `dvc repro x`"
    with pytest.raises(DataError) as caught:
        read_json(tmp_path / "x.json", fix)
    assert str(caught.value) == f"{tmp_path / 'x.json'}: missing; rerun `dvc repro x`"
    with pytest.raises(DataError) as caught:
        read_json(tmp_path / "x.json", fix, missing="run `dvc repro x` first")
    assert str(caught.value) == f"{tmp_path / 'x.json'}: missing; run `dvc repro x` first"
    (tmp_path / "x.json").mkdir()
    with pytest.raises(DataError) as caught:
        read_json(tmp_path / "x.json", fix)
    assert str(caught.value) == f"{tmp_path / 'x.json'}: a folder, not a JSON file; rerun `dvc repro x`"


def test_read_json_reads_an_object(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"a": [1, 2.5], "b": "Fisch \u00e9"}')
    assert read_json(tmp_path / "x.json", "fix") == {"a": [1, 2.5], "b": "Fisch \u00e9"}


KEYS = {"n": int, "score": float, "name": str, "flag": bool, "rows": list, "folder": (str, type(None))}
GOOD = {"n": 3, "score": 1, "name": "seg1", "flag": False, "rows": [], "folder": None}
BAD_KEYS = [  # (change, message after "where: ")
    ({"n": None}, "no 'n'"),
    ({"n": "3"}, "'n' is a string, expected a whole number"),
    ({"n": 1.5}, "'n' is a number, expected a whole number"),
    ({"n": True}, "'n' is true/false, expected a whole number"),
    ({"score": "0.5"}, "'score' is a string, expected a number"),
    ({"score": False}, "'score' is true/false, expected a number"),
    ({"flag": 0}, "'flag' is a whole number, expected true/false"),
    ({"rows": {}}, "'rows' is an object, expected a list"),
    ({"folder": 3}, "'folder' is a whole number, expected a string or null"),
]


@pytest.mark.parametrize(("change", "words"), BAD_KEYS)
def test_need_keys_names_the_key(change: dict, words: str) -> None:
    obj = {k: v for k, v in {**GOOD, **change}.items() if v is not None or k == "folder"}
    with pytest.raises(DataError) as caught:
        need_keys(obj, KEYS, "f.json: metrics", "rerun it")
    assert str(caught.value) == f"f.json: metrics: {words}; rerun it"
    assert need_keys(GOOD, KEYS, "f.json", "rerun it") is GOOD


# --------------------------------------------------------------------------------- cv: summary.json


def summary(role: str) -> dict:
    metrics = {"auc": 0.75, "accuracy": 0.5} if role == "classifier" else {"sums": [1.0] * (2 * len(CLASSES) + 4)}
    return {"model": "m", "role": role, "fold": 0, "n_valid": 8, "metrics": metrics}


SUMMARY_KEYS = [  # (role, change of the summary, words)
    ("seg1", lambda s: s.clear(), "no 'metrics'"),
    ("seg1", lambda s: s.pop("metrics"), "no 'metrics'"),
    ("seg1", lambda s: s.update(metrics=[1, 2]), "'metrics' is a list, expected an object"),
    ("seg1", lambda s: s["metrics"].pop("sums"), "metrics: no 'sums'"),
    ("seg1", lambda s: s["metrics"].update(sums="1 2 3"), "metrics: 'sums' is a string"),
    ("seg1", lambda s: s["metrics"]["sums"].pop(), "'sums' is not 12 numbers"),
    ("seg1", lambda s: s["metrics"]["sums"].__setitem__(3, "x"), "'sums' is not 12 numbers"),
    ("classifier", lambda s: s.pop("n_valid"), "no 'n_valid'"),
    ("classifier", lambda s: s.update(n_valid="8"), "'n_valid' is a string, expected a whole number"),
    ("classifier", lambda s: s["metrics"].pop("auc"), "metrics: no 'auc'"),
    ("classifier", lambda s: s["metrics"].update(accuracy=None), "'accuracy' is null, expected a number"),
]


def write_summary(models: Path, role: str, content: bytes | dict, fold: int = 0) -> Path:
    path = models / "m" / f"fold{fold}" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_summary(case: str, tmp_path: Path) -> None:
    from cloudcli.stages.cv import model_score

    path = write_summary(tmp_path, "seg1", DAMAGED[case][0])
    expect(lambda: model_score("m", "seg1", (0,), tmp_path, CLASSES), path, DAMAGED[case][1], "cloudcli train")


@pytest.mark.parametrize(("role", "change", "words"), SUMMARY_KEYS)
def test_summary_without_its_numbers(role: str, change, words: str, tmp_path: Path) -> None:
    from cloudcli.stages.cv import model_score

    write_summary(tmp_path, role, summary(role), fold=0)
    damaged = summary(role)
    change(damaged)
    path = write_summary(tmp_path, role, damaged, fold=1)
    fix = "retrain it (cloudcli train --model m --fold 1)"
    expect(lambda: model_score("m", role, (0, 1), tmp_path, CLASSES), path, words, fix)
    write_summary(tmp_path, role, summary(role), fold=1)
    assert model_score("m", role, (0, 1), tmp_path, CLASSES)  # whole again: scored


@pytest.mark.parametrize("case", ["truncated", "not UTF-8", "a list", "no metrics"])
def test_cv_command_with_a_damaged_summary(case: str, tiny_cache: Path, tmp_path: Path, fails_cleanly) -> None:
    content = json.dumps({"n_valid": 8}).encode() if case == "no metrics" else DAMAGED[case][0]
    path = tmp_path / "models" / "seg1" / "fold0" / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    args = ["cv", "--models", str(tmp_path / "models"), "--out", str(tmp_path / "cv.json")]
    fails_cleanly(tmp_path, lambda: cloudcli_here(*args, cwd=tiny_cache), str(path), "--model seg1 --fold 0")


# ------------------------------------------------------------------------------ pseudo: meta.json


@pytest.mark.parametrize("case", [*DAMAGED, "soft a string", "soft a number"])
def test_damaged_pseudo_meta(case: str, tmp_path: Path) -> None:
    from cloudcli.data.pseudo import read_pseudo

    soft = {"soft a string": b'{"soft": "yes"}', "soft a number": b'{"soft": 1}'}
    content, words = (soft[case], "'soft' is") if case in soft else DAMAGED[case]
    (tmp_path / "meta.json").write_bytes(content)
    run = lambda: read_pseudo(tmp_path, ["a", "b"], (8, 8), CLASSES)  # noqa: E731
    expect(run, tmp_path / "meta.json", words, "rerun `dvc repro pseudo`")


def test_missing_pseudo_meta(tmp_path: Path) -> None:
    from cloudcli.data.pseudo import read_pseudo

    run = lambda: read_pseudo(tmp_path, ["a"], (8, 8), CLASSES)  # noqa: E731
    expect(run, tmp_path / "meta.json", "missing; run `dvc repro pseudo` (or `cloudcli pseudo`) first")


# ------------------------------------------------------------------- tune, export: the ensemble's meta


def ensemble_meta(vote: str = "majority") -> dict:
    levels = dict.fromkeys(CLASSES, 128) if vote == "majority" else None
    members = [{"name": n, "folder": f"pred/{n}", "role": "seg2", "pseudo": False, "levels": levels} for n in "ab"]
    meta = {"role": "ensemble", "classes": list(CLASSES), "vote": vote, "min_votes": 2, "min_votes_param": None}
    return meta | {"weights": None, "members": members}


ENSEMBLE_KEYS = [  # (change of the meta, words)
    (lambda m: m.clear(), "no 'vote'"),
    (lambda m: m.pop("members"), "no 'members'"),
    (lambda m: m.update(members={}), "'members' is an object, expected a list"),
    (lambda m: m.update(members=[]), "no members"),
    (lambda m: m.update(vote=None), "'vote' is null, expected a string"),
    (lambda m: m.update(weights=[1.0]), "2 members but 1 weights"),
    (lambda m: m.update(min_votes_param="2"), "'min_votes_param' is a string, expected a whole number"),
    (lambda m: m["members"].__setitem__(1, "b"), "members[1] is a string, expected an object"),
    (lambda m: m["members"][0].pop("folder"), "members[0]: no 'folder'"),
    (lambda m: m["members"][1].update(name=["b"]), "members[1]: 'name' is a list, expected a string"),
    (lambda m: m["members"][0].update(pseudo="no"), "members[0]: 'pseudo' is a string, expected true/false"),
    (lambda m: m["members"][0].update(levels=None), "members[0]: 'levels' is null, expected an object"),
    (lambda m: m["members"][0]["levels"].pop("Fish"), "members[0]: levels are not a whole number for each of"),
    (lambda m: m["members"][0]["levels"].update(Fish="128"), "members[0]: levels are not a whole number"),
    (lambda m: m["members"][0].update(levels=dict(reversed(m["members"][0]["levels"].items()))), "in order"),
    (lambda m: m.update(min_votes=1.5), "'min_votes' is a number, expected a whole number or null"),
]


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_ensemble_meta(case: str, tmp_path: Path) -> None:
    from cloudcli.data.predictions import read_ensemble

    content, words = DAMAGED[case]
    (tmp_path / "meta.json").write_bytes(content)
    expect(lambda: read_ensemble(tmp_path), tmp_path / "meta.json", words, "rerun `dvc repro ensemble`")


@pytest.mark.parametrize(("change", "words"), ENSEMBLE_KEYS)
def test_ensemble_meta_without_what_tune_votes_with(change, words: str, tmp_path: Path) -> None:
    from cloudcli.data.predictions import read_ensemble

    meta = ensemble_meta()
    change(meta)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    expect(lambda: read_ensemble(tmp_path), tmp_path / "meta.json", words, "rerun `dvc repro ensemble`")


@pytest.mark.parametrize("vote", ["majority", "mean"])
def test_an_ensembles_meta_as_ensemble_writes_it(vote: str, tmp_path: Path) -> None:
    from cloudcli.data.predictions import read_ensemble

    (tmp_path / "meta.json").write_text(json.dumps(ensemble_meta(vote)))
    assert read_ensemble(tmp_path) == ensemble_meta(vote)


def test_export_reads_the_ensembles_meta(tiny_cache: Path, tmp_path: Path) -> None:
    """export names the vote's members from the ensemble's meta.json: damaged, it is named; whole,
    export goes on to the checkpoints."""
    from cloudcli.bundle.export import Sources, export
    from cloudcli.config import InferConfig
    from cloudcli.data.predictions import THRESHOLD_KEYS

    meta = ensemble_meta()
    for m in meta["members"]:
        m["folder"] = str(tmp_path / "pred" / "base" / m["name"])
        Path(m["folder"]).mkdir(parents=True)
        (Path(m["folder"]) / "meta.json").write_text(json.dumps({"model": m["name"], "role": "seg2"} | ONE_FOLD))
    (tmp_path / "pred" / "base" / "seg1").mkdir()
    (tmp_path / "pred" / "base" / "seg1" / "meta.json").write_text(
        json.dumps({"model": "seg1", "role": "seg1"} | ONE_FOLD)
    )
    chosen = dict.fromkeys(THRESHOLD_KEYS) | {"seg1": str(tmp_path / "pred" / "base" / "seg1"), "class_score": "none"}
    (tmp_path / "t.json").write_text(json.dumps(chosen | {"shape": str(tmp_path / "ens"), "shape_is_ensemble": True}))
    (tmp_path / "ens").mkdir()
    sources = Sources(tmp_path / "t.json", tmp_path / "models", tiny_cache / "artifacts" / "preprocessed")
    run = lambda: export(sources, InferConfig(("none",), 4, "cpu", "fp32", False, 0), tmp_path / "bundle")  # noqa: E731
    for damaged in ({**meta, "min_votes": "2"}, {**meta, "members": [*meta["members"][:1], None]}):
        (tmp_path / "ens" / "meta.json").write_text(json.dumps(damaged))
        expect(run, tmp_path / "ens" / "meta.json", "rerun `dvc repro ensemble`")
    (tmp_path / "ens" / "meta.json").write_text(json.dumps(meta))
    expect(run, tmp_path / "models" / "a" / "fold0" / "best.pt", "missing; train it")  # the first member
    assert not (tmp_path / "bundle").exists()


ONE_FOLD = {"folds": [0], "tta": ["none"]}


# ---------------------------------------------------------------------------------- bundle.json


def spec() -> dict:
    """A bundle.json as export writes it (two segmentation models voting, a classifier)."""
    rule = {"level": 128, "min_area": 10, "min_component": 0, "gate_threshold": 0.5, "shape_level": 100}
    model = {"role": "seg2", "folds": [0], "tta": ["none"], "settings": {"input_size": [32, 64]}}
    return {
        "format": "cloudcli-bundle",
        "format_version": 1,
        "classes": list(CLASSES),
        "input": {"kind": "kaggle_clouds", "raw_size": [64, 96], "cache_size": [32, 64], "score_size": [32, 48]}
        | {"channels": 3},
        "infer": {"batch_size": 4, "precision": "fp32", "stack_tta": False},
        "models": {"seg1": model | {"role": "seg1"}, "seg2": model, "classifier": model | {"role": "classifier"}},
        "pipeline": {
            "seg1": "seg1",
            "shape": {"vote": "majority", "members": ["seg1", "seg2"], "levels": [None, None], "min_votes": 2}
            | {"weights": None},
            "classifier": "classifier",
            "class_score": "classifier",
            "top_k": 20,
            "at_least_one": False,
            "rules": dict.fromkeys(CLASSES, rule),
        },
    }


BUNDLE_KEYS = [  # (change of bundle.json, words)
    (lambda s: s.clear(), "bundle.json: no 'classes'"),
    (lambda s: s.pop("models"), "bundle.json: no 'models'"),
    (lambda s: s.update(classes="Fish"), "bundle.json: 'classes' is a string, expected a list"),
    (lambda s: s["input"].pop("raw_size"), "bundle.json: input: no 'raw_size'"),
    (lambda s: s["input"].update(channels="3"), "input: 'channels' is a string, expected a whole number"),
    (lambda s: s["infer"].update(batch_size=None), "infer: 'batch_size' is null, expected a whole number"),
    (lambda s: s["pipeline"].pop("rules"), "pipeline: no 'rules'"),
    (lambda s: s["pipeline"].update(seg1=1), "pipeline: 'seg1' is a whole number, expected a string"),
    (lambda s: s["pipeline"].update(seg1="seg9"), "the pipeline uses 'seg9', which is not among its models"),
    (lambda s: s["pipeline"]["shape"].pop("members"), "pipeline.shape: no 'members'"),
    (lambda s: s["pipeline"].update(shape={"model": None}), "pipeline.shape: 'model' is null"),
    (lambda s: s["pipeline"].update(shape={}), "pipeline.shape: no 'members'"),
    (lambda s: s["pipeline"]["rules"].pop("Sugar"), "pipeline.rules has no whole rule of class 'Sugar'"),
    (lambda s: s["models"].update(seg2=[]), "models.seg2 is a list, expected an object"),
    (lambda s: s["models"]["seg2"].pop("folds"), "models.seg2: no 'folds'"),
    (lambda s: s["models"]["seg1"].update(settings=None), "models.seg1: 'settings' is null, expected an object"),
]


def write_bundle(folder: Path, content: bytes | dict) -> Path:
    """A bundle folder holding only bundle.json, its manifest written after it (so only the
    content is damaged, not the manifest's sha256)."""
    from cloudcli.bundle.manifest import write_manifest

    folder.mkdir(exist_ok=True)
    path = folder / "bundle.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    write_manifest(folder)
    return path


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_bundle_json(case: str, tmp_path: Path) -> None:
    from cloudcli.bundle.predictor import read_spec

    content, words = DAMAGED[case]
    path = write_bundle(tmp_path / "bundle", content)
    expect(lambda: read_spec(tmp_path / "bundle"), path, words, "export the bundle again")


@pytest.mark.parametrize(("change", "words"), BUNDLE_KEYS)
def test_bundle_json_without_what_the_predictor_reads(change, words: str, tmp_path: Path) -> None:
    from cloudcli.bundle.predictor import read_spec

    damaged = spec()
    change(damaged)
    path = write_bundle(tmp_path / "bundle", damaged)
    expect(lambda: read_spec(tmp_path / "bundle"), path, words, "export the bundle again")
    write_bundle(tmp_path / "bundle", spec())
    assert read_spec(tmp_path / "bundle") == spec()


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_bundle_manifest(case: str, tmp_path: Path) -> None:
    from cloudcli.bundle.manifest import verify

    content, words = DAMAGED[case]
    write_bundle(tmp_path / "bundle", spec())
    (tmp_path / "bundle" / "manifest.json").write_bytes(content)
    expect(lambda: verify(tmp_path / "bundle"), tmp_path / "bundle" / "manifest.json", words, "export the bundle")


def test_damaged_bundle_weights(tmp_path: Path) -> None:
    """A fold's .pt in the bundle, truncated and its manifest rewritten: the file is named."""
    from cloudcli.bundle.predictor import Predictor

    folder = tmp_path / "bundle"
    (folder / "models" / "seg1").mkdir(parents=True)
    (folder / "models" / "seg1" / "fold0.pt").write_bytes(b"PK\x03\x04 truncated")
    only_seg1 = spec()
    only_seg1["models"] = {"seg1": only_seg1["models"]["seg1"]}
    only_seg1["pipeline"] |= {"shape": None, "classifier": None}
    write_bundle(folder, only_seg1)
    expect(lambda: Predictor.load(folder, "cpu"), folder / "models/seg1/fold0.pt", "not a readable checkpoint")


# --------------------------------------------------------------------- draw: the cache's meta.json


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_cache_meta_for_draw(case: str, tmp_path: Path) -> None:
    from cloudcli.show import cache_band_limits

    content, words = DAMAGED[case]
    (tmp_path / "meta.json").write_bytes(content)
    expect(lambda: cache_band_limits(tmp_path / "meta.json"), tmp_path / "meta.json", words, "dvc repro preprocess")


@pytest.mark.parametrize("limits", ["0 255", [0, 255], [[0, 255, 9]], [["a", "b"]], {"r": [0, 255]}])
def test_band_limits_of_another_shape(limits, tmp_path: Path) -> None:
    from cloudcli.show import cache_band_limits

    (tmp_path / "meta.json").write_text(json.dumps({"band_limits": limits}))
    expect(lambda: cache_band_limits(tmp_path / "meta.json"), tmp_path / "meta.json", "band_limits is not a list")


def test_band_limits_of_a_cache(tmp_path: Path) -> None:
    from cloudcli.show import cache_band_limits

    assert cache_band_limits(tmp_path / "meta.json") is None  # no cache yet: draw fits its own
    (tmp_path / "meta.json").write_text(json.dumps({"classes": list(CLASSES)}))
    assert cache_band_limits(tmp_path / "meta.json") is None  # 8-bit images: no limits
    (tmp_path / "meta.json").write_text(json.dumps({"band_limits": [[10, 4000], [0, 255.5]]}))
    assert cache_band_limits(tmp_path / "meta.json") == [[10, 4000], [0, 255.5]]


# ------------------------------------------------------------- predictions, thresholds and the cache


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_prediction_and_cache_json(case: str, tmp_path: Path) -> None:
    from cloudcli.data.cache import open_cache
    from cloudcli.data.predictions import read_meta, read_thresholds

    content, words = DAMAGED[case]
    save_model(tmp_path / "pred", ["a"], "seg1", probs=None, classifier_probs=None)
    (tmp_path / "pred" / "meta.json").write_bytes(content)
    expect(lambda: read_meta(tmp_path / "pred"), tmp_path / "pred" / "meta.json", words, "rerun `dvc repro infer`")
    (tmp_path / "t.json").write_bytes(content)
    expect(lambda: read_thresholds(tmp_path / "t.json"), tmp_path / "t.json", words, "rerun `dvc repro tune`")
    write_cache(tmp_path / "cache", ["a"], ["b"])
    (tmp_path / "cache" / "train" / "meta.json").write_bytes(content)
    meta = tmp_path / "cache" / "train" / "meta.json"
    expect(lambda: open_cache(tmp_path / "cache"), meta, words, "rerun `dvc repro preprocess`")


# --------------------------------------------------------------------- checkpoints and their settings

SETTINGS = {"role": "seg1", "network": {"arch": "unet"}, "classes": list(CLASSES)}
CHECKPOINTS = {  # case -> (best.pt's dict, or its bytes; words)
    "truncated file": (b"PK\x03\x04 cut short", "not a readable checkpoint (PytorchStreamReader failed"),
    "empty file": (b"", "not a readable checkpoint (empty)"),
    "JSON, not a checkpoint": (b"{}", "not a readable checkpoint (Weights only load failed)"),
    "no weights": ({"settings": json.dumps(SETTINGS)}, "not a cloudcli checkpoint (no model weights)"),
    "a tensor": (torch.zeros(2), "not a cloudcli checkpoint (no model weights)"),
    "no settings": ({"model": {}}, "no training settings"),
    "settings not a string": ({"model": {}, "settings": SETTINGS}, "no training settings"),
    "settings truncated": ({"model": {}, "settings": json.dumps(SETTINGS)[:30]}, "settings: not valid JSON"),
    "settings a list": ({"model": {}, "settings": "[]"}, "settings: not a JSON object (a list)"),
    "settings without network": (
        {"model": {}, "settings": json.dumps({**SETTINGS, "network": None})},
        "settings: 'network' is null, expected an object",
    ),
    "settings without classes": (
        {"model": {}, "settings": json.dumps({"role": "seg1", "network": {}})},
        "settings: no 'classes'",
    ),
}


def write_checkpoint(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_damaged_checkpoint_for_infer(case: str, tmp_path: Path) -> None:
    from cloudcli.engine.predict import load_fold_net

    content, words = CHECKPOINTS[case]
    path = write_checkpoint(tmp_path / "seg1" / "fold0" / "best.pt", content)
    expect(lambda: load_fold_net(path.parent, torch.device("cpu")), path, words, "retrain it (dvc repro train)")


@pytest.mark.parametrize("case", ["truncated file", "no weights", "settings truncated", "settings without classes"])
def test_damaged_checkpoint_for_export(case: str, tiny_cache: Path, tmp_path: Path) -> None:
    """export reads each fold's settings: the damaged best.pt is named, no bundle is written."""
    from cloudcli.bundle.export import Sources, export
    from cloudcli.config import InferConfig
    from cloudcli.data.predictions import THRESHOLD_KEYS

    pred = tmp_path / "pred" / "base" / "seg1"
    pred.mkdir(parents=True)
    (pred / "meta.json").write_text(json.dumps({"model": "seg1", "role": "seg1", "folds": [0], "tta": ["none"]}))
    chosen = dict.fromkeys(THRESHOLD_KEYS) | {"seg1": str(pred), "shape_is_ensemble": False, "class_score": "none"}
    (tmp_path / "t.json").write_text(json.dumps(chosen))
    content, words = CHECKPOINTS[case]
    path = write_checkpoint(tmp_path / "models" / "seg1" / "fold0" / "best.pt", content)
    sources = Sources(tmp_path / "t.json", tmp_path / "models", tiny_cache / "artifacts" / "preprocessed")
    infer = InferConfig(("none",), 4, "cpu", "fp32", False, 0)
    expect(lambda: export(sources, infer, tmp_path / "bundle"), path, words, "retrain it")
    assert not (tmp_path / "bundle").exists()


def test_message_has_no_traceback_words(tmp_path: Path) -> None:
    """The messages stay one short line: no exception class names, no newlines."""
    path = write_checkpoint(tmp_path / "best.pt", b"\x80\x02 garbage")
    from cloudcli.engine.checkpoint import load

    message = expect(lambda: load(path), path, "not a readable checkpoint")
    assert not re.search(r"Error|Traceback", message) and len(message) < 300, message


BEST = {"epoch": 2, "best_value": 0.5, "best_epoch": 1, "best_metrics": {}}


@pytest.mark.parametrize(
    "best", ["{", "[]", json.dumps(BEST | {"epoch": "one"}), json.dumps(BEST | {"best_value": None}), '{"epochs": 3}']
)
def test_damaged_training_state(best: str, tmp_path: Path) -> None:
    """last.pt whose best-epoch record is damaged: one error naming it, saying how to start afresh."""
    from cloudcli.engine.checkpoint import resume
    from cloudcli.errors import CloudcliError

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state()}
    path = write_checkpoint(tmp_path / "last.pt", state | {"config_sha1": "h", "best": best, "curves": {}})
    torch.save(torch.load(path, weights_only=True) | {"scheduler": None, "scaler": None, "ema": None}, path)
    with pytest.raises(CloudcliError) as caught:
        resume(path, "h", net, opt, None, None, None)
    message = str(caught.value)
    assert message.startswith(f"{path}: damaged training state") and "--restart" in message and "\n" not in message
