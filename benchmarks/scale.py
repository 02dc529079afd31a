"""The post-training stages at Kaggle scale: wall time, heap, resident memory and output size.

    python benchmarks/scale.py --fraction 0.25 --out benchmarks/results    # a quarter of the data
    python benchmarks/scale.py --fraction 1.0 --out benchmarks/results     # full size (~12 GB of disk, ~13 min)

Fabricates a project in `infer`'s exact formats at a fraction of the competition's size (5546
training and 3698 test images, 4 classes, maps at 350x525) with the 3rd-place params: the cache's
truth masks (boxes and blobs drawn as the demo draws its labels), 5 folds, the probability maps of
the six base models and the round's pseudo-label model, smooth and correlated with the truth,
each model with errors of its own, and the classifier's probabilities. Then runs `pseudo`,
`ensemble`, `tune`, `submit` and `report predictions` one after the other, each in a process whose
tree is sampled every 50 ms from /proc/PID/smaps_rollup: peak resident memory (RSS) and, of it,
peak heap (anonymous pages; the rest are file pages, chiefly the memory-mapped predictions).

The reference, measured in the same run: reading each stage's input files once (`read once`),
so `wall / read once` says how far a stage is from one pass over its inputs. `infer.fold_test` is
false and the pseudo labels come from the fold models' mean (`pseudo.labels: mean`), so no model
keeps per-fold test maps (5x the test maps' disk and fabrication time), as in the first runs of
this benchmark. Results go to DIR/scale-<fraction>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
import zarr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudcli import CLASSES  # noqa: E402
from cloudcli.config.presets import preset_params  # noqa: E402
from cloudcli.data.cache import pack_masks  # noqa: E402
from cloudcli.data.demo import region_mask, sample_classes  # noqa: E402
from cloudcli.data.maps import SHARD, create_maps, maps_path  # noqa: E402
from cloudcli.post.kernels import class_histograms  # noqa: E402

FULL = (5546, 3698)  # training and test images of the competition
SCORE, RAW = (350, 525), (1400, 2100)
FOLDS = 5
STAGES = {  # stage -> (command after `cloudcli`, its outputs); its inputs: inputs()
    "pseudo": (["pseudo", "--round", "r1"], ["pseudo/r1", "metrics/pseudo"]),
    "ensemble": (["ensemble"], ["ensemble"]),
    "tune": (["tune"], ["tune", "metrics/tune.json", "metrics/stages"]),
    "submit": (["submit"], ["submission.csv", "metrics/test.json"]),
    "report predictions": (["report", "predictions"], ["reports"]),
}
TRAIN_TRUTH, TEST_TRUTH = "artifacts/preprocessed/train/truth.npy", "artifacts/preprocessed/test/truth.npy"


def inputs(p: dict) -> dict[str, list[str]]:
    """The files each stage reads with these params (globs under the project): what `read once` reads."""
    at = {name: str(folder) for name, (_, folder) in models(p).items()}
    pseudo, tune, clf = p["pseudo"], p["tune"], at[p["tune"]["classifier"]]
    first = next(m for m in p["ensemble"]["members"] if "@" not in m)

    def oof(*names: str) -> list[str]:  # maps, histograms, table
        return [f"{at[m]}/oof.*" for m in names]

    def test(*names: str) -> list[str]:
        return [f"{at[m]}/test.*" for m in names]

    reported = [m for m in p["report"]["models"] if m != "ensemble"]
    labellers = (pseudo["seg1"], *pseudo["shape"])
    members = p["ensemble"]["members"]
    return {
        "pseudo": [
            *(f"{at[m]}/oof_hist.npy" for m in labellers),
            *(f"{at[m]}/oof.zarr" for m in pseudo["shape"]),
            *test(*labellers, pseudo["classifier"]),
            *(f"{clf}/oof.csv", TRAIN_TRUTH, TEST_TRUTH),
        ],
        "ensemble": [*oof(*members), *test(*members), TRAIN_TRUTH],
        "tune": [
            *oof(tune["seg1"]),
            f"{at[first]}/oof_hist.npy",
            "ensemble/oof_hist*.npy",
            f"{clf}/oof.csv",
            TRAIN_TRUTH,
        ],
        "submit": [*test(tune["seg1"]), "ensemble/test.*", f"{clf}/test.csv", "tune/*", TEST_TRUTH, "data/*.csv"],
        "report predictions": [
            *oof(*reported, tune["seg1"]),
            *test(*reported),
            *("ensemble/oof.*", f"{clf}/oof.csv", "tune/*", "submission.csv", TRAIN_TRUTH),
        ],
    }


def params() -> dict:
    p = preset_params("3rd_place")
    p["data"].update(raw="data", raw_size=list(RAW), score_size=list(SCORE))
    p["infer"]["fold_test"] = False  # per-fold test maps: 5x the test predictions' disk and drawing time
    p["pseudo"]["labels"] = "mean"
    p["report"].update(worst=4, test_images=2)
    return p


def truth_of(rng: np.random.Generator) -> np.ndarray:
    """(H, W) packed truth of one image: 1-4 classes of boxes and blobs, as the demo labels."""
    masks = np.zeros((len(CLASSES), *SCORE), np.uint8)
    claimed = np.zeros(SCORE, np.uint8)
    for k in sample_classes(rng):
        masks[k] = region_mask(rng, claimed)
        claimed |= masks[k]
    return pack_masks(masks)


def maps_of(packed: np.ndarray, shared: np.random.Generator, own: np.random.Generator, skill: float) -> np.ndarray:
    """(C, H, W) uint8 probabilities of one model for one image: the truth blurred, with smooth
    errors (low-resolution noise upsampled: false regions, holes, soft edges), mostly shared by the
    models (`shared`: seeded by the image; the hard parts of an image are hard for every model) and
    partly the model's own, sharper for a better `skill`. Tuned, the pipeline scores Dice ~0.68, as
    the competition's best did: the search has real work."""
    small = (SCORE[1] // 5, SCORE[0] // 5)
    out = np.empty((len(CLASSES), *SCORE), np.uint8)
    for k in range(len(CLASSES)):
        truth = cv2.resize(((packed >> k) & 1).astype(np.float32), small, interpolation=cv2.INTER_AREA)
        field = 0.85 * shared.normal(0, 1, small[::-1]) + 0.5 * own.normal(0, 1, small[::-1])
        noise = cv2.GaussianBlur(field.astype(np.float32), (0, 0), 3.0)
        logit = skill * (truth - 0.5) * 2.2 + noise / noise.std() * 1.7 - 1.2
        p = cv2.resize(1 / (1 + np.exp(-logit)), SCORE[::-1], interpolation=cv2.INTER_LINEAR)
        out[k] = np.round(p * 255)
    return out


def new_npy(path: Path, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def cache(root: Path, ids: dict[str, list[str]], truth: dict[str, np.ndarray], p: dict) -> None:
    """artifacts/preprocessed as preprocess writes it; images and cache masks are sparse (unread)."""
    meta = {"kind": "kaggle_clouds", "classes": list(CLASSES), "bands": None}
    for part in ("train", "test"):
        folder = root / "artifacts" / "preprocessed" / part
        n = len(ids[part])
        new_npy(folder / "truth.npy", (n, *SCORE))[:] = truth[part]
        new_npy(folder / "images.npy", (n, 16, 24, 3))
        arrays = {f"{part}_truth": [n, *SCORE], f"{part}_images": [n, 16, 24, 3]}
        if part == "train":
            new_npy(folder / "masks.npy", (n, 16, 24))
            arrays["train_masks"] = [n, 16, 24]
        present = {c: ((truth[part].reshape(n, -1) >> k) & 1).max(1) for k, c in enumerate(CLASSES)}
        table = pd.DataFrame({"image_id": ids[part], **(present if part == "train" else {})})
        table.to_csv(folder / "index.csv", index=False)
        extra = {"mask_bits": {c: 1 << k for k, c in enumerate(CLASSES)}, "band_limits": None,
                 "band_mean": [0.5] * 3, "band_std": [0.2] * 3} if part == "train" else {}  # fmt: skip
        params_used = {"data": p["data"], "preprocess": p["preprocess"]}
        (folder / "meta.json").write_text(json.dumps(meta | extra | {"arrays": arrays, "params": params_used}))


def raw(root: Path, ids: dict[str, list[str]]) -> None:
    """data/: train.csv and sample_submission.csv with every row, test_truth.csv for the test score,
    and every JPEG as a link to one grey image (the report draws a few of them)."""
    data = root / "data"
    for folder in ("train_images", "test_images"):
        (data / folder).mkdir(parents=True)
    grey = data / "grey.jpg"
    cv2.imwrite(str(grey), np.full((*RAW, 3), 90, np.uint8))
    for part, folder in (("train", "train_images"), ("test", "test_images")):
        for image_id in ids[part]:
            os.link(grey, data / folder / image_id)
    rows = lambda part: [f"{i}_{c}" for i in ids[part] for c in CLASSES]  # noqa: E731
    pd.DataFrame({"Image_Label": rows("train"), "EncodedPixels": ""}).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"Image_Label": rows("test"), "EncodedPixels": ""}).to_csv(data / "sample_submission.csv", index=False)
    pd.DataFrame({"Image_Label": rows("test"), "EncodedPixels": ""}).to_csv(data / "test_truth.csv", index=False)


