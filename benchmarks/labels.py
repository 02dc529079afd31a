"""Bad labels on the demo: does the suspect ranking find the mislabelled images, and what do leaving
them out and relabelling them do to the scores?

    python benchmarks/labels.py --out benchmarks/results     # about 25 minutes on 2 cores

Kaggle-clouds demo data (`cloudcli demo-data --label-noise 0.15`: 120 training images, 18 of them
with a wrong mask, a third each dropped, shifted or swapped; 40 test images, whose hidden labels
are clean). The answer key (label_noise.csv, train_truth.csv) is moved out of data/, so no stage
can read it. A git + DVC repository with the repository's params.yaml (make demo's settings),
reproduced with `cloudcli run --workers 2` after each step, which reruns what the step changed:

1. noisy: the whole pipeline on the labels as given. CV: the tuned pipeline out of fold
   (metrics/tune.json after.dice), scored against the given, noisy labels; test: submission.csv
   against the hidden test labels (metrics/test.json); each model's metrics/cv.json.
2. ranking: reports/labels/suspects.csv of that run against the answer key, k = the corrupted
   images: precision at k and at k/2 (share of the top suspects that are corrupted), chance
   (k / n_train: what a random ranking averages), the probability that a random ranking does as
   well, and per kind of corruption the share found in the top k and the kinds the report named.
3. excluded: the top k suspects written to labels/exclude.txt, data.exclude set (fold, then every
   training rerun). CV is over the remaining images only (and against their given labels), so it
   is not comparable with step 1's; test is.
4. relabelled: pseudo.sources [test, excluded] as well (pseudo round r1 of params.yaml): r1 keeps
   and labels the excluded images it is confident of, as it does test images, and its seg2_pl
   trains with them. Images relabelled (metrics/pseudo/r1.json, and distinct over the folds'
   sets), and at data.score_size the Dice of their new masks (pseudo/r1/fold<k>/labels.csv)
   against the true labels (train_truth.csv), beside the Dice of the labels they were given.

With --clean (the default) the same pipeline on the same demo without noise: the reference row.
Every params edit is validated (load_params) before it runs. Printed as Markdown tables; written
to DIR/labels.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudcli.config import ConfigError, load_params  # noqa: E402
from cloudcli.data.cache import resize_mask  # noqa: E402
from cloudcli.data.exclude import read_exclude  # noqa: E402
from cloudcli.metrics import kaggle_dice  # noqa: E402
from cloudcli.rle import decode  # noqa: E402

NOISE = 0.15
KEY = ("label_noise.csv", "train_truth.csv")  # the answer key demo-data writes beside the data
NAMED = {"dropped": "missing label", "shifted": "wrong place", "swapped": "wrong class"}  # what the report should say


def environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}  # fmt: skip


def sh(*cmd: str, cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=7200)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def cloudcli(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "cloudcli", *args, cwd=cwd)


def write_params(repo: Path, params: dict) -> None:
    """params.yaml, validated as the stages will read it: a bad edit fails here, before any run."""
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        load_params(repo / "params.yaml")
    except ConfigError as e:
        raise SystemExit(f"benchmark params rejected: {e}") from None


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read(repo: Path, path: str) -> dict:
    return json.loads((repo / path).read_text())


def setup(folder: Path, noise: float) -> Path:
    """A git + DVC repository with the demo data (the answer key moved to folder/key), the
    repository's dvc.yaml, labels/ and params.yaml, committed."""
    repo = folder / "repo"
    repo.mkdir(parents=True)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "b@example.com"],
                ["git", "config", "user.name", "bench"], ["dvc", "init", "-q"]):  # fmt: skip
        sh(*cmd, cwd=repo)
    cloudcli("demo-data", "data", "--label-noise", str(noise), cwd=repo)
    if noise:
        (folder / "key").mkdir()
        for name in KEY:
            shutil.move(repo / "data" / name, folder / "key" / name)
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(REPO / "labels", repo / "labels")  # the fold stage depends on it (data.exclude)
    write_params(repo, yaml.safe_load((REPO / "params.yaml").read_text()))
    sh("dvc", "add", "-q", "data", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "demo", cwd=repo)
    return repo


