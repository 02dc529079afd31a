"""Run one cloudcli command line, killing it (SIGKILL, or KILL_SIGNAL=INT) just before its Nth write.

    KILL_AT=N KILL_LOG=events.txt python killer.py preprocess --out ...

A write is: opening a file for writing, making, renaming, exchanging or removing a file or folder,
a new memory map, a checkpoint, an image written by OpenCV or tifffile. With KILL_AT=0 nothing is
killed; KILL_LOG (if set) gets one line per write, its kind, so a test can pick moments to kill at.
"""

from __future__ import annotations

import atexit
import builtins
import io
import os
import shutil
import signal
import sys

AT, LOG = int(os.environ["KILL_AT"]), os.environ.get("KILL_LOG")
SIGNAL = signal.Signals[f"SIG{os.environ.get('KILL_SIGNAL', 'KILL')}"]  # INT: as Ctrl-C
TORCH_COMMANDS = ("train", "infer", "export")  # the commands that save or load checkpoints
_open = builtins.open
events: list[str] = []


def _event(kind: str) -> None:
    events.append(kind)
    if len(events) == AT:
        os.kill(os.getpid(), SIGNAL)


def _wrap(owner, name: str, writes=lambda *a, **k: True) -> None:
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if writes(*args, **kwargs):
            _event(f"{getattr(owner, '__name__', owner)}.{name}")
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


def _writing(file, mode="r", *args, **kwargs) -> bool:
    return any(c in mode for c in "wax+")


def install(command: str) -> None:
    import cv2
    import numpy as np
    import tifffile

    import cloudcli.io

    for owner in (builtins, io):
        _wrap(owner, "open", _writing)
    for name in ("replace", "rename", "unlink", "rmdir", "mkdir"):
        _wrap(os, name)
    for name in ("rmtree", "copyfile", "copytree", "move"):
        _wrap(shutil, name)
    _wrap(cloudcli.io, "_exchange")
    _wrap(np.lib.format, "open_memmap")
    _wrap(cv2, "imwrite")
    _wrap(tifffile, "imwrite")
    if command in TORCH_COMMANDS:  # torch writes its zip files from C++, past Python's open
        import torch

        _wrap(torch, "save")


def _log() -> None:
    with _open(LOG, "w") as f:
        f.write("".join(f"{e}\n" for e in events))


if __name__ == "__main__":
    # Ctrl-C as in a terminal: a process whose parent ignores SIGINT (a pytest-xdist worker does)
    # starts with it ignored, and Python then keeps it so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    install(sys.argv[1])
    if LOG:
        atexit.register(_log)
    from cloudcli.cli import main

    sys.argv = ["cloudcli", *sys.argv[1:]]
    main()
