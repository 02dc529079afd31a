"""End to end: the real dvc.yaml in a temporary git repository with a tiny demo dataset."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import procs
import pytest
import yaml
from dvc_repo import copy_of, git_dvc_repo, ran, run
from helpers import REPO, cloudcli, load_maps

pytestmark = pytest.mark.slow


def test_cloudcli_run_reproduces_the_pipeline_as_dvc_repro_would(baseline, tmp_path) -> None:
    """The baseline ran every stage of a fresh repository with `cloudcli run --workers 2`: dvc.lock
    records each of them, and a following `dvc repro` runs none."""
    repo = copy_of(baseline, tmp_path)
    stages = {r["stage"] for r in json.loads((repo / ".cloudcli/run/last.json").read_text())}
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == stages
    assert ran(run("dvc", "repro", cwd=repo)) == set() and "up to date" in run("dvc", "status", cwd=repo)
    assert stages == {
        "preprocess",
        "fold",
        "train@seg1-0",
        "train@seg2-0",
        "train@seg2_unet-0",
        "train@classifier-0",
        "cv",
        "infer@seg1",
        "infer@seg2",
        "infer@seg2_unet",
        "infer@classifier",
        "pseudo@r1",
        "train_pl@r1-seg2_pl-0",
        "infer_pl@r1-seg2_pl",
        "ensemble",
        "tune",
        "submit",
        "report_data",
        "report_predictions",
        "report_labels",
    }
    run("dvc", "checkout", "--relink", cwd=repo)  # outputs become links to the cache (.dvc/config cache.type)
    if "reflink" not in re.search(r"Cache types: (.*)", run("dvc", "version", cwd=repo)).group(1):
        best = repo / "models/seg1/fold0/best.pt"  # (a reflink is a plain file: nothing to check)
        assert best.is_symlink() or best.stat().st_nlink > 1  # one copy on disk, not two
    kept = pd.read_csv(repo / "pseudo/r1/fold0/images.csv")  # fold 0's set: the only fold trained
    assert len(kept) >= 1 and set(kept["image_id"]) <= set(
        pd.read_csv(repo / "data/sample_submission.csv")["Image_Label"].str.rsplit("_", n=1).str[0]
    )
    trained = json.loads((repo / "models/r1/seg2_pl/fold0/config.json").read_text())
    base = json.loads((repo / "models/seg2/fold0/config.json").read_text())
    assert trained["pseudo"]["images"] == len(kept) and "pseudo" not in base
    assert trained["n_valid"] == base["n_valid"] and trained["valid_ids_sha1"] == base["valid_ids_sha1"]
    members = json.loads((repo / "ensemble/meta.json").read_text())["members"]
    assert [(m["name"], m["folder"], m["pseudo"]) for m in members] == [
        ("seg2", "predictions/base/seg2", False),
        ("seg2_unet", "predictions/base/seg2_unet", False),
        ("seg2_pl@r1", "predictions/r1/seg2_pl", True),
    ]
    labels = json.loads((repo / "metrics/pseudo/r1.json").read_text())
    assert "labels" in labels["folds"]["fold0"]  # scored on the demo's test_truth.csv
    assert labels["labels_from"] == "fold" and not labels["leak_free"]  # one trained fold: rules on its own rows
    assert "valid submission, 24 rows" in cloudcli("submit", "--check", "submission.csv", cwd=repo).stdout
    assert 0 <= json.loads((repo / "metrics/test.json").read_text())["dice"] <= 1  # the demo's true test score
    assert load_maps(repo / "predictions/base/seg2", "test").shape == (6, 4, 32, 48)
    tuned = json.loads((repo / "metrics/tune.json").read_text())
    n_oof = len(pd.read_csv(repo / "predictions/base/seg1/oof.csv"))
    assert tuned["after"]["n_rows"] == 4 * n_oof
    steps = json.loads(run("dvc", "metrics", "show", "--json", "metrics/stages", cwd=repo))
    files = [Path(f).name for f in next(iter(steps.values()))["data"]]
    assert sorted(files) == [
        "1_seg1.json",
        "2_seg2.json",
        "3_vote.json",
        "4_seg1_gate.json",
        "5_classifier.json",
        "6_pseudo_labels.json",
    ]
    table = run("dvc", "metrics", "show", "metrics/stages", cwd=repo)  # reads as the per-step table
    assert table.index("1_seg1") < table.index("5_classifier") < table.index("6_pseudo") and "dice_non_empty" in table
    assert "up to date" in run("dvc", "status", cwd=repo)
    folds = pd.read_csv(repo / "artifacts/folds.csv")
    assert len(folds) == 24 and folds["image_id"].is_unique and set(folds["fold"]) == {0, 1, 2}
    meta = json.loads((repo / "artifacts/preprocessed/train/meta.json").read_text())
    assert meta["arrays"]["train_images"] == [24, 32, 64, 3]
    metrics = json.loads(run("dvc", "metrics", "show", "--json", cwd=repo))
    assert json.dumps(metrics).count('"n_train": 24') == 1
    cv = json.loads((repo / "metrics/cv.json").read_text())
    assert (
        set(cv) == {"seg1", "seg2", "seg2_unet", "classifier", "seg2_pl@r1", "all_empty"}
        and 0 <= cv["seg1"]["dice"] <= 1
    )
    assert json.loads(run("dvc", "plots", "show", "--json", cwd=repo))  # DVCLive curves are declared plots
    assert run("git", "status", "--porcelain", "--untracked-files=no", cwd=repo) == ""  # relinking: no change

    # A change of seg2's loss retrains seg2 alone.
    out = run("dvc", "exp", "run", "-S", "models.seg2.loss.dice_pos=0.5", cwd=repo)
    relabelled = {"train_pl@r1-seg2_pl-0", "infer_pl@r1-seg2_pl"}  # when seg2's new masks change the pseudo labels
    after_labels = {"pseudo@r1", "ensemble", "tune", "submit", "report_predictions"}
    # report_labels reads predictions/base (seg1's maps alone, but DVC sees the folder change)
    assert ran(out) - relabelled == {"train@seg2-0", "infer@seg2", "cv", "report_labels"} | after_labels
    # What would re-run, without running it: only the stages that read the changed params.
    seg2_pl = stale(repo, lambda p: p["models"]["seg2_pl"]["loss"].update(dice_pos=0.5))
    assert seg2_pl == {"train_pl@r1-seg2_pl-0", "cv"}  # cv reads `models` (the roles) too
    assert stale(repo, lambda p: p["tune"].update(min_areas=[0, 10])) == {"tune", "report_predictions"}  # no training
    assert stale(repo, lambda p: p["ensemble"].update(vote="mean")) == {"ensemble"}

    # A second pseudo-label round, relabelled with round 1's seg2_pl: its own stages, and the vote
    # takes round 2's seg2_pl; round 1 stays as it was.
    out = run(
        "dvc", "exp", "run", "-S", "++pseudo_rounds.r2={after: r1, relabel: {seg2: seg2_pl}}",
        "-S", "ensemble.members=[seg2,seg2_unet,seg2_pl@r2]", cwd=repo,
    )  # fmt: skip
    assert ran(out) == {"pseudo@r2", "train_pl@r2-seg2_pl-0", "infer_pl@r2-seg2_pl", "cv"} | after_labels - {
        "pseudo@r1"
    }
    labels = json.loads((repo / "metrics/pseudo/r2.json").read_text())
    assert (
        labels["after"] == "r1"
        and labels["relabel"] == {"seg2": "seg2_pl"}
        and labels["folds"]["fold0"]["images"] == len(kept)
    )
    made_by = json.loads((repo / "pseudo/r2/meta.json").read_text())
    assert made_by["shape"] == ["predictions/r1/seg2_pl", "predictions/base/seg2_unet"]
    members = json.loads((repo / "ensemble/meta.json").read_text())["members"]
    assert members[-1]["folder"] == "predictions/r2/seg2_pl" and members[-1]["pseudo"]
    assert {"seg2_pl@r1", "seg2_pl@r2"} <= set(json.loads((repo / "metrics/cv.json").read_text()))
    assert "up to date" in run("dvc", "status", cwd=repo)

    # Pseudo labels off: no pseudo stage is left in the pipeline, and the vote is the base models'.
    out = run(
        "dvc", "exp", "run", "-S", "~pseudo_rounds.r1", "-S", "~pseudo_rounds.r2", "-S", "ensemble.members=[seg2,seg2_unet]",
        cwd=repo,
    )  # fmt: skip
    assert ran(out) == {"cv", "ensemble", "tune", "submit", "report_predictions"}
    stages = run("dvc", "stage", "list", "--name-only", cwd=repo).split()
    assert not [s for s in stages if s.startswith(("pseudo", "train_pl", "infer_pl"))] and "train@seg1-0" in stages
    assert set(json.loads((repo / "metrics/cv.json").read_text())) == {
        "seg1",
        "seg2",
        "seg2_unet",
        "classifier",
        "all_empty",
    }


def stale(repo: Path, change) -> set[str]:
    """The stages `dvc status` says a params change makes stale (params.yaml restored after)."""
    committed = (repo / "params.yaml").read_text()
    params = yaml.safe_load(committed)
    change(params)
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return set(json.loads(run("dvc", "status", "--json", cwd=repo)))
    finally:
        (repo / "params.yaml").write_text(committed)


def test_exp_run_with_another_encoder_and_fold_seed(baseline, tmp_path) -> None:
    """The shared encoder makes every training stale, the fold seed re-splits (never re-preprocesses):
    checked with dvc status. A variant with another encoder for seg1 alone retrains seg1 alone, and
    exp show, metrics diff and plots diff set it beside the committed baseline."""
    repo = copy_of(baseline, tmp_path)
    every = {"train@seg1-0", "train@seg2-0", "train@seg2_unet-0", "train@classifier-0", "train_pl@r1-seg2_pl-0"}
    encoder = stale(repo, lambda p: p["network"].update(encoder="tu-mobilenetv3_small_100"))
    assert {s for s in encoder if s.startswith("train")} == every
    assert stale(repo, lambda p: p["fold"].update(seed=7)) == {"fold"}  # the trainings follow its new folds
    summary = repo / "models/seg1/fold0/summary.json"
    before = json.loads(summary.read_text())["metrics"]
    out = run(
        "dvc", "exp", "run", "-n", "mobilenet", "-S", "++models.seg1.network={encoder: tu-mobilenetv3_small_100}",
        cwd=repo,
    )  # fmt: skip
    assert {s for s in ran(out) if s.startswith("train@")} == {"train@seg1-0"} and {"infer@seg1", "cv"} <= ran(out)
    config = json.loads((repo / "models/seg1/fold0/config.json").read_text())
    assert config["network"]["encoder"] == "tu-mobilenetv3_small_100"
    after = json.loads(summary.read_text())["metrics"]
    assert after["loss"] != before["loss"]  # another network, other validation numbers
    shown = json.loads(run("dvc", "exp", "show", "--json", cwd=repo))
    assert "mobilenet" in json.dumps(shown) and "tu-mobilenetv3_small_100" in json.dumps(shown)
    diff = json.loads(run("dvc", "metrics", "diff", "--json", cwd=repo))
    assert "metrics/cv.json" in diff

    # dvc plots diff: the variant's training and threshold curves next to the committed baseline's
    plots = json.loads(run("dvc", "plots", "diff", "HEAD", "--json", cwd=repo))["data"]
    for curve in ("tune/curves.csv", "dvclive/seg1/fold0/plots/metrics/val/loss.tsv"):
        assert set(plots[curve][0]["revisions"]) == {"HEAD", "workspace"}, curve
    worst = [k for k in plots if k.startswith("reports/predictions/ensemble/worst/")]  # overlays, side by side
    assert {r for k in worst for image in plots[k] for r in image["revisions"]} == {"HEAD", "workspace"}


def test_adding_a_fold_or_a_model_runs_only_their_stages(baseline, tmp_path) -> None:
    """A new fold or a new model leaves every trained (model, fold) up to date: `dvc status` lists
    only the new pairs' training. The new model is also run: it alone trains and predicts."""
    repo = copy_of(baseline, tmp_path)
    fold = stale(repo, lambda p: p["cv"].update(folds=[0, 1]))
    base = {f"train@{m}-1" for m in ("seg1", "seg2", "seg2_unet", "classifier")}
    assert {s for s in fold if s.startswith("train")} == base | {"train_pl@r1-seg2_pl-1"}
    assert {"infer@seg1", "infer@classifier"} <= fold  # infer reads cv.folds: the OOF rows of fold 1 join

    def add_model(p: dict) -> None:
        p["models"]["seg1_b"] = {"role": "seg1", "loss": {"bce": 1.0}, "network": {"arch": "Unet"}}
        p["cv"]["models"].append("seg1_b")

    assert {s for s in stale(repo, add_model) if s.startswith(("train", "infer"))} == {"train@seg1_b-0", "infer@seg1_b"}
    out = run("dvc", "exp", "run", "-S", "++models.seg1_b={role: seg1, loss: {bce: 1.0}, network: {arch: Unet}}",
              "-S", "cv.models=[seg1,seg2,seg2_unet,classifier,seg1_b]", cwd=repo)  # fmt: skip
    assert {s for s in ran(out) if s.startswith(("train", "infer"))} == {"train@seg1_b-0", "infer@seg1_b"}
    assert set(pd.read_csv(repo / "predictions/base/seg1_b/oof.csv")["fold"]) == {0}
    assert set(json.loads((repo / "metrics/cv.json").read_text())) >= {"seg1", "seg1_b"}