def reproduce(repo: Path, step: str) -> dict:
    """`cloudcli run --workers 2`; the scores after it, its wall time and the stages it ran."""
    print(f"{step}: cloudcli run --workers 2", flush=True)
    start = time.perf_counter()
    cloudcli("run", "--workers", "2", cwd=repo)
    seconds = round(time.perf_counter() - start, 1)
    ran = [r["stage"] for r in read(repo, ".cloudcli/run/last.json")]
    tuned, test = read(repo, "metrics/tune.json")["after"], read(repo, "metrics/test.json")
    n_rows = int(tuned["n_rows"])
    print(f"{step}: CV {tuned['dice']:.4f} ({n_rows // 4} images), test {test['dice']:.4f}; "
          f"{len(ran)} stages in {seconds} s", flush=True)  # fmt: skip
    return {"cv": tuned["dice"], "cv_images": n_rows // 4, "test": test["dice"], "tune": tuned, "test_scores": test,
            "models": read(repo, "metrics/cv.json"), "stages_ran": len(ran), "wall_s": seconds}  # fmt: skip


def hypergeometric_tail(n: int, k: int, hits: int) -> float:
    """P(at least `hits` of the k corrupted images among n in the top k of a random ranking)."""
    return sum(math.comb(k, h) * math.comb(n - k, k - h) for h in range(hits, k + 1)) / math.comb(n, k)


