"""Shared fixtures: tiny demo datasets and params for them; no process outlives its test.

`make test` runs the suite on one pytest-xdist worker per core (`-n auto --dist loadfile`): each
worker trains with its share of the cores (OMP_NUM_THREADS and friends, set here before torch
starts), and the session fixtures below are built once per run, by the first worker that needs
them, and shared read-only (`shared_folder`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import procs
import pytest
import yaml
from filelock import FileLock
from helpers import TINY, cloudcli, tiny_params

# No process outlives its test: the check after each test and the last sweep (see procs.py).
from procs import no_process_outlives_its_test, pytest_sessionfinish  # noqa: F401

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def pytest_configure(config: pytest.Config) -> None:
    procs.pytest_configure(config)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:  # a worker of several: its share of the cores, for it and every command it starts
        share = str(max(1, len(os.sched_getaffinity(0)) // workers))
        os.environ.update(dict.fromkeys(THREAD_VARIABLES, share))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files holding slow tests first (each file's order kept): under xdist, whose workers take
    whole files in this order, the long ones start early and the workers end together."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


def shared_folder(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test run: under pytest-xdist, by the first worker that asks
    for it while the others wait on a lock, then share it. Read-only for the tests, by contract."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = factory.mktemp(name)
        build(folder)
        return folder
    root = factory.getbasetemp().parent  # the run's folder, above each worker's own
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Kaggle-format demo dataset (24 train, 6 test images of 64x96); copy before changing it."""
    size = ["--height", str(TINY["height"]), "--width", str(TINY["width"])]

    def build(root: Path) -> None:
        cloudcli("demo-data", "data", "--n-train", "24", "--n-test", "6", *size, "--workers", "1", cwd=root)

    return shared_folder(tmp_path_factory, "tiny_demo", build) / "data"


@pytest.fixture
def tiny_project(tiny_demo: Path, tmp_path: Path) -> Path:
    """A working folder with the tiny dataset in data/ and a matching params.yaml."""
    shutil.copytree(tiny_demo, tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_cache(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder after `preprocess` and `fold` (3 folds) on the tiny dataset; read-only."""

    def build(root: Path) -> None:
        shutil.copytree(tiny_demo, root / "data")
        params = tiny_params(fold={"n_splits": 3}, train={"epochs": 2, "batch_size": 4}, cv={"folds": [0, 1, 2]})
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        cloudcli("preprocess", cwd=root)
        cloudcli("fold", cwd=root)

    return shared_folder(tmp_path_factory, "tiny_cache", build)


@pytest.fixture(scope="session")
def baseline(tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny git + DVC repository with the pipeline reproduced (by `cloudcli run`, two stages at
    a time) and committed; read-only: work on dvc_repo.copy_of(baseline, tmp_path)."""
    from dvc_repo import run, tiny_repo

    def build(root: Path) -> None:
        repo = tiny_repo(tiny_demo, root)
        run("cloudcli", "run", "--workers", "2", cwd=repo)  # .cloudcli/run/last.json: what ran, for the end-to-end test
        run("git", "add", "-A", cwd=repo)
        run("git", "commit", "-qm", "baseline", cwd=repo)

    return shared_folder(tmp_path_factory, "baseline", build) / "repo"
