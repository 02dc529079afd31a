"""Stage `pseudo_rounds`: rounds 2..N of iterative pseudo labelling (params `pseudo_rounds`).

Round 1 is the stages pseudo -> train_pl -> infer_pl. Each later round r:
  1. picks and labels the test images like round 1, except that each base model named in
     `pseudo_rounds.relabel` is replaced by its pseudo model of round r - 1;
  2. trains every pseudo model on every fold with the new set (resuming from last.pt);
  3. predicts with it (out of fold and test).

Layout, under `out` (pseudo/rounds, a persistent DVC output, so an interrupted run resumes):
  r{r}/labels/                  the set (cloudcli.data.pseudo)
  r{r}/models/<model>/fold{k}/  checkpoints, config.json, summary.json, DVCLive curves
  r{r}/predictions/<model>/     OOF and test probabilities (cloudcli.stages.infer)
  r{r}/state.json               what the round's predictions were made from (a rerun skips them)
  meta.json                     the rounds, and where each pseudo model's final predictions are:
                                ensemble, tune and submit read them from there

Metrics: per round, images kept, the labels' Dice on the demo, each pseudo model's CV scores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from cloudcli.config import Params, resolve_model
from cloudcli.data.cache import open_cache
from cloudcli.errors import DataError
from cloudcli.io import write_json
from cloudcli.stages import infer, pseudo, train
from cloudcli.stages.cv import model_score, round_or_none
from cloudcli.ui import info
from cloudcli.versions import versions

PARAMS = ("pseudo_rounds", "pseudo", "model", "train", "augment", "models", "infer", "cv.folds")


def run(
    params: Params,
    predictions: Path,
    first: Path,
    cache: Path,
    folds_csv: Path,
    out: Path,
    metrics: Path,
    params_file: Path = Path("params.yaml"),
) -> dict:
    """Rounds 2..pseudo_rounds.rounds. `first`: round 1's folder (pseudo/, with labels, models, predictions)."""
    cfg, rounds = params.pseudo, params.pseudo_rounds
    report = {"rounds": rounds.rounds, "r1": _round_report(params, first / "labels", first / "models", cache)}
    out.mkdir(parents=True, exist_ok=True)
    for stale in sorted(out.glob("r*")):  # rounds beyond N, from a run with more rounds
        if stale.is_dir() and stale.name[1:].isdigit() and not 2 <= int(stale.name[1:]) <= rounds.rounds:
            shutil.rmtree(stale)
    previous = first / "predictions"
    for r in range(2, rounds.rounds + 1):
        folder = out / f"r{r}"
        sources = _labellers(params, predictions, previous)
        info(f"pseudo round {r} of {rounds.rounds}: labels from " + ", ".join(_names(sources)))
        pseudo.label(cfg, sources, cache, folder / "labels")
        for name in cfg.models:
            _train(params, name, cache, folds_csv, folder, r, params_file)
            _predict(params, name, cache, folds_csv, folder)
        report[f"r{r}"] = _round_report(params, folder / "labels", folder / "models", cache)
        previous = folder / "predictions"
    final = {m: f"r{rounds.rounds}/predictions/{m}" for m in cfg.models} if rounds.rounds > 1 else {}
    meta = {"rounds": rounds.rounds, "relabel": rounds.relabel, "final": final, "versions": versions()}
    write_json(out / "meta.json", meta)
    write_json(metrics, report)
    for r in range(1, rounds.rounds + 1):
        done = report[f"r{r}"]
        scores = ", ".join(f"{m} dice_pos {s.get('dice_pos')}" for m, s in done["models"].items())
        info(f"pseudo round {r}: {done['images']} images kept; {scores}")
    return report


def _labellers(params: Params, predictions: Path, previous: Path) -> pseudo.Labellers:
    """The base labellers, with pseudo_rounds.relabel's replacements taken from the previous round."""
    cfg, relabel = params.pseudo, params.pseudo_rounds.relabel

    def folder(name: str) -> Path:
        return previous / relabel[name] if name in relabel else predictions / name

    return pseudo.Labellers(
        folder(cfg.seg1),
        tuple(folder(m) for m in cfg.shape),
        None if cfg.classifier is None else folder(cfg.classifier),
    )


def _names(sources: pseudo.Labellers) -> list[str]:
    return [str(f) for f in (sources.seg1, *sources.shape, sources.classifier) if f is not None]


def _train(params: Params, name: str, cache: Path, folds_csv: Path, folder: Path, r: int, params_file: Path) -> None:
    spec = resolve_model(name, params.model, params.train, params.models)
    try:
        for k in params.cv.folds:
            out = folder / "models" / name / f"fold{k}"
            if spec.train.processes > 1:  # DDP: the train command relaunches itself under torchrun
                command = [sys.executable, "-m", "cloudcli", "train", "--model", name, "--fold", str(k)]
                command += ["--params", str(params_file), "--cache", str(cache), "--folds", str(folds_csv)]
                command += ["--out", str(out), "--live", str(out / "dvclive"), "--pseudo", str(folder / "labels")]
                if subprocess.run(command).returncode != 0:
                    raise DataError(f"round {r}: training {name} fold {k} failed (see above); rerun to resume it")
                continue
            train.run(spec, params.augment, cache, folds_csv, k, out, out / "dvclive", pseudo=folder / "labels")
    except KeyboardInterrupt:
        info(f"interrupted in round {r}: `dvc repro pseudo_rounds` resumes every fold from its last.pt")
        raise


def _predict(params: Params, name: str, cache: Path, folds_csv: Path, folder: Path) -> None:
    """Infer `name`'s fold models of this round, unless state.json says it was done from the same ones."""
    key = _fingerprint(params, name, folder / "models" / name)
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    target = folder / "predictions" / name
    if state.get(name) == key and (target / "meta.json").exists():
        info(f"infer {name}: {target} is up to date")
        return
    infer.run(name, params.infer, params.cv, folder / "models", cache, folds_csv, target)
    write_json(state_path, state | {name: key})


def _fingerprint(params: Params, name: str, models: Path) -> str:
    parts = [dataclasses.asdict(params.infer), list(params.cv.folds)]
    for k in params.cv.folds:
        for file in ("config.json", "summary.json"):
            path = models / f"fold{k}" / file
            parts.append(json.loads(path.read_text()).get("config_sha1") if file == "config.json" else path.read_text())
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _round_report(params: Params, labels: Path, models: Path, cache: Path) -> dict:
    try:
        meta = json.loads((labels / "meta.json").read_text())
    except FileNotFoundError:
        raise DataError(f"{labels / 'meta.json'}: missing; run `dvc repro pseudo` first") from None
    made = meta.get("report") or {}
    report = {"images": made.get("images"), "share": made.get("share")}
    report["rules_oof_dice"] = round_or_none((made.get("oof") or {}).get("dice"))  # the label rules, out of fold
    if "labels" in made:  # the demo: the labels against the hidden test masks
        report["labels_dice"] = round_or_none(made["labels"]["dice"])
    classes = open_cache(cache).classes
    report["models"] = {
        m: model_score(m, params.models[m].role, params.cv.folds, models, classes) for m in params.pseudo.models
    }
    return report