def models(p: dict) -> dict[str, tuple[str, Path]]:
    """Every model with predictions: name -> (role, folder), the round's pseudo-label model included."""
    found = {m: (p["models"][m]["role"], Path("predictions/base") / m) for m in p["cv"]["models"]}
    for m in p["pseudo"]["models"]:
        found[f"{m}@r1"] = (p["models"][m]["role"], Path("predictions/r1") / m)
    return found


def _fill(job: tuple) -> None:
    """Maps of rows [start, end) of one split (whole shards), for every segmentation model (one
    worker's share), and their histograms for the OOF split, as infer writes them."""
    root, split, start, end, seed, folders = job
    part = "train" if split == "oof" else "test"
    truth = np.load(root / "artifacts/preprocessed" / part / "truth.npy", mmap_mode="r")
    order = pd.read_csv(root / folders[0][0] / f"{split}.csv", dtype={"image_id": str})["image_id"]
    cache_ids = pd.read_csv(root / f"artifacts/preprocessed/{part}/index.csv", dtype={"image_id": str})["image_id"]
    rows = pd.Index(cache_ids).get_indexer(order[start:end])  # infer's OOF order: grouped by fold
    packed = truth[rows]
    for folder, skill in folders:
        maps = np.stack([maps_of(packed[j], *_rngs(seed, rows[j], skill), skill) for j in range(len(rows))])
        zarr.open_array(root / folder / f"{split}.zarr", mode="r+")[start:end] = maps
        if split == "oof":
            hist = np.load(root / folder / "oof_hist.npy", mmap_mode="r+")
            hist[start:end] = class_histograms(maps, packed)
            hist.flush()


