"""A real git + DVC repository with the project's dvc.yaml and the tiny demo data, for end-to-end tests."""

import configparser
import json
import os
import re
import shutil
import sys
from pathlib import Path

import procs
import yaml
from helpers import REPO, tiny_params

BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    """The environment for git and dvc: the virtualenv's commands first, no analytics."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def run(*cmd: str, cwd: Path, timeout: float = procs.TIMEOUT) -> str:
    """Run git or dvc to its end (at most `timeout` seconds); its stdout, or an AssertionError."""
    result = procs.run(cmd, cwd, env(), timeout)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def git_dvc_repo(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    run("git", "init", "-q", cwd=path)
    run("git", "config", "user.email", "test@example.com", cwd=path)
    run("git", "config", "user.name", "test", cwd=path)
    run("dvc", "init", "-q", cwd=path)
    run("dvc", "config", "core.analytics", "false", cwd=path)
    run("dvc", "config", "cache.type", cache_type(), cwd=path)  # as the project's .dvc/config: links, not copies
    return path


def cache_type() -> str:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc/config")
    return config["cache"]["type"]


def ran(output: str) -> set[str]:
    """Names of the stages a dvc repro / exp run output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def reproduce(repo: Path) -> set[str]:
    """`cloudcli run --workers 2` (what dvc repro does, two stages at a time; the tests' baseline
    checks it leaves the repository as dvc repro would): the names of the stages that ran."""
    run("cloudcli", "run", "--workers", "2", cwd=repo)
    return {r["stage"] for r in json.loads((repo / ".cloudcli/run/last.json").read_text())}


def tiny_repo(tiny_demo: Path, tmp_path: Path) -> Path:
    """A git + DVC repository with the real dvc.yaml, tiny data and params for 3 models x 1 fold."""
    repo = git_dvc_repo(tmp_path / "repo")
    shutil.copytree(tiny_demo, repo / "data")
    shutil.copy(REPO / "dvc.yaml", repo)
    shutil.copytree(REPO / "labels", repo / "labels")  # the fold stage depends on it (data.exclude)
    params = tiny_params(
        fold={"n_splits": 3},
        train={"epochs": 1, "batch_size": 4},
        cv={"folds": [0]},
        pseudo={"low": 0.5, "high": 0.5},  # 1-epoch models are never confident: keep (almost) every test image
        report={
            "worst": 2,
            "test_images": 2,
            "tile": [64, 96],
        },  # a few small overlays: the drawing is not under test here
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("dvc", "add", "-q", "data", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "tiny", cwd=repo)
    return repo


def copy_of(repo: Path, tmp_path: Path) -> Path:
    """A working copy of a repository with its own git history and DVC cache."""
    target = tmp_path / "work"
    shutil.copytree(repo, target, symlinks=True)
    return target
