"""`cloudcli fold` with data.exclude on the tiny demo: the same folds, the listed images marked."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import cloudcli_here


def set_exclude(project: Path, value: str | None, ids: list[str] | None = None) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["exclude"] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if ids is not None:
        (project / "labels").mkdir(exist_ok=True)
        (project / value).write_text("# suspected bad labels\n" + "".join(f"{i}\n" for i in ids))


def test_the_folds_stay_and_the_listed_images_are_marked(tiny_project: Path) -> None:
    cloudcli_here("fold", cwd=tiny_project, check=True)
    plain = (tiny_project / "artifacts/folds.csv").read_text()
    before = pd.read_csv(tiny_project / "artifacts/folds.csv", dtype={"image_id": str})
    assert list(before.columns) == ["image_id", "fold"]  # without data.exclude: the table as it was
    out = list(before["image_id"].iloc[[0, 5, 6, 17]])
    set_exclude(tiny_project, "labels/exclude.txt", out)
    done = cloudcli_here("fold", cwd=tiny_project, check=True)
    after = pd.read_csv(tiny_project / "artifacts/folds.csv", dtype={"image_id": str})
    assert after[["image_id", "fold"]].equals(before)  # every image keeps its fold
    assert list(after.loc[after["excluded"] == 1, "image_id"]) == out and set(after["excluded"]) == {0, 1}
    report = json.loads((tiny_project / "metrics/folds.json").read_text())
    marked = after[after["excluded"] == 1].groupby("fold").size()
    assert report["excluded_per_fold"] == {str(k): int(marked.get(k, 0)) for k in range(3)}
    assert "4 excluded (labels/exclude.txt)" in " ".join((done.stdout + done.stderr).split())
    set_exclude(tiny_project, None)
    cloudcli_here("fold", cwd=tiny_project, check=True)
    assert (tiny_project / "artifacts/folds.csv").read_text() == plain


def test_excluding_a_whole_fold_names_it(tiny_project: Path) -> None:
    cloudcli_here("fold", cwd=tiny_project, check=True)
    before = pd.read_csv(tiny_project / "artifacts/folds.csv", dtype={"image_id": str})
    set_exclude(tiny_project, "labels/bad.txt", list(before.loc[before["fold"] == 2, "image_id"]))
    (tiny_project / "artifacts/folds.csv").unlink()
    done = cloudcli_here("fold", cwd=tiny_project)
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0 and "labels/bad.txt (data.exclude): excludes every image of fold 2" in text
    assert not (tiny_project / "artifacts/folds.csv").exists()


@pytest.mark.parametrize("value", ["exclude.txt", "labels/../exclude.txt", "/tmp/labels/x.txt", "labels/sub/x.txt"])
def test_the_list_lives_in_labels(tiny_project: Path, value: str) -> None:
    set_exclude(tiny_project, value)
    done = cloudcli_here("fold", cwd=tiny_project)
    text = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0 and "data.exclude" in text and "must name a file in the labels/ folder" in text
