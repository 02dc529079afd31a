"""File-system faults: a full disk, a read-only folder. Each command runs in a private mount
namespace (`unshare -m`, root only) on a small tmpfs, so the fault is real: the kernel's ENOSPC and
EROFS, and the memory maps of a full disk. Each ends in one line naming the output, exit 1, no
temporary file, and the earlier output byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = r"""
import json, os, subprocess, sys
from pathlib import Path
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from helpers import snapshot
spec = json.loads(Path(sys.argv[2]).read_text())
project = Path(spec["project"])
(project / "small").mkdir(exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size_kb']}k", "tmpfs", str(project / "small")], check=True)
results = []
for step in spec["steps"]:
    if step[0] == "fill":  # the small disk full to the last block
        try:
            with open(project / "small" / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        continue
    if step[0] == "read-only":
        where = str(project / step[1])
        os.makedirs(where, exist_ok=True)
        subprocess.run(["mount", "--bind", where, where], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", where], check=True)
        continue
    before = snapshot(project)
    run = subprocess.run([sys.executable, "-m", "cloudcli", *step], cwd=project, capture_output=True, text=True,
                         timeout=300, env=os.environ | {"COLUMNS": "200"})
    after = snapshot(project)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    results.append({"rc": run.returncode, "stdout": run.stdout, "stderr": run.stderr, "changed": changed})
print(json.dumps(results))
"""


def _namespaces() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not _namespaces(), reason="needs a private mount namespace (root, unshare -m)"
)


def in_namespace(project: Path, size_kb: int, *steps: list[str]) -> list[subprocess.CompletedProcess]:
    """Run `steps` (cloudcli command lines, or ["fill"], or ["read-only", folder]) in `project` with
    a `size_kb` tmpfs on project/small; each command's result, with `.changed` the files it changed."""
    driver, spec = project.parent / "driver.py", project.parent / "spec.json"
    driver.write_text(DRIVER)
    spec.write_text(json.dumps({"project": str(project), "size_kb": size_kb, "steps": [list(s) for s in steps]}))
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])
    }
    helpers = Path(__file__).parents[1] / "helpers.py"
    run = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, str(driver), str(helpers), str(spec)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    results = []
    for r in json.loads(run.stdout):
        done = subprocess.CompletedProcess([], r["rc"], r["stdout"], r["stderr"])
        done.changed = r["changed"]
        results.append(done)
    return results


KB = 480  # the tiny cache (about 320 KB) fits once on the small disk, not twice


def test_full_disk_while_the_cache_is_written(tiny_project, one_line_error):
    """The memory maps of the cache are allocated up front: ENOSPC naming the file, not a SIGBUS."""
    write = ["preprocess", "--out", "small/cache", "--metrics", "small/data.json"]
    first, second = in_namespace(tiny_project, KB, write, write)
    assert first.returncode == 0, first.stderr
    one_line_error(second, "small/cache/", "disk is full")
    assert second.changed == []


@pytest.mark.parametrize(
    "command",
    [
        ["fold", "--out", "small/folds.csv", "--metrics", "small/folds.json"],
        ["preprocess", "--out", "small/cache", "--metrics", "small/data.json"],
        ["export-masks", "data/sample_submission.csv", "--out", "small/masks", "--force"],
    ],
    ids=["fold", "preprocess", "export-masks"],
)
def test_full_disk_before_any_write(tiny_project, command, one_line_error):
    first, second = in_namespace(tiny_project, KB, command, ["fill"], command)
    assert first.returncode == 0, first.stderr
    one_line_error(second, "small/", "disk is full")
    assert second.changed == []


@pytest.mark.parametrize(
    "command, where",
    [
        (["fold", "--out", "small/ro/folds.csv", "--metrics", "small/folds.json"], "small/ro/folds.csv"),
        (["preprocess", "--out", "small/cache", "--metrics", "small/ro/data.json"], "small/ro/data.json"),
        (["preprocess", "--out", "small/ro/cache", "--metrics", "small/data.json"], "small/ro/cache"),
        (["export-masks", "data/sample_submission.csv", "--out", "small/ro/masks", "--force"], "small/ro/masks"),
        (["show", "--out", "small/ro/show.png"], "small/ro/show.png"),
    ],
    ids=["fold", "preprocess-metrics", "preprocess-cache", "export-masks", "show"],
)
def test_read_only_folder(tiny_project, command, where, one_line_error):
    """One output in a read-only folder: nothing is written, not even the outputs that could be
    (the cache stays the earlier one when its metrics file cannot be replaced)."""
    if command[0] == "show":
        command = [*command, (tiny_project / "data" / "train.csv").read_text().splitlines()[1].split("_")[0]]
    first, second = in_namespace(
        tiny_project, 4 * KB, ["preprocess", "--out", "small/cache"], ["read-only", "small/ro"], command
    )
    assert first.returncode == 0, first.stderr
    one_line_error(second, where, "read-only")
    assert second.changed == []
