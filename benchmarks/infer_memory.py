"""infer's host memory as the test set grows, with every fold model at once and one at a time.

    python benchmarks/infer_memory.py --out benchmarks/results     # about 5 minutes on 2 cores

In a scratch project: the demo data (60 training images, small JPEGs), the cache, 3 folds and
seg1 trained on each (2 epochs: weights do not change memory). Then `cloudcli infer --model seg1`
in a fresh process, sampled every 50 ms (benchmarks/scale.py's probe: peak heap and peak RSS),
for a test set of --small images (the reference, measured in the same run) and of --large
images, each with `infer.fold_models: all` and `one`. Streaming infer keeps its memory flat: the
ratio large / small of peak heap says how flat. Writes DIR/infer_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from scale import probe  # noqa: E402


def cloudcli(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cloudcli", *args], cwd=root, check=True, capture_output=True, timeout=1800)


def project(root: Path, n_test: int) -> None:
    """The demo data with `n_test` test images, its cache and folds."""
    shutil.rmtree(root / "data", ignore_errors=True)
    cloudcli(root, "demo-data", "data", "--n-train", "60", "--n-test", str(n_test), "--height", "350", "--width", "525")
    cloudcli(root, "preprocess")
    cloudcli(root, "fold")  # the demo's image ids depend on the counts: the models' folds do not matter here


def set_fold_models(root: Path, how: str) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["infer"]["fold_models"] = how
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=40, help="test images of the reference")
    ap.add_argument("--large", type=int, default=640, help="test images of the measured run")
    ap.add_argument("--out", type=Path, help="folder for infer_memory.json")
    a = ap.parse_args()
    gib = 1 << 30
    with tempfile.TemporaryDirectory(prefix="cloudcli-infer-memory-") as tmp:
        root = Path(tmp)
        cloudcli(root, "init")
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["data"].update(raw_size=[350, 525])
        params["train"]["epochs"] = 2
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        project(root, a.small)
        for fold in params["cv"]["folds"]:
            cloudcli(root, "train", "--model", "seg1", "--fold", str(fold))
        results = {}
        for n_test in (a.small, a.large):
            if n_test != a.small:
                project(root, n_test)
            for how in ("all", "one"):
                set_fold_models(root, how)
                try:
                    r = probe([sys.executable, "-m", "cloudcli", "infer", "--model", "seg1"], root, root / "infer.log")
                except SystemExit:
                    print((root / "infer.log").read_text()[-2000:], file=sys.stderr)
                    raise
                results[f"{n_test} test, {how}"] = r | {"n_test": n_test, "fold_models": how}
                print(
                    f"| {n_test} | {how} | {r['wall_s']:.1f} | {r['peak_heap'] / gib:.2f} | {r['peak_rss'] / gib:.2f} |"
                )
    for how in ("all", "one"):
        small, large = results[f"{a.small} test, {how}"], results[f"{a.large} test, {how}"]
        growth = large["peak_heap"] / small["peak_heap"]
        print(f"fold_models {how}: {a.large / a.small:.0f}x the test images, peak heap x{growth:.2f}")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        record = {"cpus": len(os.sched_getaffinity(0)), "runs": results}
        (a.out / "infer_memory.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
