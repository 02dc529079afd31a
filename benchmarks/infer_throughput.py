"""Inference throughput with test-time augmentation (TTA), in images/s.

    python benchmarks/infer_throughput.py                          # params.yaml's seg1 and infer.tta
    python benchmarks/infer_throughput.py --size 384 576 --batch 16 --encoder resnet34 --device cuda

Times what `cloudcli infer` does per batch: forward passes over the TTA views, mean sigmoid,
resize to 350x525, uint8 levels, copy to host. Reference, in the same run: a single view (no TTA).
Also times the views stacked into one batch (one forward per batch instead of one per view).
Random weights and inputs: throughput does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from timing import timed

from cloudcli.config import load_params, resolve_model
from cloudcli.data.sources import classes_of
from cloudcli.engine.distributed import pick_device
from cloudcli.engine.predict import predict, to_uint8
from cloudcli.models.factory import build_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="seg1", help="a key of `models` in params.yaml")
    ap.add_argument("--size", type=int, nargs=2, help="(H, W) fed to the network; default: preprocess.cache_size")
    ap.add_argument("--batch", type=int, help="default: infer.batch_size")
    ap.add_argument("--arch")
    ap.add_argument("--encoder")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="default: infer.precision (CUDA only)")
    ap.add_argument("--batches", type=int, default=10, help="timed batches per setting")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    p = load_params(a.params)
    spec = resolve_model(a.model, p.network, p.train, p.models)
    changes = {k: v for k, v in {"arch": a.arch, "encoder": a.encoder}.items() if v}
    network = dataclasses.replace(spec.network, **changes)
    size, batch = tuple(a.size or p.preprocess.cache_size), a.batch or p.infer.batch_size
    device = pick_device(a.device)
    precision = a.precision or p.infer.precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if device.type == "cuda" else None
    torch.manual_seed(0)
    net = (
        build_network(spec.role, network, 3, len(classes_of(p.data)))
        .to(device, memory_format=torch.channels_last)
        .eval()
    )
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)
    out_size = None if spec.role == "classifier" else tuple(p.data.score_size)

    def run(tta: tuple[str, ...], stacked: bool) -> float:
        def step(_: int) -> None:
            probs = predict([net], x, tta, spec.role, out_size, dtype=dtype, stacked=stacked)
            (probs if spec.role == "classifier" else to_uint8(probs)).cpu()

        return timed(step, a.batches, batch, device)

    name = f"{network.arch}-{network.encoder}" if spec.role != "classifier" else f"classifier-{network.encoder}"
    print(
        f"{name} {size[0]}x{size[1]} batch {batch} {device} {dtype or torch.float32} "
        f"torch threads {torch.get_num_threads()}; output {out_size or 'class probabilities'}"
    )
    single = run(("none",), False)
    print(f"{'single view (reference)':34s} {single:8.1f} images/s")
    settings = [tuple(p.infer.tta), ("none", "hflip", "vflip", "hvflip")]
    for tta in dict.fromkeys(settings):
        for stacked in (False, True):
            r = run(tta, stacked)
            label = f"TTA {'+'.join(tta)}{' stacked' if stacked else ''}"
            print(f"{label:34s} {r:8.1f} images/s  ({r / single:.2f}x the single view, {len(tta)} views)")


if __name__ == "__main__":
    main()
