"""Sharing a project: DVC remotes (a folder, and S3 served by moto on 127.0.0.1), experiments
through a bare git remote, and a 2x2 grid of queued experiments run by 2 workers."""

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

import procs
import psutil
import pytest
from dvc_repo import copy_of, ran, run
from dvc_repo import env as dvc_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}


def clone(source: str | Path, target: Path) -> Path:
    run("git", "clone", "-q", str(source), str(target), cwd=target.parent)
    return target


def assert_nothing_to_rerun(repo: Path) -> None:
    """Every output is in place: dvc status is clean and dvc repro runs no stage."""
    assert json.loads(run("dvc", "status", "--json", cwd=repo)) == {}
    out = run("dvc", "repro", cwd=repo)
    assert ran(out) == set(), out
    assert (
        (repo / "submission.csv").exists()
        and (repo / "models/seg1/fold0/best.pt").exists()
        and (repo / "predictions/base/seg1/test.zarr").is_dir()
    )


def test_folder_remote_push_and_pull_in_a_fresh_clone(baseline, tmp_path) -> None:
    repo = copy_of(baseline, tmp_path)
    store = tmp_path / "store"
    run("dvc", "remote", "add", "-d", "store", str(store), cwd=repo)
    run("git", "commit", "-qam", "remote", cwd=repo)
    run("dvc", "push", cwd=repo)
    pushed = {p.name for p in store.rglob("*") if p.is_file()}
    assert len(pushed) > 50  # data, checkpoints, prediction caches
    fresh = clone(repo, tmp_path / "fresh")
    assert not (fresh / "models/seg1/fold0/best.pt").exists()
    run("dvc", "pull", cwd=fresh)
    assert_nothing_to_rerun(fresh)


