"""Process-parallel map with a progress bar; in-process when workers == 1. And the cap on worker
processes that `cloudcli run` sets for each stage it runs beside others."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from cloudcli.ui import progress

Job = TypeVar("Job")
CAP = "CLOUDCLI_MAX_WORKERS"  # set by `cloudcli run`: this stage's share of the machine's cores


def worker_cap(workers: int, least: int = 0) -> int:
    """`workers` (a params value: loader or preprocess processes), at most the share `cloudcli run`
    gave this stage and at least `least`. Results never depend on the number of workers."""
    cap = os.environ.get(CAP, "")
    return max(least, min(workers, int(cap))) if cap.isdigit() else workers


def pmap(
    fn: Callable[[Job], Any],
    jobs: Sequence[Job],
    workers: int,
    description: str,
    unit: str = "items",
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> list:
    """[fn(job) for job in jobs] in `workers` processes, in order; the first error cancels the rest."""
    results, workers = [], worker_cap(workers, least=1)
    with progress(description, len(jobs), unit) as advance:
        if workers == 1 or len(jobs) <= 1:
            if initializer is not None:
                initializer(*initargs)
            for job in jobs:
                results.append(fn(job))
                advance(1)
            return results
        pool = ProcessPoolExecutor(workers, initializer=initializer, initargs=initargs)
        try:
            for result in pool.map(fn, jobs, chunksize=max(1, min(8, len(jobs) // (4 * workers)))):
                results.append(result)
                advance(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return results
