"""The suite's own guard against hangs: commands with deadlines, daemons that die with their test."""

import contextlib
import os
import sys
import textwrap
import time
from pathlib import Path

import procs
import psutil
import pytest

TESTS = Path(__file__).resolve().parent


def test_a_daemon_holding_the_output_does_not_hold_the_command(tmp_path) -> None:
    """The shape of the queued-grid hang: the command exits, a detached child keeps its stdout."""
    start = time.monotonic()
    result = procs.run(["sh", "-c", "setsid sleep 120 & echo started"], tmp_path, timeout=60)
    assert time.monotonic() - start < 30 and result.returncode == 0 and result.stdout == "started\n"

    def sleeping() -> list[psutil.Process] | None:  # once setsid has exec'd the sleep
        left = procs.leftovers(os.environ[procs.MARK])
        with contextlib.suppress(psutil.Error):
            return left if [p.cmdline() for p in left] == [["sleep", "120"]] else None
        return None

    procs.kill_all(procs.wait_until(sleeping, 10, "the detached sleep, alone", every=0.05))
    assert procs.leftovers(os.environ[procs.MARK]) == []


def test_a_command_past_its_deadline_is_killed_with_its_children(tmp_path) -> None:
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"still running after 2 s, killed(.|\n)*stdout \(end\):\nbefore\n"):
        procs.run(["sh", "-c", "echo before; sleep 120 & sleep 120"], tmp_path, timeout=2)
    assert time.monotonic() - start < 30
    assert procs.leftovers(os.environ[procs.MARK]) == []  # both sleeps are gone, not only the shell


def test_a_started_daemon_logs_to_a_file_and_stops_with_its_group(tmp_path) -> None:
    log = tmp_path / "daemon.log"
    daemon = procs.start(["sh", "-c", "echo up; sleep 120 & sleep 120"], log)
    procs.wait_until(lambda: log.read_text() == "up\n", 10, "the daemon's first line", every=0.05)
    procs.kill_group(daemon)
    assert daemon.returncode is not None and procs.leftovers(os.environ[procs.MARK]) == []


def test_a_test_that_leaks_a_process_fails_by_name_and_leaves_nothing(pytester: pytest.Pytester) -> None:
    """A separate pytest run with the guard: its leaking test fails, listing the process, and the
    process is gone afterwards; its clean test passes."""
    pytester.makepyfile(
        test_leak=textwrap.dedent(
            """
            import subprocess

            def test_leaks():
                subprocess.Popen(["setsid", "sleep", "97"])

            def test_clean():
                subprocess.run(["true"], check=True, timeout=10)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = procs.run(
        [sys.executable, "-m", "pytest", "-p", "procs", "-p", "no:cacheprovider"], pytester.path, env, 120
    )
    assert "ERROR at teardown of test_leaks" in result.stdout, result.stdout
    assert "1 process(es) started by this test outlived it (now killed)" in result.stdout
    assert "sleep 97" in result.stdout and "2 passed, 1 error" in result.stdout  # the call passed, the guard did not
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "97"]]
