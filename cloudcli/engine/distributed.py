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


def comm_device(ctx: Context) -> torch.device:
    """Where collectives run: the GPU under NCCL (it reduces CUDA tensors only), the CPU under gloo."""
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")


def accumulator(ctx: Context) -> torch.Tensor:
    """A zero on the device to keep a running sum in without reading it back each step (float64;
    float32 on MPS, which has no float64)."""
    return torch.zeros((), dtype=torch.float32 if ctx.device.type == "mps" else torch.float64, device=ctx.device)


def all_sum(values: np.ndarray | torch.Tensor, ctx: Context) -> np.ndarray:
    """Element-wise sum over processes of a float64 vector (host or device), returned on the host;
    reduced on comm_device(ctx)."""
    t = torch.as_tensor(values).to(comm_device(ctx), torch.float64)
    if ctx.world > 1:
        dist.all_reduce(t)
    return t.cpu().numpy()


def all_min(value: int, ctx: Context) -> int:
    """The smallest `value` over processes."""
    if ctx.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def all_gather_rows(rows: torch.Tensor, ctx: Context) -> np.ndarray:
    """(n_rank, ...) rows of every process, concatenated in rank order on the host; the row counts
    may differ (uneven shards): each process pads to the longest, gathers on comm_device(ctx), trims."""
    rows = rows.to(comm_device(ctx))
    if ctx.world == 1:
        return rows.cpu().numpy()
    counts = [torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(ctx.world)]
    dist.all_gather(counts, torch.tensor([len(rows)], dtype=torch.int64, device=rows.device))
    counts = [int(n) for n in torch.cat(counts).tolist()]
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[: len(rows)] = rows
    out = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, counts)]).cpu().numpy()