def _rngs(seed: int, row: int, skill: float) -> tuple[np.random.Generator, np.random.Generator]:
    """The image's errors shared by every model, and this model's own."""
    return np.random.default_rng([seed, row]), np.random.default_rng([seed, row, int(skill * 100)])


def predictions(root: Path, ids: dict[str, list[str]], truth: dict[str, np.ndarray], p: dict, workers: int) -> None:
    """predictions/: each model's meta.json, oof and test tables and, for segmentation, maps (and OOF
    histograms) as infer writes them: OOF rows grouped by fold."""
    from concurrent.futures import ProcessPoolExecutor

    folds = np.arange(len(ids["train"])) % FOLDS
    by_fold = np.argsort(folds, kind="stable")
    rng = np.random.default_rng(1)
    seg = []
    for k, (name, (role, folder)) in enumerate(models(p).items()):
        out = root / folder
        out.mkdir(parents=True)
        meta = {"model": name, "role": role, "folds": list(range(FOLDS)), "tta": [], "fold_test": False,
                "score_size": list(SCORE), "classes": list(CLASSES), "input_size": [320, 480]}  # fmt: skip
        (out / "meta.json").write_text(json.dumps(meta))
        for split, part in (("oof", "train"), ("test", "test")):
            order = by_fold if split == "oof" else np.arange(len(ids[part]))
            table = pd.DataFrame(
                {"image_id": np.array(ids[part])[order]} | ({"fold": folds[order]} if split == "oof" else {})
            )
            if role == "classifier":
                present = np.stack(
                    [(truth[part][order].reshape(len(table), -1) >> c & 1).max(1) for c in range(len(CLASSES))], 1
                )
                logit = 3 * (present - 0.5) + rng.normal(0, 1.3, present.shape)  # AUC about 0.87
                probs = (1 / (1 + np.exp(-logit))).round(6)
                table = table.assign(**{c: probs[:, j] for j, c in enumerate(CLASSES)})
            else:
                create_maps(maps_path(out, split), (len(table), len(CLASSES), *SCORE))  # rows filled by _fill
                if split == "oof":
                    new_npy(out / "oof_hist.npy", (len(table), len(CLASSES), 2, 256), np.int32)
            table.to_csv(out / f"{split}.csv", index=False)
        if role != "classifier":
            seg.append((folder, 1.0 + 0.04 * k))
    jobs = []
    for split, part in (("oof", "train"), ("test", "test")):
        n = len(ids[part])
        step = max(SHARD, -(-n // (workers * 8)) // SHARD * SHARD)  # whole shards: workers never share one
        jobs += [(root, split, s, min(n, s + step), 7, seg) for s in range(0, n, step)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_fill, jobs))


def fabricate(root: Path, fraction: float, workers: int) -> dict:
    """The whole project at `fraction` of full size; returns its params."""
    n_train, n_test = (max(FOLDS * 2, round(n * fraction)) for n in FULL)
    ids = {"train": [f"{i:07x}.jpg" for i in range(n_train)], "test": [f"{i + n_train:07x}.jpg" for i in range(n_test)]}
    rng = np.random.default_rng(0)
    truth = {part: np.stack([truth_of(rng) for _ in ids[part]]) for part in ("train", "test")}
    p = params()
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    cache(root, ids, truth, p)
    folds = np.arange(n_train) % FOLDS
    pd.DataFrame({"image_id": ids["train"], "fold": folds}).to_csv(root / "artifacts" / "folds.csv", index=False)
    raw(root, ids)
    predictions(root, ids, truth, p, workers)
    return p


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, anonymous) bytes of a process and its descendants, from /proc/PID/smaps_rollup."""
    import psutil

    rss = anon = 0
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for proc in procs:
        try:
            text = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in text.splitlines()[1:]}
        rss, anon = rss + fields.get("Rss", 0), anon + fields.get("Anonymous", 0)
    return rss, anon


def probe(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run `cmd`, sampling its memory every 50 ms: wall seconds, peak RSS and peak heap (bytes)."""
    start, peak_rss, peak_heap = time.perf_counter(), 0, 0
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=os.environ | {"COLUMNS": "200"}
        )
        while proc.poll() is None:
            rss, heap = tree_memory(proc.pid)
            peak_rss, peak_heap = max(peak_rss, rss), max(peak_heap, heap)
            time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return {"wall_s": round(time.perf_counter() - start, 2), "peak_rss": peak_rss, "peak_heap": peak_heap}