@pytest.fixture
def s3(tmp_path):
    """moto's S3 server on a free 127.0.0.1 port, with a bucket; yields the endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = procs.start([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)], tmp_path / "moto.log")
    try:

        def listening() -> bool:
            assert server.poll() is None, (tmp_path / "moto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        procs.wait_until(listening, 60, "moto's S3 server", every=0.2)
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket="cloudcli")
        yield endpoint, client
    finally:
        procs.kill_group(server)


def configure_s3(repo: Path, endpoint: str) -> None:
    """The commands of docs/scaling-out.md: remote and endpoint in .dvc/config, credentials in .dvc/config.local."""
    run("dvc", "remote", "add", "-d", "s3store", "s3://cloudcli/dvc", cwd=repo)
    run("dvc", "remote", "modify", "s3store", "endpointurl", endpoint, cwd=repo)
    run("dvc", "remote", "modify", "s3store", "region", "us-east-1", cwd=repo)
    for key, value in CREDENTIALS.items():
        run("dvc", "remote", "modify", "--local", "s3store", key, value, cwd=repo)


def test_s3_remote_and_experiments_through_a_bare_git_remote(baseline, s3, tmp_path) -> None:
    endpoint, client = s3
    repo = copy_of(baseline, tmp_path)
    configure_s3(repo, endpoint)
    assert "testing" not in (repo / ".dvc/config").read_text()  # secrets stay out of git
    assert "testing" in (repo / ".dvc/config.local").read_text()
    origin = tmp_path / "origin.git"
    run("git", "init", "-q", "--bare", "--initial-branch=main", str(origin), cwd=tmp_path)
    run("git", "remote", "add", "origin", str(origin), cwd=repo)
    run("git", "commit", "-qam", "S3 remote", cwd=repo)
    run("git", "push", "-q", "origin", "HEAD:main", cwd=repo)
    run("dvc", "push", cwd=repo)
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="cloudcli")
        for o in page.get("Contents", [])
    ]
    assert len(keys) > 50 and all(k.startswith("dvc/") for k in keys)

    # An experiment, shared through the git remote (its outputs through S3).
    out = run("dvc", "exp", "run", "-n", "small-areas", "-S", "tune.min_areas=[0,10]", cwd=repo)
    assert ran(out) <= {"tune", "submit", "report_predictions"} and "tune" in ran(out)
    run("dvc", "exp", "push", "origin", "small-areas", cwd=repo)

    # Another machine: clone, credentials, pull the data and the experiment.
    other = clone(origin, tmp_path / "other")
    for key, value in CREDENTIALS.items():
        run("dvc", "remote", "modify", "--local", "s3store", key, value, cwd=other)
    run("dvc", "pull", cwd=other)
    assert_nothing_to_rerun(other)
    run("dvc", "exp", "pull", "origin", "small-areas", cwd=other)
    shown = json.loads(run("dvc", "exp", "show", "--json", "-A", cwd=other))
    assert "small-areas" in json.dumps(shown)
    run("dvc", "exp", "apply", "small-areas", cwd=other)
    run("dvc", "pull", cwd=other)
    assert "min_areas" in run("git", "diff", "params.yaml", cwd=other)
    tuned = json.loads((other / "tune/thresholds.json").read_text())
    assert tuned == json.loads((repo / "tune/thresholds.json").read_text())  # the experiment's own results


def experiments(shown) -> list[dict]:
    """Every experiment entry (name, params.yaml, metrics) of `dvc exp show --json`, however nested."""
    found = []
    if isinstance(shown, dict):
        if "params" in (shown.get("data") or {}) and shown.get("name"):
            data = shown["data"]
            params = data["params"]["params.yaml"]["data"]
            metrics = {k: v.get("data") for k, v in (data.get("metrics") or {}).items()}
            found.append({"name": shown["name"], "params": params, "metrics": metrics})
        for value in shown.values():
            found += experiments(value)
    elif isinstance(shown, list):
        for value in shown:
            found += experiments(value)
    return found


def test_a_queued_2x2_grid_with_2_workers(baseline, tmp_path) -> None:
    repo = copy_of(baseline, tmp_path)
    grid = ("-S", "ensemble.vote=majority,mean", "-S", "tune.at_least_one=true,false")
    run("dvc", "exp", "run", "--queue", *grid, cwd=repo)
    assert run("dvc", "queue", "status", cwd=repo).count("Queued") == 4
    # `dvc queue start` leaves a detached manager and its workers behind: their output goes to a
    # file (a pipe would hold the test until they die), and they are stopped whatever happens.
    log = tmp_path / "queue.log"
    starter = procs.start(["dvc", "queue", "start", "-j", "2"], log, cwd=repo, env=dvc_env())
    try:
        assert starter.wait(timeout=120) == 0, log.read_text()

        def finished() -> str | None:
            status = run("dvc", "queue", "status", cwd=repo)
            return None if "Queued" in status or "Running" in status else status

        status = procs.wait_until(finished, 900, "the queued experiments", every=5)
    finally:
        stop_queue(repo, log)
        procs.kill_group(starter)
    assert status.count("Success") == 4, status
    branch = run("git", "rev-parse", "--abbrev-ref", "HEAD", cwd=repo).strip()  # the baseline's row
    rows = [e for e in experiments(json.loads(run("dvc", "exp", "show", "--json", cwd=repo))) if e["name"] != branch]
    assert len({e["name"] for e in rows}) == 4, rows
    combos = {(e["params"]["ensemble"]["vote"], e["params"]["tune"]["at_least_one"]) for e in rows}
    assert combos == {("majority", True), ("majority", False), ("mean", True), ("mean", False)}, rows
    for e in rows:  # each variant has its own CV score
        assert 0 <= e["metrics"]["metrics/tune.json"]["after"]["dice"] <= 1


def stop_queue(repo: Path, log: Path) -> None:
    """`dvc queue stop --kill`, then wait for the queue's manager and workers (they carry the
    repository's path on their command line or as their working folder) to end; kill the rest."""
    procs.run(["dvc", "queue", "stop", "--kill"], repo, dvc_env(), timeout=120)

    def queue_processes() -> list[psutil.Process]:
        found = []
        for proc in procs.tagged(os.environ[procs.MARK]):
            with contextlib.suppress(psutil.Error):
                if proc.cwd().startswith(str(repo)) and "dvc" in " ".join(proc.cmdline()):
                    found.append(proc)
        return found

    deadline = time.monotonic() + 60
    while (left := queue_processes()) and time.monotonic() < deadline:
        time.sleep(1)
    procs.kill_all(left)
