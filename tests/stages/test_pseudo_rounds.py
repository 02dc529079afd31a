"""Iterative pseudo labelling: rounds 2..N relabel with the previous round's pseudo models."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cloudcli.config import load_params, resolve_model
from cloudcli.data.cache import open_cache
from cloudcli.data.predictions import model_folder
from cloudcli.errors import DataError
from cloudcli.io import write_json
from cloudcli.stages import infer, pseudo, pseudo_rounds, train

KEPT = 4  # test images the crafted seg1 maps make confident (the first four)


def write_predictions(folder: Path, ids: list[str], folds: list[int], oof: np.ndarray, test_ids, test) -> None:
    """A segmentation model's prediction folder, as infer writes it."""
    folder.mkdir(parents=True)
    np.save(folder / "oof.npy", oof)
    np.save(folder / "test.npy", test)
    pd.DataFrame({"image_id": ids, "fold": folds}).to_csv(folder / "oof.csv", index=False)
    pd.DataFrame({"image_id": test_ids}).to_csv(folder / "test.csv", index=False)
    write_json(folder / "meta.json", {"role": "seg"})


@pytest.fixture(scope="module")
def round1(tiny_cache, tmp_path_factory):
    """Base predictions (crafted seg1 and seg2), and round 1 run for real: pseudo, train_pl, infer_pl."""
    root = tmp_path_factory.mktemp("rounds")
    p = load_params(tiny_cache / "params.yaml")
    p = dataclasses.replace(
        p,
        train=dataclasses.replace(p.train, epochs=1),
        cv=dataclasses.replace(p.cv, folds=(0,)),
        pseudo=dataclasses.replace(p.pseudo, shape=("seg2",), classifier=None, rule="pixels"),
        pseudo_rounds=dataclasses.replace(p.pseudo_rounds, relabel={"seg2": "seg2_pl"}),
    )
    cache_dir, folds_csv = tiny_cache / "artifacts/preprocessed", tiny_cache / "artifacts/folds.csv"
    cache = open_cache(cache_dir)
    fold_of = pd.read_csv(folds_csv).set_index("image_id")["fold"]
    ids = [i for i in cache.train["image_id"] if fold_of[i] == 0]
    test_ids = list(cache.test["image_id"])
    size = tuple(cache.meta["arrays"]["train_truth"][1:3])
    rng = np.random.default_rng(3)
    truth = cache.array("train_truth")[[list(cache.train["image_id"]).index(i) for i in ids]]
    for name in ("seg1", "seg2"):
        inside = np.stack([(truth & (1 << k)) != 0 for k in range(4)], 1)
        oof = np.where(inside, rng.integers(150, 256, inside.shape), rng.integers(0, 120, inside.shape))
        test = rng.choice(np.array([0, 255], np.uint8), (len(test_ids), 4, *size))
        test[KEPT:] = 128  # unsure everywhere: never kept by the pixel rule
        write_predictions(root / "predictions" / name, ids, [0] * len(ids), oof.astype(np.uint8), test_ids, test)
    first = root / "pseudo"
    pseudo.run(p.pseudo, root / "predictions", cache_dir, first / "labels", root / "metrics/pseudo.json")
    spec = resolve_model("seg2_pl", p.model, p.train, p.models)
    out = first / "models/seg2_pl/fold0"
    train.run(spec, p.augment, cache_dir, folds_csv, 0, out, out / "dvclive", pseudo=first / "labels")
    infer.run("seg2_pl", p.infer, p.cv, first / "models", cache_dir, folds_csv, first / "predictions/seg2_pl")
    return root, p


def run_rounds(tiny_cache, root: Path, p, rounds: int) -> dict:
    p = dataclasses.replace(p, pseudo_rounds=dataclasses.replace(p.pseudo_rounds, rounds=rounds))
    return pseudo_rounds.run(
        p,
        root / "predictions",
        root / "pseudo",
        tiny_cache / "artifacts/preprocessed",
        tiny_cache / "artifacts/folds.csv",
        root / "pseudo/rounds",
        root / "metrics/pseudo_rounds.json",
    )