def test_default_demo_data_matches_committed_data_dvc(tmp_path) -> None:
    """A fresh clone regenerating the demo data gets exactly the dataset data.dvc tracks."""
    repo = git_dvc_repo(tmp_path / "repo")
    cloudcli("demo-data", "data", cwd=repo)
    shutil.copy(REPO / "data.dvc", repo)
    run("git", "add", "data.dvc", cwd=repo)
    run("git", "commit", "-qm", "data", cwd=repo)
    run("dvc", "commit", "-q", "--force", "data.dvc", cwd=repo)  # hashes the workspace, rewrites on mismatch
    diff = procs.run(["git", "diff", "--exit-code", "data.dvc"], repo, timeout=60)
    assert diff.returncode == 0, f"regenerated demo data differs from data.dvc:\n{diff.stdout}"
    assert "up to date" in run("dvc", "status", "data.dvc", cwd=repo)


def test_new_test_images_retrain_nothing(baseline, tmp_path) -> None:
    """Replacing a test image re-runs preprocess; its training part comes out byte for byte the same,
    so no `train@` is stale while inference and everything after it are (the pseudo-label models
    train on test images: theirs are stale too)."""
    import cv2

    repo = copy_of(baseline, tmp_path)
    image = sorted((repo / "data/test_images").glob("*.jpg"))[0]
    cv2.imwrite(str(image), cv2.imread(str(image))[::-1].copy())  # another test image under the same name
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["preprocess"]["outs"]
    assert ran(run("dvc", "repro", "preprocess", cwd=repo)) == {"preprocess"}
    relock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["preprocess"]["outs"]
    digests = [{o["path"]: o["md5"] for o in outs} for outs in (lock, relock)]
    assert digests[0]["artifacts/preprocessed/train"] == digests[1]["artifacts/preprocessed/train"]
    assert digests[0]["artifacts/preprocessed/test"] != digests[1]["artifacts/preprocessed/test"]
    stale = set(json.loads(run("dvc", "status", "--json", cwd=repo)))
    assert not {s for s in stale if s.startswith("train@")}
    assert {"infer@seg1", "infer@classifier", "pseudo@r1", "train_pl@r1-seg2_pl-0", "submit"} <= stale
