"""Become `torchrun` when training asks for several processes (no torch import: runs before it)."""

from __future__ import annotations

import os
import sys


def ensure_launched(processes: int) -> None:
    """With train.processes > 1 outside a launcher, replace this process by
    `torchrun --nproc_per_node=N -m cloudcli <same arguments>`; otherwise return."""
    if processes <= 1 or "WORLD_SIZE" in os.environ:  # one process, or already under a launcher
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "cloudcli", *sys.argv[1:]]
    print(f"train.processes {processes}: running under torchrun", file=sys.stderr, flush=True)
    os.execv(sys.executable, command)
