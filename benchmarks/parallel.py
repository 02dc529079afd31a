"""`cloudcli run --workers 2` against one stage at a time: 4 demo trainings on this machine.

    python benchmarks/parallel.py --out benchmarks/results     # about 8 minutes on 2 cores

A git + DVC repository with the demo data (`cloudcli demo-data`, 60 train images) and the
repository's params.yaml on folds 0 and 1. `preprocess` and `fold` run once; then each way of
running four trainings starts from a copy of that repository:

- sequential: `cloudcli run --workers 1` (one stage at a time, every core to it: as dvc repro);
- parallel: `cloudcli run --workers 2` (two at once, the cores divided between them);
- oversubscribed: the same two at once by hand, each with every core (`OMP_NUM_THREADS` = cores):
  what happens without the division.

The four trainings are seg1 and seg2 on folds 0 and 1: a model's folds take the same time, as in
a real run (35 trainings: 7 models x 5 folds). Then the four base models on fold 0, sequential
and parallel: four unequal trainings on two slots, where one slot idles at the end.

Printed as a Markdown table with wall times and their ratio to the sequential run of the same
trainings, and each stage's time; written to DIR/parallel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TRAININGS = ["train@seg1-0", "train@seg1-1", "train@seg2-0", "train@seg2-1"]
UNEQUAL = ["train@seg1-0", "train@seg2-0", "train@seg2_unet-0", "train@classifier-0"]


def sh(*cmd: str, cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env or environment(), capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}  # fmt: skip


def setup(folder: Path) -> Path:
    """The repository, preprocessed and split, committed."""
    repo = folder / "base"
    repo.mkdir(parents=True)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "b@example.com"],
                ["git", "config", "user.name", "bench"], ["dvc", "init", "-q"]):  # fmt: skip
        sh(*cmd, cwd=repo)
    sh(sys.executable, "-m", "cloudcli", "demo-data", "data", "--n-train", "60", "--n-test", "12", cwd=repo)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["cv"].update(folds=[0, 1])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    sh("dvc", "repro", "-q", "preprocess", "fold", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "base", cwd=repo)
    return repo


def timed_run(base: Path, name: str, workers: int, trainings: list[str] = TRAININGS) -> float:
    repo = base.parent / name
    shutil.copytree(base, repo, symlinks=True)
    start = time.perf_counter()
    sh(sys.executable, "-m", "cloudcli", "run", *trainings, "--workers", str(workers), cwd=repo)
    seconds = time.perf_counter() - start
    stages = json.loads((repo / ".cloudcli/run/last.json").read_text())
    print(f"  {name}: " + ", ".join(f"{r['stage']} {r['seconds']:.1f} s" for r in stages), flush=True)
    return seconds


def oversubscribed(base: Path, cpus: int) -> float:
    """Two trainings at a time, each told it has every core."""
    repo = base.parent / "oversubscribed"
    shutil.copytree(base, repo, symlinks=True)
    env = environment() | {"OMP_NUM_THREADS": str(cpus), "MKL_NUM_THREADS": str(cpus)}
    start = time.perf_counter()
    for pair in (TRAININGS[:2], TRAININGS[2:]):
        procs = []
        for stage in pair:
            model, fold = stage.removeprefix("train@").rsplit("-", 1)
            command = [sys.executable, "-m", "cloudcli", "train", "--model", model, "--fold", fold]
            with open(repo / f"{stage}.log", "w") as log:
                procs.append(subprocess.Popen(command, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT))
        for process, stage in zip(procs, pair):
            if process.wait(timeout=3600):
                raise SystemExit(f"{stage} failed:\n{(repo / f'{stage}.log').read_text()[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        base = setup(Path(tmp))
        seconds = {}
        for how, measure in (
            ("sequential (--workers 1)", lambda: timed_run(base, "sequential", 1)),
            ("parallel (--workers 2, cores divided)", lambda: timed_run(base, "parallel", 2)),
            ("2 at once, each with every core", lambda: oversubscribed(base, cpus)),
            ("unequal: sequential (--workers 1)", lambda: timed_run(base, "unequal-sequential", 1, UNEQUAL)),
            ("unequal: parallel (--workers 2)", lambda: timed_run(base, "unequal-parallel", 2, UNEQUAL)),
        ):
            seconds[how] = measure()
            print(f"{how}: {seconds[how]:.1f} s", flush=True)
    rows = []
    for how, value in seconds.items():
        reference = seconds[
            "unequal: sequential (--workers 1)" if how.startswith("unequal") else "sequential (--workers 1)"
        ]
        rows.append({"how": how, "seconds": round(value, 1), "ratio": round(value / reference, 3)})
    result = {"cpus": cpus, "trainings": TRAININGS, "unequal": UNEQUAL, "rows": rows}
    (args.out / "parallel.json").write_text(json.dumps(result, indent=1))
    print(f"\n{', '.join(TRAININGS)}; unequal: {', '.join(UNEQUAL)}; on {cpus} cores\n")
    print("| how | wall | vs sequential |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['how']} | {r['seconds']:.1f} s | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