def files_of(root: Path, paths: list[str]) -> list[Path]:
    """Every file under the globs `paths` (files, or folders taken whole), once, sorted."""
    found = {f for p in paths for hit in root.glob(p) for f in ([hit] if hit.is_file() else hit.rglob("*"))}
    return sorted(f for f in found if f.is_file())


def size_of(root: Path, paths: list[str]) -> int:
    return sum(f.stat().st_size for f in files_of(root, paths))


def read_once(root: Path, paths: list[str]) -> float:
    """Seconds to read every input file once, in 16 MiB blocks (the page cache as the stage finds it)."""
    start = time.perf_counter()
    for f in files_of(root, paths):
        with open(f, "rb", buffering=0) as stream:
            while stream.read(1 << 24):
                pass
    return round(time.perf_counter() - start, 2)


def drop_caches() -> bool:
    """Empty the page cache (root only), so each measurement starts from the disk; False if not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def row(name: str, r: dict) -> str:
    gib = 1 << 30
    cells = [f"{r['wall_s']:.1f}", f"{r['read_once_s']:.1f}", f"{r['wall_s'] / max(r['read_once_s'], 0.01):.1f}x"]
    cells += [f"{r[k] / gib:.2f}" for k in ("peak_heap", "peak_rss", "input_bytes")] + [
        f"{r['output_bytes'] / gib:.3f}"
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def measure(root: Path, logs: Path, p: dict) -> dict:
    results, reads = {}, inputs(p)
    for name, (args, outputs) in STAGES.items():
        drop_caches()
        result = probe([sys.executable, "-m", "cloudcli", *args], root, logs / f"{name.replace(' ', '_')}.log")
        drop_caches()
        result |= {"read_once_s": read_once(root, reads[name]), "input_bytes": size_of(root, reads[name])}
        result["output_bytes"] = size_of(root, outputs)
        results[name] = result
        print(row(name, result), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.25, help="share of the competition's images")
    parser.add_argument("--work", type=Path, help="where to fabricate the project (default: a folder in $TMPDIR)")
    parser.add_argument("--out", type=Path, help="folder for scale-<fraction>.json")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes drawing maps")
    parser.add_argument("--keep", action="store_true", help="keep the fabricated project")
    args = parser.parse_args()
    import tempfile

    root = (args.work or Path(tempfile.mkdtemp(prefix="cloudcli-scale-"))) / "project"
    start = time.perf_counter()
    p = fabricate(root, args.fraction, args.workers)
    made = round(time.perf_counter() - start, 1)
    n_train, n_test = (len(pd.read_csv(root / f"artifacts/preprocessed/{p}/index.csv")) for p in ("train", "test"))
    cold = drop_caches()
    print(f"{n_train} train + {n_test} test images (fraction {args.fraction}), fabricated in {made} s "
          f"({size_of(root, ['predictions']) / (1 << 30):.2f} GiB of predictions); page cache dropped before "
          f"each measurement: {'yes' if cold else 'no (not root)'}\n")  # fmt: skip
    print("| stage | wall s | read once s | wall / read once | peak heap GiB | peak RSS GiB | input GiB | output GiB |")
    print("|---|---|---|---|---|---|---|---|")
    logs = root.parent / "logs"
    logs.mkdir(exist_ok=True)
    results = measure(root, logs, p)
    record = {"fraction": args.fraction, "n_train": n_train, "n_test": n_test, "cold_cache": cold,
              "cpus": len(os.sched_getaffinity(0)), "stages": results}  # fmt: skip
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"scale-{args.fraction:g}.json").write_text(json.dumps(record, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
