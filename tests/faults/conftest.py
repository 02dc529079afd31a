"""What every fault case checks: exit 1, one line on stderr naming the file, row or key, no
traceback, and the project folder byte-identical (nothing written, nothing half-written)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import snapshot


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str, progress: bool = False) -> str:
    """Exit 1 and one line on stderr holding every needle (after the progress lines of the work
    done before the fault, with `progress`); returns the line."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    lines = result.stderr.strip().splitlines()
    if progress:
        lines = [line for line in lines if line.startswith("error")]
        assert lines and result.stderr.strip().splitlines()[-1] == lines[-1], result.stderr
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def fails_cleanly() -> Callable[..., str]:
    """`fails_cleanly(folder, run, *needles, progress=False)`: `run()` (a CompletedProcess) ends in
    one line holding every needle (after progress lines, with `progress`), and `folder` is
    byte-identical afterwards; returns the line."""

    def check(folder: Path, run: Callable[[], subprocess.CompletedProcess], *needles: str, progress=False) -> str:
        before = snapshot(folder)
        line = assert_one_line_error(run(), *needles, progress=progress)
        assert snapshot(folder) == before, "the failed command changed the project folder"
        return line

    return check


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    """`one_line_error(result, *needles)`: exit 1, after any progress lines one error line holding
    every needle."""
    return lambda result, *needles: assert_one_line_error(result, *needles, progress=True)
