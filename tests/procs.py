"""Processes the tests start: every one has a deadline, none writes to a pipe the test waits on,
and none outlives the test that started it.

Why files, not pipes: a command that leaves a daemon behind (`dvc queue start` forks a detached
manager and a worker) hands it its stdout and stderr; `subprocess.run(capture_output=True)` then
waits for an end of file that only comes when the daemon dies. Here a command's output goes to
temporary files, the test waits for the command's own exit (with a timeout), and then reads them.

Why a process group: each command starts in a session of its own, so a timeout kills it and every
child it forked (torchrun's workers, a DataLoader's workers), not just the parent.

How leftovers are found: the test run puts MARK in its environment, every process a test starts
inherits it (detached daemons too), and `leftovers()` lists the live ones. conftest.py uses the
fixture and hooks at the end of this file; `pytest -p procs` gives them to any other test folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

MARK = "CLOUDCLI_TEST_RUN"  # name of the variable that tags every process of this test run
# Tags the daemons of a module- or session-scoped fixture (a Ray cluster): they outlive each test by
# design; the fixture's teardown stops them, and the last sweep kills any it missed.
SHARED = "CLOUDCLI_TEST_SHARED"
TIMEOUT = 600  # seconds a command may run unless the caller says otherwise
# Helpers of the test process itself, alive as long as it is (not started by any one test).
OWN_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver", "torch._inductor")


def run(
    cmd: Sequence[str | os.PathLike],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess:
    """Run `cmd` to its end, at most `timeout` seconds; its output is captured through files, so a
    daemon it leaves behind cannot hold the test. On timeout the command's whole process group is
    killed and an AssertionError names the command and shows the end of its output."""
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out.seek(0), err.seek(0)
            raise AssertionError(
                f"{' '.join(cmd)}: still running after {timeout:.0f} s, killed\n"
                f"stdout (end):\n{out.read()[-3000:]}\nstderr (end):\n{err.read()[-3000:]}"
            ) from None
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def start(cmd: Sequence[str | os.PathLike], log: Path, cwd: Path | None = None, env=None) -> subprocess.Popen:
    """Start a daemon (a server, a worker) in its own process group, its output going to `log`;
    stop it with `kill_group` in a finally or a fixture teardown."""
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop `proc` and its process group: SIGTERM, then SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # members that outlived their leader
        os.killpg(proc.pid, signal.SIGKILL)


def wait_until(condition, timeout: float, what: str, every: float = 0.5):
    """Poll `condition()` until it returns something true; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)
    return result


def tagged(value: str) -> Iterator[psutil.Process]:
    """Live processes (not zombies) whose environment has MARK=value, other than this one."""
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARK) == value:
                yield proc


def leftovers(value: str, shared: bool = False) -> list[psutil.Process]:
    """Processes of this test run still alive, except the test process's own long-lived helpers
    and (unless `shared`) the daemons of fixtures shared by several tests."""
    found = []
    for proc in tagged(value):
        with contextlib.suppress(psutil.Error):
            if not shared and proc.environ().get(SHARED):
                continue
            cmdline = " ".join(proc.cmdline())
            is_own_child = proc.ppid() == os.getpid()
            if is_own_child and any(helper in cmdline for helper in OWN_HELPERS):
                continue
            found.append(proc)
    return found


def describe(procs: list[psutil.Process]) -> str:
    lines = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            lines.append(f"  pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
    return "\n".join(lines)


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=30)


def pytest_configure(config: pytest.Config) -> None:
    """Tag this test run: every process its tests start inherits MARK=<this process's pid>."""
    os.environ[MARK] = str(os.getpid())


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """After each test (its fixtures torn down): a process of the run still alive is killed, and
    the test fails, listing it."""
    yield
    left = leftovers(os.environ[MARK])
    if left:
        listing = describe(left)
        kill_all(left)
        pytest.fail(f"{len(left)} process(es) started by this test outlived it (now killed):\n{listing}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The last sweep: nothing the suite started may outlive it, whatever failed. Under
    pytest-xdist each worker sweeps its own (its processes carry its pid); the controller, whose
    tag the workers themselves carry, sweeps nothing."""
    if session.config.pluginmanager.has_plugin("dsession"):
        return
    kill_all(leftovers(os.environ[MARK], shared=True))
