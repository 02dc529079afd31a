"""Timing shared by the throughput benchmarks (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: CUDA calls return before the GPU has finished them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, batches: int, batch_size: int, device: torch.device, warmup: int = 2) -> float:
    """images/s of `fn(i)` over `batches` calls, after `warmup` untimed calls."""
    for i in range(warmup):
        fn(i)
    sync(device)
    start = time.perf_counter()
    for i in range(batches):
        fn(i)
    sync(device)
    return batches * batch_size / (time.perf_counter() - start)
