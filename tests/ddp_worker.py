"""A process of the two-process DDP test (tests/engine/test_distributed.py): spawned processes import
their target by module name, so it lives here, on the tests' import path."""

import json
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cloudcli.engine.distributed import Context, all_gather_rows, all_min, all_sum
from cloudcli.engine.loop import Trainer, train_epoch


def worker(rank: int, folder: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    ctx = Context(rank=rank, world=2, device=torch.device("cpu"))
    result = {
        "sum": all_sum(np.array([1.0, rank]), ctx).tolist(),
        "sum_of_device_tensor": all_sum(torch.tensor([0.5, 2.0**-40 * rank], dtype=torch.float64), ctx).tolist(),
        "min": all_min(3 + rank, ctx),
        "rows": all_gather_rows(torch.full((2 - rank, 3), float(rank)), ctx).tolist(),  # 2 rows and 1 row
    }
    # DDP, accumulate 2, uneven shards: rank 0 has 4 batches, rank 1 has 3 (it joins early)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    ddp = DistributedDataParallel(net)
    skipped = []
    no_sync = ddp.no_sync
    ddp.no_sync = lambda: (skipped.append(1), no_sync())[1]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    t = Trainer(ddp, net, nn.BCEWithLogitsLoss(), opt, None, None, None, nullcontext(), ddp)
    g = torch.Generator().manual_seed(rank)
    data = [{"image": torch.randn(2, 6, 1, 1, generator=g), "labels": torch.ones(2, 2)} for _ in range(4 - rank)]
    spec = SimpleNamespace(
        role="classifier", train=SimpleNamespace(accumulate=2, channels_last=False, clip_grad=0.0, scheduler="none")
    )
    _, seen = train_epoch(t, data, spec, ctx, "test")
    result |= {"seen": seen, "no_sync": len(skipped), "weights": [p.tolist() for p in net.parameters()]}
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()
