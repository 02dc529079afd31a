"""Kills at any moment: each stage that writes is SIGKILLed, again and again, each time just before
one of its writes, chosen at random among all of them (files opened for writing, renames, removals, memory maps, checkpoints,
images; see killer.py). Then every output of the stage is either the previous one, byte for byte,
or the new one, whole; and a rerun ends byte-identical to an uninterrupted run.

The previous outputs are the pipeline's own with a mark added (a byte more in a file, a file more in
a folder), so they differ from what the stage writes. The new outputs are those of an uninterrupted
run in the same conditions (the same threads: the pipeline's own were trained with fewer). DVCLive's curves are left out of the first
check: they are live by design, written as training goes; the rerun (which resumes) rewrites them
whole. Set CLOUDCLI_KILL_SEED to draw other moments; a failure names the seed and the moment.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import procs
import pytest
from dvc_repo import copy_of
from helpers import snapshot

pytestmark = pytest.mark.slow

KILLER = Path(__file__).with_name("killer.py")
SEED = int(os.environ.get("CLOUDCLI_KILL_SEED", "20"))
STAGES = ["preprocess", "fold", "train@seg1-0", "infer@seg1", "ensemble", "tune", "submit", "export"]
KILLS = {"train@seg1-0": 2, "infer@seg1": 1, "export": 1}  # kills per stage (the others: 3), each after the last
LIVE = "dvclive/"  # DVCLive's curves: written as training goes


def stage_of(repo: Path, name: str) -> tuple[list[str], list[str]]:
    """The command line (after `cloudcli`) and the outputs of a stage of dvc.yaml, or of `export`."""
    if name == "export":
        return ["export", "--out", "bundle"], ["bundle"]
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        (stage,) = dvc.stage.collect(f"{repo / 'dvc.yaml'}:{name}")
        outs = [str(Path(o.fs_path).relative_to(repo)) for o in stage.outs]
        return shlex.split(stage.cmd)[1:], outs


def state(repo: Path, outs: list[str]) -> dict[str, object]:
    """Each output: its bytes (a file), {path: bytes} (a folder) or None (absent)."""
    found = {}
    for out in outs:
        path = repo / out
        found[out] = snapshot(path) if path.is_dir() else path.read_bytes() if path.exists() else None
    return found


def mark(repo: Path, outs: list[str]) -> None:
    """Make the outputs there now distinguishable from what the stage writes."""
    for out in outs:
        path = repo / out
        if path.is_dir():
            (path / "PREVIOUS").write_text("an earlier run's output\n")
        elif path.exists():
            path.write_bytes(path.read_bytes() + b"\n")


def run(repo: Path, command: list[str], at: int, log: Path | None = None, signal="KILL") -> subprocess.CompletedProcess:
    env = os.environ | {"KILL_AT": str(at), "KILL_LOG": str(log or ""), "KILL_SIGNAL": signal}
    env |= {"COLUMNS": "200", "SOURCE_DATE_EPOCH": "0"}
    if log is None:
        env.pop("KILL_LOG")
    return procs.run([sys.executable, str(KILLER), *command], repo, env, 600)


def leftovers(repo: Path, outs: list[str]) -> list[str]:
    parents = {(repo / out).parent for out in outs}
    return sorted(str(p.relative_to(repo)) for parent in parents for p in parent.glob(".*.tmp"))


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_killed_while_it_writes(baseline: Path, tmp_path: Path, name: str) -> None:
    repo = copy_of(baseline, tmp_path)
    command, outs = stage_of(repo, name)
    log = tmp_path / "writes.txt"
    mark(repo, outs)  # the pipeline's outputs (none yet for export), marked
    done = run(repo, command, 0, log)  # uninterrupted, every write listed
    assert done.returncode == 0, done.stderr
    new = state(repo, outs)
    writes = log.read_text().splitlines()
    rng = np.random.default_rng([SEED, STAGES.index(name)])
    mark(repo, outs)
    for at in sorted(rng.choice(np.arange(1, len(writes) + 1), KILLS.get(name, 3), replace=False)):
        moment = f"write {at} of {len(writes)} ({writes[at - 1]}), CLOUDCLI_KILL_SEED={SEED}"
        previous = state(repo, outs)
        killed = run(repo, command, int(at))
        if killed.returncode == 0:  # fewer writes this time (a training resumed): it ran to its end
            assert state(repo, outs) == new, f"a run after a kill at {moment} differs from an uninterrupted run"
            continue
        assert killed.returncode == -9, f"not killed at {moment}: {killed.stderr}"
        now = state(repo, outs)
        for out in outs:
            if not out.startswith(LIVE):
                assert now[out] in (previous[out], new[out]), (
                    f"{out}: neither previous nor new after a kill at {moment}"
                )
    rerun = run(repo, command, 0)
    assert rerun.returncode == 0, f"rerun after a kill at {moment}: {rerun.stderr}"
    assert state(repo, outs) == new, f"the rerun after a kill at {moment} differs from an uninterrupted run"
    assert leftovers(repo, outs) == [], f"temporary files left after a kill at {moment} and a rerun"


@pytest.mark.parametrize("name", ["preprocess", "fold", "ensemble", "tune", "submit"])
def test_ctrl_c_at_any_moment(baseline: Path, tmp_path: Path, name: str) -> None:
    """Ctrl-C before a write drawn at random: exit 130 with one line, every output the previous or
    the new one, and no temporary file left (no rerun needed to clean up)."""
    repo = copy_of(baseline, tmp_path)
    command, outs = stage_of(repo, name)
    log = tmp_path / "writes.txt"
    assert run(repo, command, 0, log).returncode == 0
    new, writes = state(repo, outs), log.read_text().splitlines()
    mark(repo, outs)
    rng = np.random.default_rng([SEED, STAGES.index(name), 2])
    for at in sorted(rng.choice(np.arange(1, len(writes) + 1), 2, replace=False)):
        moment = f"write {at} of {len(writes)} ({writes[at - 1]}), CLOUDCLI_KILL_SEED={SEED}"
        previous = state(repo, outs)
        stopped = run(repo, command, int(at), signal="INT")
        assert stopped.returncode == 130, f"Ctrl-C at {moment}: {stopped.stderr}"
        assert stopped.stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in stopped.stderr
        now = state(repo, outs)
        for out in outs:
            assert now[out] in (previous[out], new[out]), f"{out}: neither previous nor new after Ctrl-C at {moment}"
        assert leftovers(repo, outs) == [], f"temporary files left after Ctrl-C at {moment}"
