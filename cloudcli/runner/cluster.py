"""`cloudcli run --ray`: the stages on a Ray cluster, their outputs back through the DVC remote.

The driver (this process) plans and records as `cloudcli run` does on one machine; each stage is a
Ray task (worker.run_stage) that runs in a clone of the driver's commit on whichever node Ray
picks, with one GPU when the cluster has GPUs, and its CPU share. Nothing is shared but git (the
commit travels as a git bundle) and the DVC remote:

- before a stage starts, the data it reads is pushed to the remote (plan.push_inputs);
- the worker pulls it, runs the stage, pushes its outputs and run-cache entry;
- the driver restores the stage from the run-cache (plan.restore): outputs checked out, dvc.lock.

A worker that dies (a node lost, a process killed) is retried by Ray (`RETRIES`); a training
resumes from its last epoch if the retry runs on the same node. A stage whose command fails stops
the run, as on one machine.

Checked before anything runs, each a one-line error: a reachable cluster, a default DVC remote,
and a working copy whose changes the workers would not see (they get the commit, not the files).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cloudcli.errors import CloudcliError
from cloudcli.runner.local import LOGS, Running
from cloudcli.runner.plan import Step, push_inputs, remote_of, restore
from cloudcli.ui import info

RETRIES = 3  # attempts after a worker dies


@dataclass(frozen=True)
class Shape:
    """How stages use the cluster: at most `concurrent` at once, each with `cpus` and `gpus`."""

    address: str
    nodes: int
    concurrent: int
    cpus: int
    gpus: int

    def describe(self) -> str:
        each = f"{self.cpus} CPUs" + (f" and {self.gpus} GPU" if self.gpus else "")
        return f"Ray cluster {self.address} ({self.nodes} nodes): at most {self.concurrent} stages at once, each {each}"


def check_working_copy(root: Path, steps: list[Step]) -> str:
    """The commit the workers get; an error naming what they would not see: changed tracked files
    (dvc.lock aside: it is sent), or a stage's input that neither git nor DVC tracks."""
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    if head.returncode != 0:
        raise CloudcliError(f"{root}: no git commit yet; --ray workers clone the current commit: commit the project")
    changed = [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=no").stdout.splitlines()]
    changed = [p for p in changed if Path(p).name != "dvc.lock"]
    if changed:
        raise CloudcliError(
            f"--ray: the working copy has changes the workers cannot see (they clone commit "
            f"{head.stdout.strip()[:8]}): {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}; "
            "commit them (git commit -am ...) or run without --ray"
        )
    untracked = _untracked_inputs(root, [s.name for s in steps])
    if untracked:
        raise CloudcliError(
            f"--ray: {untracked[0][1]} reads {untracked[0][0]}, which neither git nor DVC tracks: the workers "
            "cannot see it; `git add` it (or `dvc add` it) and commit"
        )
    return head.stdout.strip()


def _untracked_inputs(root: Path, names: list[str]) -> list[tuple[str, str]]:
    from cloudcli.runner.plan import holder, open_repo

    tracked = set(_git(root, "ls-files", "-z").stdout.split("\0"))
    repo = open_repo(root)
    try:
        outs = list(repo.index.outs)
        found = []
        for stage in repo.index.stages:
            if stage.addressing not in names:
                continue
            for dep in stage.deps:
                if dep.protocol != "local" or holder(outs, dep.fs_path) is not None:
                    continue
                rel = os.path.relpath(dep.fs_path, root)
                if rel not in tracked and not any(t.startswith(rel.rstrip("/") + "/") for t in tracked):
                    found.append((rel, stage.addressing))
        return found
    finally:
        repo.close()


def check_remote(root: Path) -> tuple[str, dict]:
    found = remote_of(root)
    if found is None:
        raise CloudcliError(
            "--ray: no default DVC remote; the workers return each stage's outputs through one: "
            "`dvc remote add -d store s3://bucket/path` (or a folder every node can reach), then commit .dvc/config"
        )
    return found


def connect(address: str) -> list[dict]:
    """Join the Ray cluster at `address` (auto: RAY_ADDRESS, or the one started on this machine);
    its live nodes' resources."""
    import ray

    if address != "auto":
        _reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise CloudcliError(
            f"--ray {address}: no Ray cluster to join ({str(e).splitlines()[0]}); start one with "
            "`ray start --head` (docs/scaling-out.md) or give its address, e.g. --ray 10.0.0.5:6379"
        ) from None
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _reachable(address: str) -> None:
    """An address whose port does not answer fails in seconds, not after Ray's own long wait."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise CloudcliError(
            f"--ray {address}: expected auto or HOST:PORT (the head node's GCS port, e.g. 10.0.0.5:6379)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise CloudcliError(
            f"--ray {address}: nothing answers there ({e.strerror or e}); is the head node up (`ray status`)?"
        ) from None


def shape(address: str, nodes: list[dict], workers: int | None) -> Shape:
    """One GPU per stage when the cluster has GPUs, with its GPU node's CPUs divided among its GPUs;
    on CPUs alone, min(4, the smallest node's) CPUs each, or the cluster's CPUs divided among
    `workers` stages."""
    cpus = [int(n.get("CPU", 0)) for n in nodes]
    gpus = [int(n.get("GPU", 0)) for n in nodes]
    if not nodes or max(cpus) < 1:
        raise CloudcliError(f"--ray {address}: the cluster has no node with a CPU to run stages")
    if sum(gpus):
        each = max(1, min(c // g for c, g in zip(cpus, gpus) if g))
        return Shape(address, len(nodes), min(workers or sum(gpus), sum(gpus)), each, 1)
    smallest = min(c for c in cpus if c)
    each = max(1, min(smallest, sum(cpus) // workers)) if workers else min(4, smallest)
    return Shape(address, len(nodes), workers or sum(c // each for c in cpus), each, 0)


class OnRay:
    """Stages as Ray tasks; a stage that ran is restored here from the DVC remote."""

    def __init__(self, root: Path, shape: Shape, commit: str, remote: tuple[str, dict]) -> None:
        import ray

        from cloudcli.runner.worker import run_stage

        self.root, self.shape, self.commit, (self.remote, self.remote_config) = root, shape, commit, remote
        self.repo = f"{root.name}-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:8]}"
        self.bundle = ray.put(_bundle(root))
        self.task = ray.remote(run_stage).options(
            num_cpus=shape.cpus, num_gpus=shape.gpus, max_retries=RETRIES, retry_exceptions=False
        )

    def names(self) -> list[str]:
        return [f"ray {k}" for k in range(self.shape.concurrent)]

    def start(self, step: Step, slot: int) -> Running:
        from cloudcli.runner.worker import Job

        sent = push_inputs(self.root, step.name, self.remote)
        lock = self.root / "dvc.lock"
        job = Job(
            step.name,
            self.repo,
            self.commit,
            lock.read_text() if lock.exists() else None,
            self.remote,
            self.remote_config,
            self.shape.cpus,
            _git(self.root, "rev-parse", "--show-prefix").stdout.strip(),
        )
        info(f"run: {step.name} sent to the cluster" + (f" ({sent} input files pushed)" if sent else ""))
        return Running(
            step, self.task.remote(job, self.bundle), slot, time.time(), self.root / LOGS / f"{step.name}.log"
        )

    def poll(self, job: Running) -> None:
        import ray

        ready, _ = ray.wait([job.handle], timeout=0)
        if not ready:
            return
        try:
            record = ray.get(job.handle)
        except Exception as e:  # the stage's failure, or the worker's after every retry
            cause = getattr(e, "cause", e)
            job.log.write_text(getattr(cause, "log", "") or str(e))
            job.ok, job.end, job.reason = False, time.time(), str(cause).splitlines()[0]
            return
        job.log.write_text(record["log"])
        job.ok, job.start, job.end = True, record["start"], record["end"]
        job.where = f"{record['host']}, worker pid {record['pid']}, {record['clone']}"

    def record(self, job: Running) -> None:
        restore(self.root, job.step.name, self.remote)

    def stop(self, jobs: list[Running]) -> None:
        import ray

        for job in jobs:
            ray.cancel(job.handle, force=True)


def _bundle(root: Path) -> bytes:
    """The current commit and its history, as one file git can clone from."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "repo.bundle"
        made = _git(root, "bundle", "create", str(path), "HEAD")
        if made.returncode != 0:
            raise CloudcliError(f"git bundle create: {made.stderr.strip()}")
        return path.read_bytes()


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=300)
