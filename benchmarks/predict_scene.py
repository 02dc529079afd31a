"""`cloudcli predict` on whole scenes: megapixels/s and peak RSS for a small and a Sentinel-2-sized
scene, so that memory is seen to be bounded by the tile, not the scene.

    python benchmarks/predict_scene.py --out benchmarks/results            # 2,500^2 and 10,980^2: minutes
    python benchmarks/predict_scene.py --tiny --out /tmp/scene             # 300^2 and 1,200^2: seconds

Each scene is a 4-band uint16 GeoTIFF (a CRS, 10 m pixels, 512-pixel blocks, smooth fields plus
noise, a no-data triangle over a tenth of it, as the edge of a Sentinel-2 swath leaves), predicted
by the real command line in a fresh process (`python -m cloudcli predict BUNDLE SCENE --out DIR`),
whose peak RSS the kernel reports (wait4); megapixels/s is over the prediction loop's own time
(its last progress line: reading, predicting, judging and writing), the whole command's wall
time (with Python, torch and the models' loading) beside it. The bundle is the chips preset's shape at On Cloud N's
chip size: seg1 and a classifier (FPN and ResNet-18, random weights: speed does not depend on
them), one fold, no TTA, 512-pixel training images seen at 256 by the networks. The reference
row is one 512x512 chip through the same command: what loading Python, torch and the models
costs, whatever the input. Printed as a Markdown table, written to DIR/predict_scene.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudcli.bundle.export import FORMAT, FORMAT_VERSION  # noqa: E402
from cloudcli.bundle.manifest import write_manifest  # noqa: E402
from cloudcli.config import NetworkConfig  # noqa: E402
from cloudcli.models.factory import build_network  # noqa: E402

BANDS = ["B02", "B03", "B04", "B08"]
FULL = {"sizes": (2500, 10980), "raw": 512, "net": 256}
TINY = {"sizes": (300, 1200), "raw": 128, "net": 64}


def write_bundle(folder: Path, raw: int, net: int) -> None:
    """A bundle of seg1 + classifier (FPN ResNet-18, random weights) for 4-band uint16 chips."""
    torch.manual_seed(0)
    settings = {
        "network": {"arch": "FPN", "encoder": "resnet18", "encoder_weights": None, "freeze_encoder_stages": 0},
        "input_size": [net, net],
        "normalization": {"mean": [0.4] * 4, "std": [0.3] * 4},
        "in_channels": 4,
        "classes": ["cloud"],
        "train_config": {"channels_last": True},
    }
    models = {}
    for role in ("seg1", "classifier"):
        network = build_network(role, NetworkConfig(**settings["network"]), 4, 1).eval()
        (folder / "models" / role).mkdir(parents=True)
        torch.save({"model": network.state_dict()}, folder / "models" / role / "fold0.pt")
        models[role] = {"role": role, "folds": [0], "tta": ["none"], "settings": {"role": role, **settings}}
    rule = {"level": 127, "threshold": 0.5, "min_area": 100, "min_component": 0, "shape_level": 127}
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": ["cloud"],
        "input": {"kind": "chips", "raw_size": [raw, raw], "cache_size": [net, net], "score_size": [raw, raw]}
        | {"bands": BANDS, "band_limits": [[0.0, 10000.0]] * 4, "nodata": 0, "channels": 4},
        "infer": {"batch_size": 16, "precision": "fp32", "stack_tta": False},
        "models": models,
        "pipeline": {"seg1": "seg1", "shape": None, "classifier": "classifier", "class_score": "classifier"}
        | {"top_k": 200, "at_least_one": False, "rules": {"cloud": rule | {"gate_threshold": 0.5}}},
        "versions": {"torch": torch.__version__},
    }
    (folder / "bundle.json").write_text(json.dumps(spec, indent=1))
    write_manifest(folder)


def write_scene(path: Path, size: int, seed: int = 0) -> None:
    """A size x size 4-band uint16 GeoTIFF, written 512 rows at a time (the generator stays small)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 4, "dtype": "uint16", "nodata": 0}
    profile |= {"tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    profile |= {"crs": "EPSG:32633", "transform": from_origin(600000, 5000000, 10, 10)}
    coarse = rng.uniform(500, 9000, (4, size // 256 + 2, size // 256 + 2)).astype(np.float32)
    gx = np.arange(size) / 256
    x0, fx = gx.astype(int), (gx % 1).astype(np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, 512):
            h = min(512, size - y)
            gy = np.arange(y, y + h) / 256
            y0, fy = gy.astype(int)[:, None], (gy % 1).astype(np.float32)[:, None]
            block = np.empty((4, h, size), np.uint16)
            for b, c in enumerate(coarse):  # smooth fields: the coarse grid, bilinearly interpolated
                top = c[y0, x0] * (1 - fx) + c[y0, x0 + 1] * fx
                bottom = c[y0 + 1, x0] * (1 - fx) + c[y0 + 1, x0 + 1] * fx
                field = top * (1 - fy) + bottom * fy + rng.normal(0, 150, (h, size)).astype(np.float32)
                block[b] = np.clip(field, 1, 10000).astype(np.uint16)
            corner = np.arange(y, y + h)[:, None] + np.arange(size)[None] > 1.55 * size
            block[:, corner] = 0  # no data: a triangle of a tenth of the scene
            dst.write(block, window=Window(0, y, size, h))


def predict(bundle: Path, scene: Path, out: Path) -> dict:
    """The real command line on one input in a fresh process: wall time and the process's peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "cloudcli", "predict", str(bundle), str(scene), "--out", str(out)]
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the child
        child = subprocess.Popen([*command, "--device", "cpu"], env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    said = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"predict failed on {scene}:\n{said}")
    loop = re.findall(r"predict: \d+/\d+ image rows \(100%\) ([\d.]+)s", said)  # the progress line's clock
    return {
        "wall_s": round(wall, 2),
        "predict_s": float(loop[-1]),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "said": said.strip()[-300:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", action="store_true", help="small scenes and chips: a smoke run")
    args = parser.parse_args()
    setup = TINY if args.tiny else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        work = Path(tmp)
        write_bundle(work / "bundle", setup["raw"], setup["net"])
        inputs = [("one chip (reference)", setup["raw"])] + [(f"{s}x{s} scene", s) for s in setup["sizes"]]
        for name, size in inputs:
            scene = work / f"scene{size}.tif"
            write_scene(scene, size)
            result = predict(work / "bundle", scene, work / f"pred{size}")
            mp = size * size / 1e6
            speed = round(mp / max(result["predict_s"], 0.1), 3)
            rows.append({"input": name, "pixels": size * size, "megapixels_per_s": speed})
            rows[-1] |= result
            scene.unlink()
    small, big = rows[1], rows[2]
    summary = {
        "rows": rows,
        "rss_big_over_small": round(big["peak_rss_mib"] / small["peak_rss_mib"], 3),
        "rss_small_over_reference": round(small["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3),
        "speed_big_over_small": round(big["megapixels_per_s"] / small["megapixels_per_s"], 3),
        "setup": {k: list(v) if isinstance(v, tuple) else v for k, v in setup.items()}
        | {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__},
    }
    (args.out / "predict_scene.json").write_text(json.dumps(summary, indent=1))
    print("| input | megapixels | predicting | whole command | megapixels/s | peak RSS |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['pixels'] / 1e6:.2f} | {r['predict_s']:.1f} s | {r['wall_s']:.1f} s | "
              f"{r['megapixels_per_s']:.3f} | {r['peak_rss_mib']:.0f} MiB |")  # fmt: skip
    print(
        f"\npeak RSS big/small scene: {summary['rss_big_over_small']:.3f} (bar: at most 1.25); "
        f"small scene/one chip: {summary['rss_small_over_reference']:.3f}; "
        f"speed big/small: {summary['speed_big_over_small']:.3f}"
    )


if __name__ == "__main__":
    main()
