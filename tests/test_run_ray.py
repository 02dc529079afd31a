"""cloudcli run --ray on a real Ray cluster on 127.0.0.1: a head and a second node process, one CPU
each. The workers run each stage in a clone of their own under CLOUDCLI_RAY_DIR, and the outputs
come back through a folder DVC remote: the repository ends as dvc repro leaves it. A worker
killed mid-training is retried and the training resumes. Bad input stops before anything runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import procs
import psutil
import pytest
import yaml
from dvc_repo import BIN, env, ran, run, tiny_repo
from helpers import cloudcli
from test_run import shell_repo, stage, times

from cloudcli.runner.cluster import Shape, shape

TAG = procs.SHARED  # every process of the test cluster carries it: the module's teardown stops them all


@dataclass
class Cluster:
    address: str
    nodes: Path  # CLOUDCLI_RAY_DIR of both nodes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive_nodes(address: str) -> int:
    probe = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    out = procs.run([sys.executable, "-c", probe % address], Path.cwd(), env(), 60)
    return int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout.split() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("ray")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    tag, port = uuid.uuid4().hex, free_port()
    node_env = {**env(), "CLOUDCLI_RAY_DIR": str(base / "nodes"), TAG: tag, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--object-store-memory=80000000", "--disable-usage-stats", "--block"]
    head_cmd = [BIN / "ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}"]
    head_cmd += ["--include-dashboard=false", f"--temp-dir={temp}", *common]
    started = [procs.start(head_cmd, base / "head.log", env=node_env)]
    try:
        address = f"127.0.0.1:{port}"
        procs.wait_until(lambda: _answers(port), 120, "the Ray head")
        node_cmd = [BIN / "ray", "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common]
        started.append(procs.start(node_cmd, base / "node.log", env=node_env))
        procs.wait_until(lambda: alive_nodes(address) == 2, 120, "two Ray nodes")
        yield Cluster(address, base / "nodes")
    finally:
        for proc in reversed(started):
            procs.kill_group(proc, grace=5)
        _kill_tagged(tag)
        shutil.rmtree(temp, ignore_errors=True)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    return False


def _kill_tagged(tag: str) -> None:
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(TAG) == tag:
                proc.kill()


def with_remote(repo: Path, store: Path) -> Path:
    run("dvc", "remote", "add", "-d", "store", str(store), cwd=repo)
    run("git", "commit", "-qam", "a folder remote", cwd=repo)
    return repo


def test_shape_gives_a_gpu_each_or_divides_the_cpus() -> None:
    gpus = [{"CPU": 16, "GPU": 4}, {"CPU": 8, "GPU": 2}, {"CPU": 4}]
    assert shape("a", gpus, None) == Shape("a", 3, 6, 4, 1)
    assert shape("a", gpus, 2).concurrent == 2 and shape("a", gpus, 9).concurrent == 6
    cpus = [{"CPU": 1}, {"CPU": 1}]
    assert shape("a", cpus, None) == Shape("a", 2, 2, 1, 0)
    assert shape("a", [{"CPU": 16}, {"CPU": 8}], None) == Shape("a", 2, 6, 4, 0)
    assert shape("a", [{"CPU": 16}, {"CPU": 8}], 3) == Shape("a", 2, 3, 8, 0)
    with pytest.raises(Exception, match="no node with a CPU"):
        shape("a", [{"GPU": 0}], None)


@pytest.mark.timeout(400)
def test_stages_run_on_the_nodes_and_come_back_through_the_remote(cluster: Cluster, tmp_path: Path) -> None:
    stages = {"a": stage("a", 3), "b": stage("b", 3), "c": stage("c", 0, "a.json", "b.json")}
    repo = with_remote(shell_repo(tmp_path / "repo", stages), tmp_path / "store")
    dry = cloudcli("run", "--ray", cluster.address, "--dry", cwd=repo)
    assert "(2 nodes): at most 2 stages at once, each 1 CPUs" in dry.stdout
    assert "wave 1: a b\nwave 2: c\n" in dry.stdout and not (repo / "dvc.lock").exists()
    out = cloudcli("run", "--ray", cluster.address, cwd=repo, timeout=300)
    timeline = json.loads((repo / ".cloudcli/run/last.json").read_text())
    assert [r["stage"] for r in timeline][-1] == "c" and len(timeline) == 3
    a, b = times(repo, "a"), times(repo, "b")
    assert a["start"] < b["end"] and b["start"] < a["end"]  # on two nodes at once
    assert times(repo, "c")["inputs"] == 2 and a["OMP_NUM_THREADS"] == "1"
    for record in timeline:  # each in a clone of its own on a node, not in this working copy
        clone = Path(record["where"].split(", ")[-1])
        assert clone.parent.parent == cluster.nodes / "clones" and clone.name == record["stage"]
        assert times(repo, record["stage"])["cwd"] == str(clone) and not clone.exists()  # removed once pushed
        assert f"run: {record['stage']} done in" in out.stderr
    assert (tmp_path / "store/runs").is_dir() and (tmp_path / "store/files/md5").is_dir()
    assert "up to date" in run("dvc", "status", cwd=repo)
    assert ran(run("dvc", "repro", cwd=repo)) == set()
    assert run("git", "status", "--porcelain", "--untracked-files=no", cwd=repo) == ""


@pytest.mark.timeout(300)
def test_a_failing_stage_stops_the_run_and_the_others_stay_recorded(cluster: Cluster, tmp_path: Path) -> None:
    stages = {"a": stage("a", 0), "bad": stage("bad", 0, fail=True), "c": stage("c", 0, "a.json", "bad.json")}
    repo = with_remote(shell_repo(tmp_path / "repo", stages), tmp_path / "store")
    out = cloudcli("run", "--ray", cluster.address, cwd=repo, check=False, timeout=240)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "stage bad failed (dvc repro bad exited" in out.stderr and ".cloudcli/run/bad.log" in out.stderr
    assert "boom" in (repo / ".cloudcli/run/bad.log").read_text()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"a"} and not (repo / "c.json").exists()


def test_bad_input_names_what_to_fix_and_runs_nothing(tmp_path: Path) -> None:
    """No cluster needed: each is refused before one is joined (the address: within seconds)."""

    def refused(repo: Path, *args: str):
        return repo, cloudcli("run", *args, cwd=repo, check=False)

    bare = shell_repo(tmp_path / "bare", {"a": stage("a", 0)})
    repo = shell_repo(tmp_path / "repo", {"a": stage("a", 0), "b": stage("b", 0, "notes.txt")})
    with_remote(repo, tmp_path / "store")
    (repo / "notes.txt").write_text("only in this working copy\n")
    results = {
        "no default DVC remote": refused(bare, "--ray", "127.0.0.1:1"),
        "b reads notes.txt, which neither git nor DVC tracks": refused(repo, "--ray", "127.0.0.1:1"),
    }
    run("git", "add", "notes.txt", cwd=repo)
    run("git", "commit", "-qm", "notes", cwd=repo)
    with open(repo / "stamp.py", "a") as f:
        f.write("# edited\n")
    results["the working copy has changes the workers cannot see"] = refused(repo, "--ray", "127.0.0.1:1")
    run("git", "checkout", "stamp.py", cwd=repo)
    results["127.0.0.1:1: nothing answers there"] = refused(repo, "--ray", "127.0.0.1:1")
    results["expected auto or HOST:PORT"] = refused(repo, "--ray", "head-node")
    results["--workers 0: must be at least 1"] = refused(repo, "--workers", "0", "--ray", "auto")
    for message, (where, out) in results.items():
        assert out.returncode == 1, out.stderr
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert not (where / "dvc.lock").exists() and not (where / "a.json").exists()
    assert "stamp.py; commit them" in results["the working copy has changes the workers cannot see"][1].stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_pipeline_on_ray_with_a_worker_killed_mid_training(cluster: Cluster, tiny_demo, tmp_path: Path) -> None:
    """Two trainings of the tiny demo overlap on the two nodes; the worker of one is killed after its
    first epoch: Ray retries it, the training resumes from that epoch, and the repository ends as
    dvc repro leaves it."""
    repo = tiny_repo(tiny_demo, tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = 5
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git", "commit", "-qam", "5 epochs", cwd=repo)
    with_remote(repo, tmp_path / "store")
    targets = ["train@seg1-0", "train@seg2-0"]
    driver = procs.start(
        [sys.executable, "-m", "cloudcli", "run", "--ray", cluster.address, *targets], tmp_path / "run.log", cwd=repo
    )
    killed: list[int] = []
    states = cluster.nodes / "resume/seg1-fold0"

    def kill_after_first_epoch() -> None:
        pidfile = lambda: list((cluster.nodes / "clones").glob("*/train@seg1-0.pid"))  # noqa: E731
        procs.wait_until(lambda: list(states.glob("*/last.pt")) and pidfile(), 400, "seg1's first epoch", every=0.02)
        worker = json.loads(pidfile()[0].read_text())["worker"]
        os.kill(worker, signal.SIGKILL)
        killed.append(worker)

    watcher = threading.Thread(target=kill_after_first_epoch, daemon=True)
    watcher.start()
    try:
        driver.wait(timeout=540)
    finally:
        procs.kill_group(driver)
    watcher.join(timeout=1)
    log = (tmp_path / "run.log").read_text()
    assert driver.returncode == 0, log
    assert killed, "the watcher never saw seg1's first epoch"
    timeline = {r["stage"]: r for r in json.loads((repo / ".cloudcli/run/last.json").read_text())}
    one, two = timeline["train@seg1-0"], timeline["train@seg2-0"]
    assert one["start"] < two["end"] and two["start"] < one["end"], timeline  # the two trainings overlapped
    stage_log = (repo / ".cloudcli/run/train@seg1-0.log").read_text()
    assert stage_log.count("--- train@seg1-0 on") == 2, stage_log  # the attempt killed, and its retry
    assert "resuming after epoch" in stage_log, stage_log
    assert f"pid {killed[0]}" not in one["where"]
    for model in ("seg1", "seg2"):
        curve = repo / f"dvclive/{model}/fold0/plots/metrics/train/loss.tsv"
        assert [line.split("\t")[0] for line in curve.read_text().splitlines()[1:]] == ["0", "1", "2", "3", "4"]
        assert (repo / f"models/{model}/fold0/best.pt").exists()
    assert not states.exists()  # the resume state is gone once the training ended
    assert "up to date" in run("dvc", "status", *targets, cwd=repo)
    assert ran(run("dvc", "repro", *targets, cwd=repo)) == set()
