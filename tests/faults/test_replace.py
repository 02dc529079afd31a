"""Replacing outputs: the earlier output stays whole until the new one takes its place in one step,
a failed or killed writer leaves it untouched, and its leftovers are cleared by the next write."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloudcli import io

WRITER = """
import os, signal, sys, time
from pathlib import Path
from cloudcli.io import atomic_path
out, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "loop":  # replace the folder again and again
    for i in range(int(sys.argv[3])):
        with atomic_path(out, is_dir=True) as tmp:
            (tmp / "marker").write_text(str(i))
else:  # die while writing
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / "marker").write_text("half")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _writer(tmp_path: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.Popen([sys.executable, str(script), *args], env=env)


def _folder(path: Path, text: str) -> None:
    path.mkdir()
    (path / "marker").write_text(text)


def test_a_folder_is_never_missing_while_it_is_replaced(tmp_path):
    out = tmp_path / "out"
    _folder(out, "old")
    writer, seen, missing = _writer(tmp_path, str(out), "loop", "400"), 0, 0
    deadline = time.monotonic() + 60
    while writer.poll() is None and time.monotonic() < deadline:
        seen += 1
        missing += not (out / "marker").exists()
    assert writer.wait(timeout=60) == 0
    assert seen > 100 and missing == 0, f"{missing} of {seen} looks found no output"
    assert (out / "marker").read_text() == "399"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_killed_writer_leaves_the_old_output_and_the_next_write_clears_its_leftovers(tmp_path):
    out = tmp_path / "out"
    _folder(out, "old")
    writer = _writer(tmp_path, str(out), "kill")
    assert writer.wait(timeout=60) == -9
    assert (out / "marker").read_text() == "old" and sorted(os.listdir(out)) == ["marker"]
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert len(left) == 1  # the killed writer's temporary folder
    live = tmp_path / f".out.{os.getpid()}.abc.tmp"  # a writer still running keeps its folder
    live.mkdir()
    io.write_text(out / "x", "")  # another output: leaves the stale folder alone
    assert left[0].exists()
    with io.atomic_path(out, is_dir=True) as tmp:
        (tmp / "marker").write_text("new")
    assert (out / "marker").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [live.name]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "moved-aside"])
@pytest.mark.parametrize("old", ["folder", "file", "none"])
@pytest.mark.parametrize("new", ["folder", "file"])
def test_any_output_replaces_any_other(tmp_path, monkeypatch, exchange, old, new):
    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)  # as on a file system without it
    out = tmp_path / "out"
    if old == "folder":
        _folder(out, "old")
    elif old == "file":
        out.write_text("old")
    with io.atomic_path(out, is_dir=new == "folder") as tmp:
        if new == "folder":
            (tmp / "marker").write_text("new")
        else:
            tmp.write_text("new")
    assert (out / "marker" if new == "folder" else out).read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_failing_writer_replaces_none_of_its_outputs(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second.json"
    _folder(first, "old")
    second.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_paths((first, True), (second, False)) as (a, b):
        (a / "marker").write_text("new")
        b.write_text("new")
        raise RuntimeError("the last write failed")
    assert (first / "marker").read_text() == "old" and second.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["first", "second.json"]
    with io.atomic_paths((first, True), (second, False)) as (a, b):
        (a / "marker").write_text("new")
        b.write_text("new")
    assert (first / "marker").read_text() == "new" and second.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["first", "second.json"]
