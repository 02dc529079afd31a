"""End to end: the real dvc.yaml in a temporary git repository with a tiny demo dataset."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO, cloudcli, tiny_params

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def run(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def git_dvc_repo(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    run("git", "init", "-q", cwd=path)
    run("git", "config", "user.email", "test@example.com", cwd=path)
    run("git", "config", "user.name", "test", cwd=path)
    run("dvc", "init", "-q", cwd=path)
    run("dvc", "config", "core.analytics", "false", cwd=path)
    return path


def test_dvc_repro_runs_the_stages(tiny_demo, tmp_path) -> None:
    repo = git_dvc_repo(tmp_path / "repo")
    shutil.copytree(tiny_demo, repo / "data")
    shutil.copy(REPO / "dvc.yaml", repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(fold={"n_splits": 3})))
    run("dvc", "add", "-q", "data", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "tiny", cwd=repo)
    out = run("dvc", "repro", cwd=repo)
    assert "Running stage 'preprocess'" in out and "Running stage 'fold'" in out
    assert "up to date" in run("dvc", "status", cwd=repo)
    folds = pd.read_csv(repo / "artifacts/folds.csv")
    assert len(folds) == 24 and folds["image_id"].is_unique and set(folds["fold"]) == {0, 1, 2}
    meta = json.loads((repo / "artifacts/preprocessed/meta.json").read_text())
    assert meta["arrays"]["train_images"] == [24, 32, 64, 3]
    metrics = json.loads(run("dvc", "metrics", "show", "--json", cwd=repo))
    assert json.dumps(metrics).count('"n_train": 24') == 1

    # A params change re-runs only the stage that declares it.
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "baseline", cwd=repo)
    out = run("dvc", "exp", "run", "-S", "fold.seed=7", cwd=repo)
    assert "Running stage 'fold'" in out and "Running stage 'preprocess'" not in out


def test_default_demo_data_matches_committed_data_dvc(tmp_path) -> None:
    """A fresh clone regenerating the demo data gets exactly the dataset data.dvc tracks."""
    repo = git_dvc_repo(tmp_path / "repo")
    cloudcli("demo-data", "data", cwd=repo)
    shutil.copy(REPO / "data.dvc", repo)
    run("git", "add", "data.dvc", cwd=repo)
    run("git", "commit", "-qm", "data", cwd=repo)
    run("dvc", "commit", "-q", "--force", "data.dvc", cwd=repo)  # hashes the workspace, rewrites on mismatch
    diff = subprocess.run(["git", "diff", "--exit-code", "data.dvc"], cwd=repo, capture_output=True, text=True)
    assert diff.returncode == 0, f"regenerated demo data differs from data.dvc:\n{diff.stdout}"
    assert "up to date" in run("dvc", "status", "data.dvc", cwd=repo)
