"""cloudcli run: the machine's share per slot, the plan's waves, and real DVC repositories whose
stages are small shell commands: independent stages overlap, the repository ends as dvc repro
leaves it, a failing stage stops the run with its name and log, the others stay recorded."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from dvc_repo import git_dvc_repo, ran, run
from helpers import cloudcli

from cloudcli.parallel import worker_cap
from cloudcli.runner.local import shares
from cloudcli.runner.plan import Plan, Step

STAMP = """import json, os, sys, time
name, seconds = sys.argv[1], float(sys.argv[2])
start = time.time()
time.sleep(seconds)
inputs = [open(p).read() for p in sys.argv[3:]]
share = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CLOUDCLI_MAX_WORKERS")}
record = {"start": start, "end": time.time(), "inputs": len(inputs), "cwd": os.getcwd()}
json.dump(record | share, open(name + ".json", "w"))
"""


def test_shares_divide_the_cores_and_give_each_slot_a_gpu() -> None:
    assert shares(2, 2, []) == shares(2, 3, [])[:2]
    (one, two) = shares(2, 2, [])
    assert (one.threads, one.workers, one.gpu) == (1, 0, None) == (two.threads, two.workers, two.gpu)
    assert [(s.threads, s.workers) for s in shares(4, 16, [])] == [(4, 3)] * 4
    assert [s.gpu for s in shares(3, 24, [0, 1, 2, 3])] == [0, 1, 2]
    assert shares(1, 8, [])[0].env({"PATH": "x"})["OMP_NUM_THREADS"] == "8"
    assert shares(2, 8, [5, 7])[1].env({})["CUDA_VISIBLE_DEVICES"] == "7"
    with pytest.raises(Exception, match="--workers 3: this machine has 2 GPUs"):
        shares(3, 8, [0, 1])


def test_worker_cap(monkeypatch) -> None:
    assert worker_cap(4) == 4
    monkeypatch.setenv("CLOUDCLI_MAX_WORKERS", "1")
    assert worker_cap(4) == 1 and worker_cap(0) == 0 and worker_cap(4, least=1) == 1
    monkeypatch.setenv("CLOUDCLI_MAX_WORKERS", "0")
    assert worker_cap(4, least=1) == 1 and worker_cap(2) == 0


def test_waves_follow_the_edges() -> None:
    steps = [Step("a", "", Path()), Step("b", "", Path()), Step("c", "", Path(), (), ("a", "b"))]
    steps += [Step("d", "", Path(), (), ("c",)), Step("e", "", Path(), (), ("a",))]
    plan = Plan(Path(), steps)
    assert plan.waves(["a", "b", "c", "d", "e"]) == [["a", "b"], ["c", "e"], ["d"]]
    assert plan.waves(["c", "d"]) == [["c"], ["d"]]
    assert plan.downstream(["a"]) == ["c", "d", "e"] and plan.downstream(["d"]) == []


def shell_repo(path: Path, stages: dict) -> Path:
    repo = git_dvc_repo(path)
    (repo / "stamp.py").write_text(STAMP)
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "stages", cwd=repo)
    return repo


def stage(name: str, seconds: float, *deps: str, fail: bool = False) -> dict:
    cmd = f"{sys.executable} stamp.py {name} {seconds} {' '.join(deps)}" + " && echo boom && exit 3" * fail
    return {"cmd": cmd, "deps": ["stamp.py", *deps], "outs": [f"{name}.json"]}


def times(repo: Path, name: str) -> dict:
    return json.loads((repo / f"{name}.json").read_text())


@pytest.mark.timeout(300)
def test_independent_stages_overlap_and_the_repository_ends_as_dvc_repro_leaves_it(tmp_path) -> None:
    stages = {"a": stage("a", 0), "b": stage("b", 0), "c": stage("c", 0, "a.json", "b.json")}
    repo = shell_repo(tmp_path / "repo", stages)
    run("dvc", "repro", cwd=repo)
    stages |= {"a": stage("a", 2), "b": stage("b", 2)}  # their commands change: a and b are stale, c follows
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    dry = cloudcli("run", "--dry", "--workers", "2", cwd=repo).stdout
    changed = next(line for line in dry.splitlines() if line.startswith("changed now"))
    assert changed.split(": ", 1)[1].split() == sorted(ran(run("dvc", "repro", "--dry", cwd=repo)))
    assert "wave 1: a b" in dry and "wave 2: c?" in dry

    out = cloudcli("run", "--workers", "2", cwd=repo)
    assert "3 stages ran on 2 slots" in out.stdout
    a, b, c = (times(repo, n) for n in "abc")
    assert max(a["start"], b["start"]) < min(a["end"], b["end"])  # a and b ran at the same time
    assert c["start"] > max(a["end"], b["end"]) and c["inputs"] == 2
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert a["OMP_NUM_THREADS"] == threads and a["CLOUDCLI_MAX_WORKERS"] == str(int(threads) - 1)
    assert "up to date" in run("dvc", "status", cwd=repo)
    assert ran(run("dvc", "repro", cwd=repo)) == set()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"a", "b", "c"} and lock["c"]["outs"][0]["path"] == "c.json"
    saved = (repo / "c.json").read_text()
    (repo / "c.json").unlink()
    run("dvc", "checkout", "c", cwd=repo)  # outputs are in the DVC cache
    assert (repo / "c.json").read_text() == saved
    timeline = json.loads((repo / ".cloudcli/run/last.json").read_text())
    assert sorted(r["stage"] for r in timeline) == ["a", "b", "c"]
    assert "nothing to run" in cloudcli("run", "--dry", cwd=repo).stdout
    run("git", "add", "-A", cwd=repo)  # cloudcli's own folder (logs, timeline) never goes to git
    assert ".cloudcli" not in run("git", "status", "--porcelain", cwd=repo)


@pytest.mark.timeout(300)
def test_data_added_with_dvc_is_saved_to_the_cache_first_as_dvc_repro_does(tmp_path) -> None:
    """A dataset written after `dvc add` recorded it (make demo generates the demo data in a clean
    clone) or changed since: saved to the cache and its .dvc file updated, then the stages run."""
    repo = shell_repo(tmp_path / "repo", {"a": stage("a", 0, "raw.txt")})
    (repo / "raw.txt").write_text("one\n")
    run("dvc", "add", "-q", "raw.txt", cwd=repo)
    shutil.rmtree(repo / ".dvc/cache")  # as in a fresh clone: the data is there, not in the cache
    out = cloudcli("run", cwd=repo)
    assert "raw.txt.dvc: its data saved to the DVC cache" in out.stdout and "1 stages ran" in out.stdout
    (repo / "raw.txt").write_text("two\n")  # the data changed: saved again, the stage runs again
    out = cloudcli("run", cwd=repo)
    assert "raw.txt.dvc: its data saved" in out.stdout and "1 stages ran" in out.stdout
    assert times(repo, "a")["inputs"] == 1
    assert "up to date" in run("dvc", "status", cwd=repo)
    run("dvc", "checkout", "--relink", cwd=repo)  # every output in the cache: nothing unsaved to refuse
    assert "its data saved" not in cloudcli("run", cwd=repo).stdout


@pytest.mark.timeout(300)
def test_a_failing_stage_stops_the_run_and_the_others_stay_recorded(tmp_path) -> None:
    stages = {"a": stage("a", 0), "d": stage("d", 0, "a.json", fail=True), "e": stage("e", 1)}
    stages["f"] = stage("f", 0, "d.json")
    repo = shell_repo(tmp_path / "repo", stages)
    out = cloudcli("run", "--workers", "2", cwd=repo, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "stage d failed (exit 3)" in out.stderr and ".cloudcli/run/d.log" in out.stderr and "boom" in out.stderr
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"a", "e"}  # what succeeded is recorded; f never started
    assert not (repo / "f.json").exists()
    assert set(json.loads(run("dvc", "status", "--json", cwd=repo))) == {"d", "f"}


def test_bad_options(tmp_path) -> None:
    bad = cloudcli("run", "--workers", "0", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "--workers 0: must be at least 1" in bad.stderr
    bad = cloudcli("run", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "not a DVC repository" in bad.stderr and "Traceback" not in bad.stderr
