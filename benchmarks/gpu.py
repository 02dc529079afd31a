"""One-shot GPU benchmark: training and inference throughput, peak memory and the fraction of the
device's peak rate, written to DIR/gpu.json and printed as a Markdown table.

    python benchmarks/gpu.py --out benchmarks/results              # FPN-ResNet34, 384x576, batch 16: < 5 minutes
    python benchmarks/gpu.py --device cpu --tiny --out /tmp/gpu    # smoke run of every part on a CPU: seconds

Training (images/s), on a synthetic cache in the real layout with params.yaml's augment section:
the data loader alone (`--workers` processes), the model step alone (forward + backward + optimiser
step on a batch already on the device), and both (pinned batches copied with non_blocking), for fp32,
bf16 autocast + channels_last, and the same under torch.compile (CUDA only). Inference (images/s):
what `cloudcli infer` does per batch, for TTA none, none+hflip, none+hflip+vflip, one forward per
view (sequential) or all views in one batch (stacked). The FLOPs of one training step are counted
(FlopCounterMode), not estimated; times the measured steps/s over the device's dense bf16 peak they
give the fraction of peak. Random weights and pixels: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from timing import sync, timed
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from train_throughput import synthetic_cache

from cloudcli.config import load_params, resolve_model
from cloudcli.data.dataset import CacheDataset, ShardSampler, build_transform
from cloudcli.data.sources import classes_of
from cloudcli.engine.distributed import pick_device
from cloudcli.engine.optim import build_optimizer
from cloudcli.engine.predict import predict, to_uint8
from cloudcli.io import write_json
from cloudcli.models.factory import build_network, normalization
from cloudcli.models.losses import build_loss

# Dense bf16 tensor-core peaks (TFLOP/s, no 2:4 sparsity) by device name; the first match wins.
PEAK_BF16_TFLOPS = (
    (r"H200(?! NVL)", 989.0),  # H200 SXM
    (r"H100 (80GB HBM3|SXM)", 989.0),  # H100 SXM (the PCIe and NVL cards are slower: not listed)
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"A10G", 70.0),
    (r"RTX 4090", 165.0),
)
REFERENCE = {"arch": "FPN", "encoder": "resnet34", "size": (384, 576), "batch": 16, "batches": 20}
TINY = {"arch": "FPN", "encoder": "resnet18", "size": (64, 96), "batch": 4, "batches": 2, "workers": 0}
TRAIN_SETTINGS = (  # name, autocast precision, channels_last, torch.compile
    ("fp32", "fp32", False, False),
    ("bf16 channels_last", "bf16", True, False),
    ("bf16 channels_last compile", "bf16", True, True),
)
TTA_SETTINGS = (("none",), ("none", "hflip"), ("none", "hflip", "vflip"))
COUNTED_WITH = "torch.utils.flop_counter.FlopCounterMode, one forward + backward in fp32"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def count_flops(fn) -> int:
    """FLOPs of the matrix products and convolutions that `fn()` runs, forward and backward, counted
    by torch.utils.flop_counter.FlopCounterMode from each op's shapes (2 per multiply-add; the
    elementwise ops, normalisations included, are not counted, as is usual for the fraction of peak).
    Exact for ungrouped convolutions (tests/test_bench_gpu.py); torch 2.14's counter overcounts the
    backward of grouped ones (5 forwards' worth instead of 2 at groups=4), so for encoders with
    depthwise convolutions (EfficientNet, ...) the count and the fraction of peak come out high."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_for_name(name: str) -> float | None:
    """The dense bf16 peak (TFLOP/s) of a device named so by torch.cuda.get_device_name; None if not listed."""
    return next((tflops for pattern, tflops in PEAK_BF16_TFLOPS if re.search(pattern, name)), None)


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s or None, where it comes from or why it is unknown)."""
    if override:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, f"no peak bf16 rate for a {device.type} device; pass --peak-tflops"
    name = torch.cuda.get_device_name(device)
    if (peak := peak_for_name(name)) is None:
        return None, f"{name!r} is not in PEAK_BF16_TFLOPS; pass --peak-tflops (its dense bf16 peak)"
    return peak, f"PEAK_BF16_TFLOPS, {name} (dense bf16 tensor-core peak)"


def measure(fn, batches: int, batch: int, device: torch.device, warmup: int) -> dict:
    """images/s of `batches` timed calls of `fn(i)` after `warmup` untimed ones; the warm-up's seconds
    (torch.compile compiles there) and the peak GPU memory of both (None off CUDA)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(warmup):
        fn(i)
    sync(device)
    warmup_s = time.perf_counter() - start
    rate = timed(fn, batches, batch, device, warmup=0)
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    return {"images_per_s": rate, "images_timed": batches * batch, "warmup_s": warmup_s, "peak_memory_bytes": peak}


