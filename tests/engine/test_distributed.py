"""Collectives and DDP steps in two gloo processes on CPU (spawned here, joined with a timeout)."""

import json
import multiprocessing

import numpy as np
import torch
from ddp_worker import worker

from cloudcli.engine.distributed import Context, accumulator, all_gather_rows, all_min, all_sum, comm_device


def test_collectives_and_accumulation_over_two_processes_with_uneven_shards(tmp_path) -> None:
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=worker, args=(rank, str(tmp_path))) for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert r0["sum"] == r1["sum"] == [2.0, 1.0]
    assert r0["sum_of_device_tensor"] == [1.0, 2.0**-40]  # float64 all the way
    assert r0["min"] == r1["min"] == 3
    assert r0["rows"] == r1["rows"] == [[0.0] * 3, [0.0] * 3, [1.0] * 3]  # rank order, padding trimmed
    assert r0["seen"] == r1["seen"] == 14  # (4 + 3) batches of 2
    # Gradients are all-reduced only when the optimiser steps, but for the last group, which rank 1 does
    # not complete: there every step syncs, so that both issue the same all-reduces (no hang)
    assert r0["no_sync"] == r1["no_sync"] == 1
    assert r0["weights"] == r1["weights"]  # join() hands the last joiner's weights to all


def test_single_process_collectives_stay_on_the_host_dtype() -> None:
    ctx = Context(rank=0, world=1, device=torch.device("cpu"))
    assert comm_device(ctx) == torch.device("cpu")
    assert accumulator(ctx).dtype == torch.float64
    assert all_sum(np.array([1.5, 2.0]), ctx).tolist() == [1.5, 2.0]
    assert all_gather_rows(torch.ones(2, 3), ctx).shape == (2, 3) and all_min(5, ctx) == 5
