"""`cloudcli run`: what `dvc repro` would do, with independent stages at the same time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cloudcli.errors import CloudcliError


def run(
    targets: Annotated[
        list[str] | None, typer.Argument(help="Stages or dvc.yaml files, as dvc repro takes them")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Stages at once (default: one per GPU; on CPU the cores, at most 4)")
    ] = None,
    dry: Annotated[
        bool, typer.Option("--dry", help="Print the plan: the stages, in waves, and each slot's share")
    ] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Run every planned stage, changed or not")] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run the stages on a Ray cluster: auto (RAY_ADDRESS, or the one started on this machine) or "
            "HOST:PORT of its head; outputs come back through the default DVC remote",
        ),
    ] = None,
) -> None:
    """Reproduce the pipeline as `dvc repro` would, running independent stages (every train@ of a
    wave, every infer@, ...) at the same time, each with its share of the machine.

    The repository ends as `dvc repro` leaves it: dvc.lock records every stage that ran, the
    outputs are in the DVC cache, `dvc status` is clean. Each stage's log: .cloudcli/run/<stage>.log.
    With --ray, each stage runs on a cluster node in a clone of the current commit.
    """
    from cloudcli.runner.local import run_plan
    from cloudcli.runner.plan import plan, save_sources, stale

    root = Path.cwd()
    if workers is not None and workers < 1:
        raise CloudcliError(f"--workers {workers}: must be at least 1")
    steps = plan(root, targets or [])
    header, backend = _backend(root, steps, ray, workers, dry)
    if dry:
        names = [s.name for s in steps.steps]
        print_plan(steps, names if force else stale(root, names), header)
        return
    for saved in save_sources(root, steps.sources):
        print(f"run: {saved}: its data saved to the DVC cache, as dvc repro does")
    records = run_plan(steps, backend, force)
    print(f"run: {len(records)} stages ran on {len(backend.names())} slots; dvc.lock records them")


def _backend(root: Path, steps, ray: str | None, workers: int | None, dry: bool):
    """(a line saying how the stages use the machine or cluster, what runs them: None for --dry
    on a cluster). --ray: the working copy, the DVC remote and the cluster are checked first."""
    from cloudcli.runner.local import Local, shares

    if ray is None:
        gpus = visible_gpus()
        cpus = len(os.sched_getaffinity(0))
        slots = shares(workers or (len(gpus) or min(cpus, 4)), cpus, gpus)
        return describe_slots(slots), Local(root, slots)
    from cloudcli.runner import cluster

    commit = cluster.check_working_copy(root, steps.steps)
    remote = cluster.check_remote(root)
    shape = cluster.shape(ray, cluster.connect(ray), workers)
    return shape.describe(), None if dry else cluster.OnRay(root, shape, commit, remote)


def visible_gpus() -> list[int]:
    """The CUDA GPUs stages may use: `CUDA_VISIBLE_DEVICES` when set, else those nvidia-smi lists
    (no torch import: this process only schedules)."""
    import shutil
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(v) for v in visible.split(",") if v.strip().isdigit()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(v) for v in listed.stdout.split() if v.isdigit()] if listed.returncode == 0 else []


def describe_slots(slots) -> str:
    share = slots[0]
    where = f"GPU {', '.join(str(s.gpu) for s in slots)}" if share.gpu is not None else "CPU"
    return f"{len(slots)} slots ({where}), each {share.threads} threads and at most {share.workers} worker processes"


def print_plan(steps, now: list[str], header: str) -> None:
    """`--dry`: the stages changed now (the list `dvc repro --dry` prints), then every stage that
    may run, in waves: a wave starts when the one before it has finished."""
    print(header)
    if not now:
        print("nothing to run: every stage is up to date")
        return
    print(f"changed now (dvc repro --dry): {' '.join(now)}")
    after = set(steps.downstream(now))
    for k, wave in enumerate(steps.waves([s.name for s in steps.steps if s.name in after or s.name in now])):
        print(f"wave {k + 1}: {' '.join(n + ('?' if n in after else '') for n in wave)}")
    if after:
        print("?: runs if its inputs change once the stages before it have run (as dvc repro decides)")
