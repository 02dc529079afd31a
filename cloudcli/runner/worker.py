"""One stage on a Ray worker, in a clone of its own: what `cloudcli run --ray` sends each node.

The node needs cloudcli installed and nothing shared with the driver. The stage:

1. gets the code from git: a clone of the driver's commit (sent as a git bundle), with the
   driver's dvc.lock, so the stages upstream of it are as the driver recorded them;
2. `dvc repro --pull --single-item STAGE`: its inputs pulled from the DVC remote, then run, unless
   DVC's run-cache already holds a run with the same inputs (restored instead);
3. `push`: its outputs and its run-cache entry back to the remote (`dvc push --run-cache STAGE`),
   its `cache: false` outputs (metrics, plots) too, which DVC's push leaves out but the run-cache
   restore needs; the driver restores the stage from there (plan.restore).

Everything lives under $CLOUDCLI_RAY_DIR (default ~/.cache/cloudcli/ray) on the node:
clones/<repo>/<stage>/ (made afresh for each attempt, removed once the outputs are pushed), a DVC
cache the clones share (delete it when a project is done), the stages' logs, and resume/, the
training states (checkpoint.resume_dir): a training whose worker was killed resumes from its
last epoch when Ray retries it on the same node (or when the folder is on a disk the nodes
share).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL = 256_000  # characters of a stage's log sent back to the driver


class StageFailed(Exception):
    """A stage's command failed on a worker; `log` holds the end of its output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Job:
    """What the driver sends with each stage."""

    stage: str
    repo: str  # the repository's id: names the clones' folder
    commit: str
    lock: str | None  # the driver's dvc.lock text (None: no dvc.lock yet)
    remote: str
    remote_config: dict
    threads: int
    subdir: str = ""  # where the DVC project lies in the git repository ("" = its root)


def node_dir() -> Path:
    return Path(os.environ.get("CLOUDCLI_RAY_DIR") or Path.home() / ".cache/cloudcli/ray")


def slug(stage: str) -> str:
    return stage.replace("/", "_").replace(":", "_")


def run_stage(job: Job, bundle: bytes) -> dict:
    """Run `job` in a fresh clone on this node; its record (stage, node, clone, start, end, log)
    once its outputs are in the DVC remote. Raises StageFailed with the log's end."""
    base = node_dir()
    clone = base / "clones" / job.repo / slug(job.stage)
    log = base / "logs" / job.repo / f"{slug(job.stage)}.log"
    pids = clone.with_name(f"{clone.name}.pid")
    log.parent.mkdir(parents=True, exist_ok=True)
    _stop_previous(pids)  # an attempt whose worker was killed: its processes end first
    _checkout(base, clone, job, bundle)
    project = clone / job.subdir
    env = _stage_env(base, clone, job.threads)
    host = socket.gethostname()
    with open(log, "a") as sink:
        sink.write(f"--- {job.stage} on {host} (pid {os.getpid()}), {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    start = time.time()
    repro = [sys.executable, "-m", "dvc", "repro", "--pull", "--single-item", job.stage]
    push = [sys.executable, "-m", "cloudcli.runner.worker", "push", job.stage]
    for what, cmd in (("dvc repro", repro), ("push", push)):
        code = _supervised(cmd, project, env, log, pids)
        if code != 0:
            raise StageFailed(f"{what} {job.stage} exited {code} on {host}", _tail(log))
    end = time.time()
    pids.unlink(missing_ok=True)
    shutil.rmtree(clone, ignore_errors=True)  # its outputs are in the remote (and the node's DVC cache)
    return {
        "stage": job.stage,
        "host": host,
        "pid": os.getpid(),
        "clone": str(clone),
        "start": start,
        "end": end,
        "log": _tail(log),
    }


def _checkout(base: Path, clone: Path, job: Job, bundle: bytes) -> None:
    """A fresh clone of `job.commit`, with the driver's dvc.lock and the remote and shared cache
    set in .dvc/config.local."""
    from dvc.config import Config

    pack = base / "bundles" / f"{job.commit}.bundle"
    if not pack.exists():
        pack.parent.mkdir(parents=True, exist_ok=True)
        tmp = pack.with_name(f".{pack.name}.{os.getpid()}")
        tmp.write_bytes(bundle)
        os.replace(tmp, pack)
    shutil.rmtree(clone, ignore_errors=True)
    clone.parent.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "advice.detachedHead=false"]
    subprocess.run([*git, "clone", "--quiet", "--no-checkout", str(pack), str(clone)], check=True, timeout=600)
    subprocess.run([*git, "-C", str(clone), "checkout", "--quiet", job.commit], check=True, timeout=600)
    project = clone / job.subdir
    if job.lock is not None:
        (project / "dvc.lock").write_text(job.lock)
    config = Config(dvc_dir=str(project / ".dvc"))
    with config.edit("local") as local:
        local["core"]["remote"] = job.remote
        local["remote"][job.remote] = dict(job.remote_config)
        local["cache"]["dir"] = str(base / "dvc-cache")


def _stage_env(base: Path, clone: Path, threads: int) -> dict[str, str]:
    from cloudcli.runner.local import Share

    env = Share(None, threads, max(0, threads - 1)).env(os.environ)
    env["CLOUDCLI_RESUME_DIR"] = str(base / "resume")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["DVC_NO_ANALYTICS"] = "1"
    if (clone / "cloudcli" / "__init__.py").exists():  # the project is cloudcli itself: its code, not the installed
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(clone), env.get("PYTHONPATH")) if p)
    return env


def _supervised(cmd: list[str], cwd: Path, env: dict, log: Path, pids: Path) -> int:
    """Run `cmd` under cloudcli.runner.supervise in a process group of its own (noted in `pids`):
    if this worker dies, the group dies with it."""
    with open(log, "a") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudcli.runner.supervise", *cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pids.write_text(json.dumps({"worker": os.getpid(), "group": proc.pid}))
        return proc.wait()


def _stop_previous(pids: Path) -> None:
    """Kill the process group an earlier attempt of the stage left on this node, and wait for it."""
    if not pids.exists():
        return
    group = json.loads(pids.read_text())["group"]
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace")
    return text[-LOG_TAIL:]


def push(stage: str) -> None:
    """`dvc push --run-cache STAGE` in the working directory, and the objects of the stage's
    `cache: false` outputs, which the run-cache entry names but DVC does not push."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        repo.push(targets=[stage], run_cache=True)
        found = next(s for s in repo.index.stages if s.addressing == stage)
        loose = [o for o in found.outs if not o.use_cache and o.hash_info]
        objs: set = set()
        for out in loose:
            out.use_cache = True  # committed to the cache by the run-cache; collected as a cached output's
            for ids in out.get_used_objs().values():
                objs |= ids
        if objs:
            repo.cloud.push(objs)


if __name__ == "__main__":
    if sys.argv[1:2] == ["push"] and len(sys.argv) == 3:
        push(sys.argv[2])
    else:
        sys.exit("usage: python -m cloudcli.runner.worker push STAGE")
