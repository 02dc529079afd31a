"""`cloudcli run` on this machine: the stages `dvc repro` would run, several at once.

A stage starts as soon as every stage upstream of it in the plan has finished, and a worker slot
is free; then DVC decides, as `dvc repro` would at that point, whether it runs (`plan.stale`).
It runs its dvc.yaml command in its own process, with its share of the machine:

- on GPUs, one each (`CUDA_VISIBLE_DEVICES`);
- CPU threads divided among the slots (`OMP_NUM_THREADS` and friends: two 2-thread trainings on 2
  cores wait on each other's threads), and data-loader and preprocess workers capped to the
  share (`CLOUDCLI_MAX_WORKERS`, read by cloudcli.parallel.worker_cap; results do not depend
  on them).

Each stage's output goes to `.cloudcli/run/<stage>.log`, and `.cloudcli/run/last.json` holds the
timeline of the last run (stage, slot, start, end). A stage that succeeds is recorded at
once (`dvc commit`: dvc.lock and the DVC cache), so a later failure leaves it recorded; a failure
lets the running stages finish, starts no new one, and stops the run naming the stage and its log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cloudcli.errors import CloudcliError
from cloudcli.io import private_dir, write_json
from cloudcli.runner.plan import Plan, Step, commit, stale
from cloudcli.ui import board, info

LOGS = Path(".cloudcli/run")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class Share:
    """What one slot may use: its GPU (None on CPU), CPU threads, loader/preprocess workers."""

    gpu: int | None
    threads: int
    workers: int

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base) | dict.fromkeys(THREAD_VARS, str(self.threads))
        env["CLOUDCLI_MAX_WORKERS"] = str(self.workers)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        return env


def shares(workers: int, cpus: int, gpus: list[int]) -> list[Share]:
    """The machine divided among `workers` slots: a GPU each when there are GPUs (never more
    slots than GPUs), and the CPU cores split evenly, a core for the stage's own threads first."""
    if gpus and workers > len(gpus):
        raise CloudcliError(f"--workers {workers}: this machine has {len(gpus)} GPUs; at most one stage per GPU")
    threads = max(1, cpus // workers)
    return [Share(gpus[i] if gpus else None, threads, max(0, threads - 1)) for i in range(workers)]


@dataclass
class Running:
    step: Step
    handle: object  # the backend's: a Popen here, a Ray task on a cluster
    slot: int
    start: float
    log: Path
    end: float = 0.0
    ok: bool | None = None  # None while it runs
    where: str = ""  # the slot, or the node that ran it
    reason: str = ""  # why it failed: its exit code, or the worker's fate


class Local:
    """Stages run as processes of this machine, each with its slot's share, recorded by dvc commit."""

    def __init__(self, root: Path, slots: list[Share]) -> None:
        self.root, self.slots = root, slots

    def names(self) -> list[str]:
        return [
            f"{k} (GPU {s.gpu})" if s.gpu is not None else f"{k} ({s.threads} threads)"
            for k, s in enumerate(self.slots)
        ]

    def start(self, step: Step, slot: int) -> Running:
        for out in step.outs:  # as dvc repro: outputs that do not persist are removed first
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            elif out.exists() or out.is_symlink():
                out.unlink()
        log = self.root / LOGS / f"{step.name}.log"
        with open(log, "w") as sink:
            process = subprocess.Popen(
                step.cmd,
                shell=True,
                cwd=step.wdir,
                env=self.slots[slot].env(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        info(f"run: {step.name} started on slot {slot}")
        return Running(step, process, slot, time.time(), log, where=f"slot {slot}")

    def poll(self, job: Running) -> None:
        """Sets job.ok (and job.end) once the stage has ended."""
        code = job.handle.poll()
        if code is not None:
            job.ok, job.end, job.reason = code == 0, time.time(), f"exit {code}"

    def record(self, job: Running) -> None:
        commit(self.root, job.step.name)

    def stop(self, jobs: list[Running]) -> None:
        for job in jobs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.handle.pid, signal.SIGTERM)


def run_plan(plan: Plan, backend, force: bool = False) -> list[dict]:
    """Run the plan on `backend` (Local, or cluster.OnRay); returns a record per stage that ran
    (name, where, start, end, seconds)."""
    private_dir(plan.root / LOGS, plan.root / LOGS.parent)
    names = backend.names()
    run = Scheduler(plan, len(names), backend, force)
    with board(names) as show:
        run.show = show
        try:
            run.loop()
        except KeyboardInterrupt:
            backend.stop(list(run.running.values()))
            raise
        finally:
            write_json(plan.root / LOGS / "last.json", run.records)  # the timeline of the stages that ran
    if run.failed is not None:
        job = run.failed
        text = job.log.read_text(errors="replace") if job.log.exists() else ""
        tail = "".join(text.splitlines(keepends=True)[-5:]).rstrip()
        raise CloudcliError(
            f"stage {job.step.name} failed ({job.reason}); its log: {job.log}; "
            f"{len(run.records)} stages that finished are recorded in dvc.lock. Its last lines:\n{tail}"
        )
    return run.records


class Scheduler:
    """The stages waiting, running and done; the free slots."""

    def __init__(self, plan: Plan, slots: int, backend, force: bool) -> None:
        self.root, self.backend, self.force = plan.root, backend, force
        self.waiting, self.running, self.done = list(plan.steps), {}, set()
        self.free, self.records = list(range(slots)), []
        self.failed: Running | None = None
        self.show = lambda slot, stage: None

    def loop(self) -> None:
        """Start, watch and record stages until all have run, or one failed and the rest stopped."""
        while self.waiting or self.running:
            finished = self._reap()
            self._launch()  # what does not read the stages just finished starts at once
            for job in finished:  # recording may relink their outputs: nothing reads them yet
                self.backend.record(job)
                self.records.append(_finished(job))
                self.done.add(job.step.name)
            self._launch()
            if self.failed is not None and not self.running:
                return
            time.sleep(0.1)

    def _reap(self) -> list[Running]:
        """The stages that ended since the last look: their slots freed; failures noted."""
        finished = []
        for name, job in list(self.running.items()):
            self.backend.poll(job)
            if job.ok is None:
                continue
            del self.running[name]
            self.free = sorted([*self.free, job.slot])
            self.show(job.slot, None)
            if not job.ok:
                self.failed = self.failed or job
            else:
                finished.append(job)
        return finished

    def _launch(self) -> None:
        """Start the waiting stages whose upstream stages are all done, while slots are free; a
        stage DVC finds unchanged is done without running. Nothing starts after a failure."""
        for step in [s for s in self.waiting if all(u in self.done for u in s.upstream)]:
            if not self.free or self.failed is not None:
                return
            self.waiting.remove(step)
            if not self.force and not stale(self.root, [step.name]):
                self.done.add(step.name)
                continue
            slot = self.free.pop(0)
            self.running[step.name] = self.backend.start(step, slot)
            self.show(slot, step.name)


def _finished(job: Running) -> dict:
    seconds = job.end - job.start
    info(f"run: {job.step.name} done in {seconds:.1f}s ({job.where})")
    return {
        "stage": job.step.name,
        "slot": job.slot,
        "where": job.where,
        "start": job.start,
        "end": job.end,
        "seconds": seconds,
    }
