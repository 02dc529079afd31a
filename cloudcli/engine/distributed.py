"""Single process or torchrun DistributedDataParallel: who am I, which device, reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from cloudcli.errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int  # global rank; rank 0 alone writes files
    world: int  # number of processes
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """auto: cuda > mps > cpu. An explicit device that is not available is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA GPU is visible; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device: mps requested but not available on this machine; use auto or cpu")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def setup(device: str) -> Context:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Context(rank=rank, world=world, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_sum(values: np.ndarray, ctx: Context) -> np.ndarray:
    """Element-wise sum over processes of a float64 vector."""
    if ctx.world == 1:
        return values
    t = torch.as_tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.numpy()


def all_gather(obj: object, ctx: Context) -> list:
    if ctx.world == 1:
        return [obj]
    out: list = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out
