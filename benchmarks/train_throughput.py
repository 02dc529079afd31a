"""Training throughput: data loader alone, model step alone, and both, in images/s.

    python benchmarks/train_throughput.py                        # params.yaml's seg1 on this machine
    python benchmarks/train_throughput.py --size 384 576 --batch 16 --encoder resnet34 --arch FPN --workers 8

Builds a synthetic preprocessed cache (random pixels and masks: throughput does not depend on
content) at the requested size, then times the three settings on the same model and loader.
The run is bound by whichever of loader and model step is slower; the last line says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import timed
from torch.utils.data import DataLoader

from cloudcli.config import load_params, resolve_model
from cloudcli.data.cache import array_path, pack_masks
from cloudcli.data.dataset import CacheDataset, ShardSampler, build_transform
from cloudcli.data.sources import classes_of
from cloudcli.engine.distributed import pick_device
from cloudcli.models.factory import build_network, normalization
from cloudcli.models.losses import build_loss


def synthetic_cache(folder: Path, n: int, size: tuple[int, int], n_classes: int) -> Path:
    """Random training images and masks in the cache's layout; the images file."""
    rng = np.random.default_rng(0)
    images = array_path(folder, "train_images")
    images.parent.mkdir(parents=True, exist_ok=True)
    np.save(images, rng.integers(0, 256, (n, *size, 3), dtype=np.uint8))
    np.save(array_path(folder, "train_masks"), pack_masks(rng.random((n, n_classes, *size)) < 0.3))
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="seg1", help="a key of `models` in params.yaml")
    ap.add_argument("--size", type=int, nargs=2, help="(H, W); default: preprocess.cache_size")
    ap.add_argument("--batch", type=int, help="default: train.batch_size")
    ap.add_argument("--arch")
    ap.add_argument("--encoder")
    ap.add_argument("--workers", type=int, help="default: train.workers")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batches", type=int, default=10, help="timed batches per setting")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    p = load_params(a.params)
    spec = resolve_model(a.model, p.network, p.train, p.models)
    network_changes = {k: v for k, v in {"arch": a.arch, "encoder": a.encoder}.items() if v}
    train_changes = {"batch_size": a.batch, "workers": a.workers, "precision": a.precision}
    network = dataclasses.replace(spec.network, **network_changes)
    cfg = dataclasses.replace(spec.train, **{k: v for k, v in train_changes.items() if v is not None})
    size = tuple(a.size or p.preprocess.cache_size)
    device = pick_device(a.device)
    n_classes = len(classes_of(p.data))
    torch.manual_seed(0)
    net = build_network(spec.role, network, 3, n_classes).to(device, memory_format=torch.channels_last)
    loss_fn, opt = build_loss(spec.role, spec.loss), torch.optim.Adam(net.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision) if device.type == "cuda" else None
    n = cfg.batch_size * (a.batches + 2)

    with tempfile.TemporaryDirectory() as tmp:
        images = synthetic_cache(Path(tmp), n, size, n_classes)
        transform = build_transform(p.augment, size, size, *normalization(network))
        ds = CacheDataset(
            images, np.arange(n), np.ones((n, n_classes), np.float32), transform, with_masks=spec.role != "classifier"
        )
        loader = DataLoader(
            ds,
            batch_size=cfg.batch_size,
            sampler=ShardSampler(n, shuffle=True),
            drop_last=True,
            num_workers=cfg.workers,
            pin_memory=device.type == "cuda",
        )
        fixed = next(iter(loader))

        def step(batch: dict) -> None:
            x = batch["image"].to(device, non_blocking=True, memory_format=torch.channels_last)
            y = (batch["labels"] if spec.role == "classifier" else batch["masks"]).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        it = iter(loader)
        load_rate = timed(lambda i: next(it), a.batches, cfg.batch_size, device)
        step_rate = timed(lambda i: step(fixed), a.batches, cfg.batch_size, device)
        it = iter(loader)
        both_rate = timed(lambda i: step(next(it)), a.batches, cfg.batch_size, device)

    name = f"{network.arch}-{network.encoder}" if spec.role != "classifier" else f"classifier-{network.encoder}"
    print(
        f"{name} {size[0]}x{size[1]} batch {cfg.batch_size} {device} {dtype or torch.float32} "
        f"workers {cfg.workers} torch threads {torch.get_num_threads()}"
    )
    print(f"loader alone:         {load_rate:8.1f} images/s")
    print(f"model step alone:     {step_rate:8.1f} images/s")
    print(f"loader + model step:  {both_rate:8.1f} images/s")
    bound = "loader" if load_rate < step_rate else "model step"
    print(
        f"bound by the {bound}: loader/step ratio {load_rate / step_rate:.2f}, "
        f"full run reaches {both_rate / min(load_rate, step_rate):.0%} of the slower part"
    )


if __name__ == "__main__":
    main()