def test_rounds_relabel_with_the_previous_rounds_models_and_resume(tiny_cache, round1, tmp_path) -> None:
    root, p = round1
    first, out = root / "pseudo", root / "pseudo/rounds"
    report = run_rounds(tiny_cache, root, p, 3)

    assert sorted(x.name for x in out.iterdir()) == ["meta.json", "r2", "r3"]
    for r, source in ((2, first / "predictions/seg2_pl"), (3, out / "r2/predictions/seg2_pl")):
        meta = json.loads((out / f"r{r}/labels/meta.json").read_text())
        assert meta["seg1"] == str(root / "predictions/seg1") and meta["shape"] == [str(source)]
        # the round's labels are exactly what the labeller makes from those sources
        again = tmp_path / f"again{r}"
        sources = pseudo.Labellers(root / "predictions/seg1", (source,), None)
        pseudo.label(p.pseudo, sources, tiny_cache / "artifacts/preprocessed", again)
        for file in ("images.csv", "masks.npy", "labels.csv"):
            assert (again / file).read_bytes() == (out / f"r{r}/labels" / file).read_bytes(), (r, file)
        assert meta["report"]["images"] == KEPT
        config = json.loads((out / f"r{r}/models/seg2_pl/fold0/config.json").read_text())
        assert config["pseudo"]["folder"] == str(out / f"r{r}/labels") and config["pseudo"]["images"] == KEPT
        oof = pd.read_csv(out / f"r{r}/predictions/seg2_pl/oof.csv")
        assert set(oof["fold"]) == {0}

    assert set(report) == {"rounds", "r1", "r2", "r3"} and report["rounds"] == 3
    for r in ("r1", "r2", "r3"):
        assert report[r]["images"] == KEPT and 0 <= report[r]["models"]["seg2_pl"]["dice"] <= 1
        assert "labels_dice" in report[r]  # the tiny demo has test_truth.csv
    assert json.loads((root / "metrics/pseudo_rounds.json").read_text()) == report
    meta = json.loads((out / "meta.json").read_text())
    assert meta["final"] == {"seg2_pl": "r3/predictions/seg2_pl"} and meta["relabel"] == {"seg2": "seg2_pl"}
    assert model_folder("seg2_pl", root / "predictions", first / "predictions") == out / "r3/predictions/seg2_pl"
    assert model_folder("seg1", root / "predictions", first / "predictions") == root / "predictions/seg1"

    # A rerun resumes: nothing retrained, nothing re-predicted.
    stamps = {
        f: f.stat().st_mtime_ns for f in out.rglob("*") if f.suffix in (".pt", ".npy") and "labels" not in f.parts
    }
    assert run_rounds(tiny_cache, root, p, 3) == report
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps

    # Fewer rounds: the later ones go, and the final predictions follow.
    run_rounds(tiny_cache, root, p, 2)
    assert sorted(x.name for x in out.iterdir()) == ["meta.json", "r2"]
    assert model_folder("seg2_pl", root / "predictions", first / "predictions") == out / "r2/predictions/seg2_pl"
    report = run_rounds(tiny_cache, root, p, 1)
    assert sorted(x.name for x in out.iterdir()) == ["meta.json"] and set(report) == {"rounds", "r1"}
    assert model_folder("seg2_pl", root / "predictions", first / "predictions") == first / "predictions/seg2_pl"


def test_labellers_replace_only_the_relabelled_models(tmp_path) -> None:
    p = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    p = dataclasses.replace(p, pseudo_rounds=dataclasses.replace(p.pseudo_rounds, relabel={"seg2": "seg2_pl"}))
    got = pseudo_rounds._labellers(p, tmp_path / "predictions", tmp_path / "r1")
    assert got == pseudo.Labellers(
        tmp_path / "predictions/seg1",
        (tmp_path / "r1/seg2_pl", tmp_path / "predictions/seg2_unet"),
        tmp_path / "predictions/cls",
    )


def test_model_folder_reads_the_rounds_meta(tmp_path) -> None:
    predictions, first = tmp_path / "predictions", tmp_path / "pseudo/predictions"
    for folder in (first / "m_pl", tmp_path / "pseudo/rounds/r2/predictions/m_pl"):
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text("{}")
    assert model_folder("m_pl", predictions, first) == first / "m_pl"  # no rounds yet
    write_json(tmp_path / "pseudo/rounds/meta.json", {"rounds": 2, "final": {"m_pl": "r2/predictions/m_pl"}})
    assert model_folder("m_pl", predictions, first) == tmp_path / "pseudo/rounds/r2/predictions/m_pl"
    shutil.rmtree(tmp_path / "pseudo/rounds/r2")
    with pytest.raises(DataError, match=r"r2/predictions/m_pl/meta.json: missing \(.*names it\); rerun `dvc repro"):
        model_folder("m_pl", predictions, first)  # never silently round 1's predictions
    (tmp_path / "pseudo/rounds/meta.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"pseudo/rounds/meta.json: not a pseudo_rounds meta.json"):
        model_folder("m_pl", predictions, first)
    shutil.rmtree(tmp_path / "pseudo")
    with pytest.raises(DataError, match=r"no predictions of 'm_pl' in .*predictions or .*pseudo; run `dvc repro`"):
        model_folder("m_pl", predictions, first)


def test_a_missing_round_one_names_the_stage(tiny_cache, tmp_path) -> None:
    p = load_params(tiny_cache / "params.yaml")
    with pytest.raises(DataError, match=r"pseudo/labels/meta.json: missing; run `dvc repro pseudo` first"):
        pseudo_rounds.run(
            p,
            tmp_path / "predictions",
            tmp_path / "pseudo",
            tiny_cache / "artifacts/preprocessed",
            tiny_cache / "artifacts/folds.csv",
            tmp_path / "pseudo/rounds",
            tmp_path / "m.json",
        )
    assert not (tmp_path / "m.json").exists()
