"""How much the zarr map store saves, and what it costs to read, on the maps real models produce.

    make demo && python benchmarks/maps.py --out benchmarks/results     # the demo's predictions

For every prediction folder under --predictions (a model, the ensemble, a pseudo-label model),
each split's maps: their raw size ((N, C, H, W) uint8, what infer wrote before) and their size
stored (<split>.zarr), so the compression ratio; what a model's OOF + test would take at Kaggle
size (5,546 + 3,698 images) at that ratio. Then the speed of one pass over every map, a batch at
a time, as the stages read them: from the zarr store, and, the reference measured in the same
run, from the same maps as raw .npy memory maps (what the stages read before). The page cache is
dropped before each pass where allowed (root), so both start from the disk. Peak RSS of the run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cloudcli.data.maps import batches, open_maps  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from scale import drop_caches  # noqa: E402

KAGGLE = 5546 + 3698  # OOF + test images of the competition
KAGGLE_RAW = KAGGLE * 4 * 350 * 525  # bytes of a model's OOF + test maps, raw


def stored_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def one_pass(arrays: list) -> float:
    """Seconds to read every map of `arrays` once, a batch at a time."""
    drop_caches()
    start = time.perf_counter()
    for a in arrays:
        for rows in batches(len(a)):
            np.asarray(a[rows]).sum()  # touch every byte, as a stage does
    return time.perf_counter() - start


def survey(predictions: Path) -> list[dict]:
    found = []
    for store in sorted(predictions.rglob("*.zarr")):
        maps = open_maps(store.parent, store.stem)
        raw, kept = int(np.prod(maps.shape)), stored_bytes(store)
        found.append({"maps": str(store.relative_to(predictions)), "shape": list(maps.shape), "raw_bytes": raw,
                      "stored_bytes": kept, "ratio": round(raw / max(kept, 1), 2)})  # fmt: skip
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictions", type=Path, default=Path("predictions"), help="prediction folders (make demo's)")
    ap.add_argument("--out", type=Path, help="folder for maps.json")
    a = ap.parse_args()
    rows = survey(a.predictions)
    if not rows:
        raise SystemExit(f"{a.predictions}: no <split>.zarr maps; run `make demo` first")
    print("| maps | images | raw MB | stored MB | ratio |\n|---|---|---|---|---|")
    for r in rows:
        sizes = f"{r['raw_bytes'] / 1e6:.1f} | {r['stored_bytes'] / 1e6:.1f}"
        print(f"| {r['maps']} | {r['shape'][0]} | {sizes} | {r['ratio']:.1f}x |")
    models: dict[str, list[dict]] = {}
    for r in rows:
        if Path(r["maps"]).stem in ("oof", "test"):
            models.setdefault(str(Path(r["maps"]).parent), []).append(r)
    print("\n| model | OOF + test ratio | OOF + test at Kaggle size, GB |\n|---|---|---|")
    per_model = {}
    for name, parts in models.items():
        ratio = sum(p["raw_bytes"] for p in parts) / sum(p["stored_bytes"] for p in parts)
        per_model[name] = {"ratio": round(ratio, 2), "kaggle_gb": round(KAGGLE_RAW / ratio / 1e9, 2)}
        print(f"| {name} | {ratio:.1f}x | {KAGGLE_RAW / ratio / 1e9:.2f} |")
    total_raw, total_kept = sum(r["raw_bytes"] for r in rows), sum(r["stored_bytes"] for r in rows)
    stores = [open_maps(a.predictions / Path(r["maps"]).parent, Path(r["maps"]).stem) for r in rows]
    with tempfile.TemporaryDirectory(prefix="cloudcli-maps-") as tmp:
        raws = []
        for i, maps in enumerate(stores):  # the same maps as raw .npy, the reference
            path = Path(tmp) / f"{i}.npy"
            np.save(path, maps[:])
            raws.append(np.load(path, mmap_mode="r"))
        cold = drop_caches()
        zarr_s, raw_s = one_pass(stores), one_pass(raws)
    record = {"maps": rows, "models": per_model, "ratio": round(total_raw / total_kept, 2),
              "read_zarr_s": round(zarr_s, 3), "read_raw_s": round(raw_s, 3), "cold_cache": cold,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}  # fmt: skip
    print(f"\nall maps: {total_raw / 1e6:.0f} MB raw, {total_kept / 1e6:.0f} MB stored, {record['ratio']:.1f}x; "
          f"one pass: zarr {zarr_s:.2f} s, raw .npy {raw_s:.2f} s (zarr / raw {zarr_s / max(raw_s, 1e-9):.2f}x, "
          f"page cache dropped: {'yes' if cold else 'no'}); peak RSS {record['peak_rss_mb']} MB")  # fmt: skip
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "maps.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
