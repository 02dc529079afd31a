"""`python -m cloudcli.runner.supervise CMD...`: run CMD, and take its whole process group down
with this process when the parent (a Ray worker) dies.

A Ray worker killed mid-stage (preempted, OOM-killed, cancelled) would otherwise leave the stage's
`dvc repro` and its command running on, writing into the clone and the resume state that the
retry is about to use. Started in a session of its own, this process is the group's leader; the
kernel signals it when its parent dies (PR_SET_PDEATHSIG), and it kills the group.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        return 137

    def down(signum, frame) -> None:
        os.killpg(0, signal.SIGKILL)  # the command, its children, and this process

    signal.signal(signal.SIGTERM, down)
    signal.signal(signal.SIGINT, down)
    code = subprocess.call(argv)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
