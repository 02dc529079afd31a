"""Shared fixtures: tiny demo datasets and params for them; no process outlives its test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import TINY, cloudcli, tiny_params

# No process outlives its test: the check after each test and the last sweep (see procs.py).
from procs import no_process_outlives_its_test, pytest_configure, pytest_sessionfinish  # noqa: F401


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Kaggle-format demo dataset (24 train, 6 test images of 64x96); copy before changing it."""
    root = tmp_path_factory.mktemp("tiny_demo")
    cloudcli(
        "demo-data",
        "data",
        "--n-train",
        "24",
        "--n-test",
        "6",
        "--height",
        str(TINY["height"]),
        "--width",
        str(TINY["width"]),
        "--workers",
        "1",
        cwd=root,
    )
    return root / "data"


@pytest.fixture
def tiny_project(tiny_demo: Path, tmp_path: Path) -> Path:
    """A working folder with the tiny dataset in data/ and a matching params.yaml."""
    shutil.copytree(tiny_demo, tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_cache(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder after `preprocess` and `fold` (3 folds) on the tiny dataset; read-only."""
    root = tmp_path_factory.mktemp("tiny_cache")
    shutil.copytree(tiny_demo, root / "data")
    params = tiny_params(fold={"n_splits": 3}, train={"epochs": 2, "batch_size": 4}, cv={"folds": [0, 1, 2]})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cloudcli("preprocess", cwd=root)
    cloudcli("fold", cwd=root)
    return root


@pytest.fixture(scope="session")
def baseline(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny git + DVC repository with the pipeline reproduced (by `cloudcli run`, two stages at
    a time) and committed; read-only: work on dvc_repo.copy_of(baseline, tmp_path)."""
    from dvc_repo import run, tiny_repo

    repo = tiny_repo(tiny_demo, tmp_path_factory.mktemp("baseline"))
    run("cloudcli", "run", "--workers", "2", cwd=repo)  # .cloudcli/run/last.json: what ran, for the end-to-end test
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "baseline", cwd=repo)
    return repo