@dataclasses.dataclass
class Bench:
    """What every setting shares: the model spec, the device, the batches and the loader."""

    spec: object  # ResolvedModel with the benchmarked network
    n_classes: int
    size: tuple[int, int]
    batch: int
    batches: int
    device: torch.device
    loader: DataLoader
    fixed: dict  # one batch of the loader, for the model step alone
    warmup: int  # untimed batches: the loader's workers have all delivered their first batch

    def network(self, channels_last: bool) -> torch.nn.Module:
        torch.manual_seed(0)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return build_network(self.spec.role, self.spec.network, 3, self.n_classes).to(self.device, memory_format=fmt)

    def to_device(self, batch: dict, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = batch["image"].to(self.device, non_blocking=True, memory_format=fmt)
        return x, batch["masks"].to(self.device, non_blocking=True)


def loader_alone(b: Bench) -> dict:
    """The loader's images/s with nothing consuming its batches."""
    it = iter(b.loader)
    return measure(lambda i: next(it), b.batches, b.batch, b.device, b.warmup)


def train_row(b: Bench, name: str, precision: str, channels_last: bool, compile_: bool, flops: int, peak) -> dict:
    """The model step alone and loader + step for one setting; TFLOP/s and fraction of peak of the step."""
    row = {"name": name, "precision": precision, "channels_last": channels_last, "compile": compile_}
    if compile_ and b.device.type != "cuda":
        return row | {"skipped": "torch.compile is benchmarked on CUDA only"}
    net = b.network(channels_last)
    model = torch.compile(net) if compile_ else net
    loss_fn, opt = build_loss(b.spec.role, b.spec.loss), build_optimizer(net, b.spec.train)
    dtype = DTYPES.get(precision) if b.device.type == "cuda" else None  # CPU runs fp32, as in training

    def step(x: torch.Tensor, y: torch.Tensor) -> None:  # no host sync: nothing is read back
        with torch.autocast(b.device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    fixed = b.to_device(b.fixed, channels_last)
    row["autocast"] = str(dtype).removeprefix("torch.") if dtype else None
    row["step"] = measure(lambda i: step(*fixed), b.batches, b.batch, b.device, warmup=2)
    it = iter(b.loader)
    row["loader_and_step"] = measure(
        lambda i: step(*b.to_device(next(it), channels_last)), b.batches, b.batch, b.device, b.warmup
    )
    achieved = flops * row["step"]["images_per_s"] / b.batch / 1e12  # FLOPs per step x steps/s
    row["step"]["tflops"] = achieved
    row["step"]["fraction_of_peak"] = achieved / peak if peak else None
    return row


def infer_rows(b: Bench, tta_settings: tuple[tuple[str, ...], ...], out_size: tuple[int, int]) -> list[dict]:
    """images/s of `predict` + uint8 + copy to host per TTA setting, sequential and stacked (bf16 on CUDA)."""
    net = b.network(channels_last=True).eval()
    x = torch.randn(b.batch, 3, *b.size, device=b.device).contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if b.device.type == "cuda" else None
    rows = []
    for tta in tta_settings:
        for stacked in (False, True) if len(tta) > 1 else (False,):

            def run(_: int, tta=tta, stacked=stacked) -> None:
                to_uint8(predict([net], x, tta, b.spec.role, out_size, dtype=dtype, stacked=stacked)).cpu()

            result = measure(run, b.batches, b.batch, b.device, warmup=2)
            rows.append({"tta": list(tta), "stacked": stacked, "autocast": "bfloat16" if dtype else None} | result)
    return rows


def device_info(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {
        "type": device.type, "name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "segmentation_models_pytorch": version("segmentation-models-pytorch"),
        "cuda": torch.version.cuda if cuda else None, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }  # fmt: skip


def bound(loader_rate: float, row: dict) -> dict:
    """Which of loader and model step bounds the run (as in train_throughput.py)."""
    step, both = row["step"]["images_per_s"], row["loader_and_step"]["images_per_s"]
    return {
        "setting": row["name"],
        "by": "loader" if loader_rate < step else "model step",
        "loader_over_step": loader_rate / step,
        "loader_and_step_of_slower": both / min(loader_rate, step),
    }


def run(a: argparse.Namespace) -> dict:
    """Every measurement of the run, as gpu.json holds them."""
    s = TINY if a.tiny else REFERENCE
    p = load_params(a.params)
    spec = resolve_model(a.model, p.network, p.train, p.models)
    network = dataclasses.replace(spec.network, arch=s["arch"], encoder=s["encoder"], encoder_weights=None)
    spec = dataclasses.replace(spec, network=network)
    size, batch, batches = tuple(s["size"]), s["batch"], a.batches or s["batches"]
    workers = s["workers"] if a.tiny else (a.workers if a.workers is not None else min(8, os.cpu_count() or 1))
    device = pick_device(a.device)
    n_classes, warmup = len(classes_of(p.data)), workers + 1 if workers else 2
    peak, peak_source = peak_tflops(device, a.peak_tflops)
    settings = {
        "model": a.model, "arch": s["arch"], "encoder": s["encoder"], "size": list(size), "batch": batch,
        "timed_batches": batches, "workers": workers, "tiny": a.tiny, "augment": dataclasses.asdict(p.augment),
        "optimizer": spec.train.optimizer, "loss": spec.loss, "score_size": list(p.data.score_size),
    }  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        n = batch * (warmup + batches)
        images = synthetic_cache(Path(tmp), n, size, n_classes)
        transform = build_transform(p.augment, size, size, *normalization(network))
        ds = CacheDataset(images, np.arange(n), np.ones((n, n_classes), np.float32), transform)
        loader = DataLoader(
            ds, batch_size=batch, sampler=ShardSampler(n), drop_last=True, num_workers=workers,
            pin_memory=device.type == "cuda",
        )  # fmt: skip
        b = Bench(spec, n_classes, size, batch, batches, device, loader, next(iter(loader)), warmup)
        loader_row = {"workers": workers} | loader_alone(b)
        flops = count_flops(lambda: b.network(False)(torch.zeros(batch, 3, *size, device=device)).sum().backward())
        train = [train_row(b, *setting, flops, peak) for setting in TRAIN_SETTINGS]
        infer = infer_rows(b, TTA_SETTINGS, tuple(p.data.score_size))
    ran = [r for r in train if "skipped" not in r]
    fastest = max(ran, key=lambda r: r["step"]["images_per_s"])
    return {
        "device": device_info(device),
        "settings": settings,
        "flops": {"train_step": flops, "per_image": flops / batch, "counted_with": COUNTED_WITH},
        "peak": {"bf16_tflops": peak, "source": peak_source},
        "loader": loader_row,
        "train": train,
        "infer": infer,
        "bound": bound(loader_row["images_per_s"], fastest),
        "seconds": time.perf_counter() - start,
    }


def table(r: dict) -> str:
    """The Markdown table of a run: one row per measurement."""
    gib = lambda m: "" if m["peak_memory_bytes"] is None else f"{m['peak_memory_bytes'] / 2**30:.2f}"  # noqa: E731
    rows = [("loader", f"{r['loader']['workers']} workers", r["loader"], "", "")]
    for t in r["train"]:
        if "skipped" in t:
            rows.append(("train step", t["name"], None, "", t["skipped"]))
            continue
        of_peak = "" if t["step"]["fraction_of_peak"] is None else f"{t['step']['fraction_of_peak']:.1%}"
        note = f"warm-up {t['step']['warmup_s']:.1f} s" + ("" if t["autocast"] else ", fp32 (no autocast)")
        rows.append(("train step", t["name"], t["step"], f"{t['step']['tflops']:.2f} / {of_peak or '-'}", note))
        rows.append(("train loader + step", t["name"], t["loader_and_step"], "", ""))
    for i in r["infer"]:
        how = " stacked" if i["stacked"] else ""
        rows.append(("infer", f"TTA {'+'.join(i['tta'])}{how}", i, "", ""))
    lines = [
        "| part | setting | images/s | images timed | peak GPU memory (GiB) | TFLOP/s / of bf16 peak | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for part, setting, m, flops, note in rows:
        cells = ["skipped", "", ""] if m is None else [f"{m['images_per_s']:.1f}", str(m["images_timed"]), gib(m)]
        lines.append(f"| {part} | {setting} | {' | '.join(cells)} | {flops} | {note} |")
    return "\n".join(lines)


def report(r: dict) -> str:
    d, s, bnd, flops = r["device"], r["settings"], r["bound"], r["flops"]
    head = (
        f"{d['name']} ({d['type']}), torch {d['torch']}, smp {d['segmentation_models_pytorch']}: "
        f"{s['arch']}-{s['encoder']} {s['size'][0]}x{s['size'][1]} batch {s['batch']}, "
        f"{s['timed_batches']} timed batches, {s['workers']} loader workers"
    )
    return (
        f"{head}\n\n{table(r)}\n\n{flops['per_image'] / 1e9:.2f} GFLOP per training image (counted: forward + "
        f"backward); peak: {r['peak']['bf16_tflops'] or 'unknown'} ({r['peak']['source']})\n"
        f"bound by the {bnd['by']} ({bnd['setting']}): loader/step ratio {bnd['loader_over_step']:.2f}, "
        f"loader + step reaches {bnd['loader_and_step_of_slower']:.0%} of the slower part"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu.json")
    ap.add_argument("--params", default="params.yaml", help="its augment section, data.score_size and the loss")
    ap.add_argument("--model", default="seg1", help="a key of `models` in params.yaml: role, loss, optimizer")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, help="DataLoader processes; default min(8, CPU count)")
    ap.add_argument("--batches", type=int, help=f"timed batches per setting (default {REFERENCE['batches']})")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    ap.add_argument("--tiny", action="store_true", help=f"smoke run: {TINY}")
    a = ap.parse_args()
    result = run(a)
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "gpu.json", result)
    print(report(result))
    print(f"\nwrote {a.out / 'gpu.json'} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
