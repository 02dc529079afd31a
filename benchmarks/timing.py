"""Timing shared by the throughput benchmarks (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import time

import torch


def timed(fn, batches: int, batch_size: int, device: torch.device) -> float:
    """images/s of `fn(i)` over `batches` calls, after 2 warm-up calls."""
    for i in range(2):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(batches):
        fn(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)
