"""The 1st place's and On Cloud N's recipes measured on the demo data: SWA, the class-head gate,
scale TTA and grouped folds, each against what it replaces.

    python benchmarks/recipes.py --out benchmarks/results     # about 15 minutes on 2 cores

Clouds demo (`cloudcli demo-data`, the defaults' 3 folds of 4 epochs, as `make demo`), run stage
by stage in a scratch folder, one torch job at a time:

- seg1, seg1 with `train.swa: {epochs: 2}` (the last 2 of 4 epochs averaged), seg1h (seg1 with a
  class head, loss {bce: 1.0, class_head: 0.4}) and the classifier, each on the 3 folds;
- their CV Dice at p > 0.5 (`cloudcli cv`);
- the two-stage pipeline of seg1's own masks (`tune.shape: null`), tuned out of fold and applied
  to the hidden test labels (`submit`), for: seg1 vs seg1 + SWA (classifier gate); seg1h gated by
  the classifier vs by its own head (`tune.classifier: seg1h`); and seg1 predicted with no TTA,
  the flips, scale TTA (`infer.scales: [1.0, 1.25]`) and both.

Chips demo (`cloudcli demo-data --kind chips`, the chips preset: 5 folds of 6 epochs): seg1's CV
with folds stratified on location (the preset) against folds grouped by location
(`fold.group: location`, no location in two folds).

Printed as Markdown tables; written to DIR/recipes.json.
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
sys.path.insert(0, str(REPO))

from cloudcli.config.presets import preset_params  # noqa: E402

FOLDS = (0, 1, 2)
SEG1H = {"role": "seg1", "loss": {"bce": 1.0, "class_head": 0.4}}
FOLD_ARMS = {
    "stratified by location": {"group": None, "stratify": ["location", "coverage"]},
    "grouped by location": {"group": "location", "stratify": ["coverage"]},
}
SEG1_SWA = {"role": "seg1", "loss": {"bce": 1.0}, "train": {"swa": {"epochs": 2}}}


def cloudcli(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "cloudcli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        raise SystemExit(f"cloudcli {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def read(folder: Path, path: str) -> dict:
    return json.loads((folder / path).read_text())


def clouds(work: Path) -> dict:
    folder = work / "clouds"
    folder.mkdir()
    cloudcli("demo-data", "data", cwd=folder)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"].update(seg1_swa=SEG1_SWA, seg1h=SEG1H)
    params["cv"]["models"] = ["seg1", "seg1_swa", "seg1h", "classifier"]
    params["pseudo_rounds"] = {}
    params["pseudo"].update(shape=[])
    params["ensemble"].update(members=["seg1", "seg1h"])  # unused (tune.shape: null), but checked
    params["tune"].update(shape=None)
    params["report"]["models"] = ["ensemble", "seg1"]
    write_params(folder, params)
    for stage in ("preprocess", "fold"):
        cloudcli(stage, cwd=folder)
    for model in params["cv"]["models"]:
        for k in FOLDS:
            print(f"train {model} fold {k}", flush=True)
            cloudcli("train", "--model", model, "--fold", str(k), cwd=folder)
    cloudcli("cv", cwd=folder)
    out = {"cv": read(folder, "metrics/cv.json"), "pipelines": {}}
    for model in ("seg1_swa", "seg1h", "classifier"):
        cloudcli("infer", "--model", model, cwd=folder)
    arms = {
        "seg1, flips": ("seg1", "classifier", (["none", "hflip", "vflip"], [1.0])),
        "seg1, no TTA": ("seg1", "classifier", (["none"], [1.0])),
        "seg1, scales 1 + 1.25": ("seg1", "classifier", (["none"], [1.0, 1.25])),
        "seg1, flips + scales 1 + 1.25": ("seg1", "classifier", (["none", "hflip", "vflip"], [1.0, 1.25])),
        "seg1 + SWA, flips": ("seg1_swa", "classifier", None),
        "seg1h, classifier gate": ("seg1h", "classifier", None),
        "seg1h, its head's gate": ("seg1h", "seg1h", None),
    }
    for arm, (seg1, gate, views) in arms.items():
        if views is not None:
            params["infer"].update(tta=views[0], scales=views[1])
            write_params(folder, params)
            cloudcli("infer", "--model", "seg1", cwd=folder)
        params["tune"].update(seg1=seg1, classifier=gate)
        write_params(folder, params)
        cloudcli("tune", cwd=folder)
        cloudcli("submit", cwd=folder)
        tuned, test = read(folder, "metrics/tune.json"), read(folder, "metrics/test.json")
        out["pipelines"][arm] = {"cv": tuned["after"]["dice"], "test": test["dice"]}
        print(f"{arm}: CV {tuned['after']['dice']:.3f}, test {test['dice']:.3f}", flush=True)
    return out


def chips(work: Path) -> dict:
    base = work / "chips"
    base.mkdir()
    cloudcli("demo-data", preset_params("chips")["data"]["raw"], "--kind", "chips", cwd=base)
    out = {}
    for arm, fold in FOLD_ARMS.items():
        folder = work / arm.replace(" ", "_")
        shutil.copytree(base, folder)
        params = preset_params("chips")
        params["fold"].update(fold)
        params["cv"]["models"] = ["seg1"]
        params["pseudo_rounds"] = {}
        params["pseudo"].update(shape=[], classifier=None, rule="pixels")
        params["ensemble"].update(members=["seg1"])
        params["tune"].update(shape=None, classifier=None, class_score="none")
        params["report"]["models"] = ["seg1"]
        write_params(folder, params)
        for stage in ("preprocess", "fold"):
            cloudcli(stage, cwd=folder)
        for k in params["cv"]["folds"]:
            print(f"chips, {arm}: train seg1 fold {k}", flush=True)
            cloudcli("train", "--model", "seg1", "--fold", str(k), cwd=folder)
        cloudcli("cv", cwd=folder)
        out[arm] = {"cv": read(folder, "metrics/cv.json")["seg1"], "folds": read(folder, "metrics/folds.json")}
        print(f"chips, {arm}: seg1 {out[arm]['cv']}", flush=True)
    return out


def table(results: dict) -> str:
    cv = results["clouds"]["cv"]
    lines = ["| model (3 folds) | CV Dice at p > 0.5 | other |", "|---|---|---|"]
    for model in ("seg1", "seg1_swa", "seg1h", "classifier"):
        m = cv[model]
        lines.append(f"| {model} | {m.get('dice', '')} | {m.get('auc', '') or m.get('head_auc', '')} |")
    lines += ["", "| pipeline (seg1's masks, tuned) | CV Dice | test Dice |", "|---|---|---|"]
    for arm, s in results["clouds"]["pipelines"].items():
        lines.append(f"| {arm} | {s['cv']:.3f} | {s['test']:.3f} |")
    lines += ["", "| chips folds | seg1 CV Dice at p > 0.5 |", "|---|---|"]
    for arm, s in results["chips"].items():
        lines.append(f"| {arm} | {s['cv']['dice']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for recipes.json")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        results = {"chips": chips(Path(tmp)), "clouds": clouds(Path(tmp))}
    results["wall_s"] = round(time.perf_counter() - start, 1)
    print(table(results))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "recipes.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