def ranking(suspects: pd.DataFrame, key: pd.DataFrame, n_train: int) -> dict:
    """How well `suspects` (suspects.csv: most suspect first, only images that disagree) finds the
    corrupted images of the answer `key` (label_noise.csv). A list shorter than k counts as
    missing the rest."""
    kind_of = dict(zip(key["image_id"], key["kind"]))
    k = len(kind_of)
    ids = list(suspects["image_id"])
    hits = lambda m: sum(i in kind_of for i in ids[:m])  # noqa: E731
    top = suspects.head(k)
    found = top[top["image_id"].isin(kind_of)]
    kinds = {}
    for kind, n in sorted(Counter(kind_of.values()).items()):
        mine = found[[kind_of[i] == kind for i in found["image_id"]]]
        kinds[kind] = {"corrupted": n, "in_top_k": len(mine), "recall": round(len(mine) / n, 4),
                       "expected_name": NAMED[kind], "named": dict(Counter(mine["kind"]))}  # fmt: skip
    half = max(k // 2, 1)
    return {
        "n_train": n_train,
        "k": k,
        "listed": len(ids),
        "hits_at_k": hits(k),
        "precision_at_k": round(hits(k) / k, 4),
        "precision_at_half_k": round(hits(half) / half, 4),
        "half_k": half,
        "chance": round(k / n_train, 4),
        "p_random_as_good": float(f"{hypergeometric_tail(n_train, k, hits(k)):.3g}"),
        "kinds": kinds,
        "top_k": list(top["image_id"]),
    }


def masks(labels: pd.DataFrame, ids: list[str], classes: list[str], size, score_size) -> np.ndarray:
    """(len(ids), C, h, w) 0/1 masks at `score_size` of Kaggle-format `labels` (RLEs at `size`)."""
    rle = dict(zip(labels["Image_Label"], labels["EncodedPixels"]))
    out = np.zeros((len(ids), len(classes), *score_size), np.uint8)
    for i, image_id in enumerate(ids):
        for c, name in enumerate(classes):
            out[i, c] = resize_mask(decode(rle[f"{image_id}_{name}"], tuple(size)), tuple(score_size))
    return out


def relabelled(repo: Path, key_dir: Path, params: dict) -> dict:
    """The excluded images r1 relabelled, over every fold's set: how many, how many truly
    corrupted, and the Dice against the true labels of their new masks and of their given ones."""
    data = params["data"]
    classes, size, score = data["classes"], data["raw_size"], data["score_size"]
    given, truth = read_csv(repo / "data/train.csv"), read_csv(key_dir / "train_truth.csv")
    corrupted = set(read_csv(key_dir / "label_noise.csv")["image_id"])
    new, old, true, ids = [], [], [], []
    for fold in sorted((repo / "pseudo/r1").glob("fold*")):
        images = read_csv(fold / "images.csv")
        kept = list(images.loc[images["source"] == "excluded", "image_id"])
        new.append(masks(read_csv(fold / "labels.csv"), kept, classes, score, score))
        old.append(masks(given, kept, classes, size, score))
        true.append(masks(truth, kept, classes, size, score))
        ids += kept
    metrics = read(repo, "metrics/pseudo/r1.json")
    out = {"sources_mean_over_folds": metrics.get("sources"), "set_rows": len(ids), "distinct": len(set(ids)),
           "corrupted": len(set(ids) & corrupted), "dice_new_vs_true": None, "dice_given_vs_true": None}  # fmt: skip
    if ids:
        new, old, true = (np.concatenate(a) for a in (new, old, true))
        out["dice_new_vs_true"] = round(kaggle_dice(new, true, tuple(classes)).mean, 4)
        out["dice_given_vs_true"] = round(kaggle_dice(old, true, tuple(classes)).mean, 4)
    return out


def noisy(work: Path) -> dict:
    """Steps 1-4 in one repository."""
    repo = setup(work / "noisy", NOISE)
    key_dir = work / "noisy/key"
    params = yaml.safe_load((repo / "params.yaml").read_text())
    out = {"noisy": reproduce(repo, "noisy")}
    key = read_csv(key_dir / "label_noise.csv")
    train_ids = list(dict.fromkeys(i.rsplit("_", 1)[0] for i in read_csv(repo / "data/train.csv")["Image_Label"]))
    out["ranking"] = rank = ranking(read_csv(repo / "reports/labels/suspects.csv"), key, len(train_ids))
    rank["report"] = read(repo, "metrics/labels.json")
    print(f"ranking: precision at k={rank['k']} {rank['precision_at_k']} (chance {rank['chance']})", flush=True)

    top = rank["top_k"]
    (repo / "labels/exclude.txt").write_text(
        "# the top suspects of reports/labels/suspects.csv\n" + "\n".join(top) + "\n"
    )
    read_exclude(repo / "labels/exclude.txt", train_ids)  # fail early on a bad list
    params["data"]["exclude"] = "labels/exclude.txt"
    write_params(repo, params)
    out["excluded"] = reproduce(repo, "excluded")
    out["excluded"]["excluded_images"] = len(top)

    params["pseudo"]["sources"] = ["test", "excluded"]
    write_params(repo, params)
    out["relabelled"] = reproduce(repo, "relabelled")
    out["relabelled"]["relabel"] = relabelled(repo, key_dir, params)
    return out


def row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(results: dict) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [row("labels", "CV Dice (tuned, OOF)", "CV images", "test Dice"), row(*["---"] * 4)]
    steps = {
        "clean (reference)": "clean",
        "noisy, as given": "noisy",
        "noisy, top k suspects excluded": "excluded",
        "+ excluded images relabelled (pseudo.sources)": "relabelled",
    }
    for name, step in steps.items():
        if step in results:
            s = results[step]
            lines.append(row(name, fmt(s["cv"]), s["cv_images"], fmt(s["test"])))
    r = results["ranking"]
    head = (f"precision at k = {r['k']}", f"at k/2 = {r['half_k']}", "chance (k / n)", "P(random ranking as good)")
    lines += ["", row("suspects.csv ranking", *head), row(*["---"] * 5)]
    lines.append(row("seg1's OOF maps", *map(fmt, (r["precision_at_k"], r["precision_at_half_k"], r["chance"])),
                     f"{r['p_random_as_good']:.2g}"))  # fmt: skip
    lines += ["", row("corruption", "images", "found in the top k", "named by the report"), row(*["---"] * 4)]
    for kind, s in r["kinds"].items():
        named = ", ".join(f"{n} {v}" for v, n in s["named"].items()) or "-"
        lines.append(row(kind, s["corrupted"], f"{s['in_top_k']} ({s['recall']:.0%})", named))
    rel = results["relabelled"]["relabel"]
    head = ("rows", "distinct images", "truly corrupted", "Dice new label vs truth", "Dice given label vs truth")
    lines += ["", row("relabelled by r1 (every fold's set)", *head), row(*["---"] * 6)]
    lines.append(row("excluded images", rel["set_rows"], rel["distinct"], rel["corrupted"],
                     fmt(rel["dice_new_vs_true"]), fmt(rel["dice_given_vs_true"])))  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for labels.json")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--clean", action=argparse.BooleanOptionalAction, default=True,
                        help="also the pipeline on clean labels, the reference row (one more run)")  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        results = noisy(Path(tmp))
        if args.clean:
            results["clean"] = reproduce(setup(Path(tmp) / "clean", 0.0), "clean")
    results["noise"] = NOISE
    results["wall_s"] = round(time.perf_counter() - start, 1)
    print(table(results))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "labels.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
