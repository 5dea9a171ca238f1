"""A RUN step that clears its own parent-death signal must still die with its build.

The step's PID 1 asks the kernel for SIGKILL when the setup child above it dies,
and a stopping build killed only that setup child, trusting the signal.  But any
process may clear its parent-death signal (``prctl(PR_SET_PDEATHSIG, 0)``), and
the Dockerfile chooses the step's program.  Such a step outlived a Ctrl-C'd build
(which then waited forever on the step's output pipe) and a build killed with
SIGKILL (the step ran on, root, with no build around it).  Now the stopping build
kills the setup child's whole tree, and the setup child kills PID 1 when pybuild
dies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mounts_under, processes
from security.oracle import static_binary

pytestmark = [pytest.mark.root, pytest.mark.overlay,
              pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root")]

# Clears its parent-death signal, says so, then waits (bounded: 120 s).
STUBBORN_C = r"""
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>
int main(void) {
    if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) != 0) return 1;
    int now = -1;
    prctl(PR_GET_PDEATHSIG, &now, 0, 0, 0);
    printf("cleared pdeath=%d\n", now);
    fflush(stdout);
    for (int i = 0; i < 1200; i++) usleep(100000);
    return 0;
}
"""
ARGV = [b"/stubborn", b"outlive-the-build"]


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    static_binary(STUBBORN_C, tmp_path, "stubborn").rename(ctx / "stubborn")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nCOPY stubborn /stubborn\n"
        'RUN ["/stubborn", "outlive-the-build"]\n')
    return ctx


def _start(bstore: Path, context: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        build = subprocess.Popen(
            [sys.executable, "-m", "builder", "--root", str(bstore), "build", "--no-cache",
             "--progress", "plain", str(context)],
            stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 60
    while b"cleared pdeath=0" not in log.read_bytes():
        assert build.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert processes(ARGV), "the step should be running"
    return build


def _gone_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while processes(ARGV):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _cleanup(build: subprocess.Popen) -> None:
    if build.poll() is None:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    for pid in processes(ARGV):  # what the old code left behind
        os.kill(pid, signal.SIGKILL)


def test_ctrl_c_kills_a_step_that_cleared_its_parent_death_signal(
        bstore: Path, context: Path, tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    build = _start(bstore, context, log)
    try:
        os.killpg(build.pid, signal.SIGINT)
        stopped = time.monotonic()
        try:
            code = build.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the build still waits for its step 10 s after Ctrl-C:\n"
                        f"{log.read_text()}")
        assert code == 130, log.read_text()
        assert time.monotonic() - stopped < 2.0
        assert _gone_within(2), "the step outlived the build"
        assert not mounts_under(bstore)
    finally:
        _cleanup(build)


def test_killed_build_takes_a_step_that_cleared_its_parent_death_signal(
        bstore: Path, context: Path, tmp_path: Path) -> None:
    """SIGKILL to pybuild alone (the OOM killer, kill -9): no cleanup of its own runs."""
    log = tmp_path / "build.log"
    build = _start(bstore, context, log)
    try:
        build.kill()
        build.wait(timeout=10)
        assert _gone_within(5), "the step runs on after its build was killed"
        deadline = time.monotonic() + 5
        while mounts_under(bstore):  # the namespaces holding them are gone with the step
            assert time.monotonic() < deadline, mounts_under(bstore)
            time.sleep(0.05)
    finally:
        _cleanup(build)
