"""Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM stop a
build cleanly: the RUN's processes die, nothing stays mounted or in tmp/, the exit
status is 128 + the signal with a one-line message, and the next build works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mounts_under, processes, run_cli

pytestmark = [pytest.mark.root, pytest.mark.overlay,
              pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root")]

ONE_STAGE = "FROM busybox\nARG T={T}\nRUN echo started; sleep $T; echo slept > /f\n"
TWO_STAGES = """\
FROM busybox AS one
ARG T={T}
RUN echo started; sleep $T; echo slept > /one
FROM busybox AS two
ARG T={T}
RUN echo started; sleep $T; echo slept > /two
FROM busybox
COPY --from=one /one /one
COPY --from=two /two /two
"""


def _start(root: Path, context: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "builder", "--root", str(root), "--progress", "plain",
             str(context)], stdout=out, stderr=out, start_new_session=True)


def _wait_for(condition, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _interrupt_and_check(tmp_path: Path, busybox_tar: Path, dockerfile: str, seconds: str,
                         running: int, send) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    root = tmp_path / "store"
    run_cli("import", str(busybox_tar), "busybox", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile.replace("{T}", seconds))
    log = tmp_path / "build.log"
    sleep = [b"sleep", seconds.encode()]
    proc = _start(root, context, log)
    try:
        _wait_for(lambda: len(processes(sleep)) == running, f"{running} x sleep {seconds}")
        assert mounts_under(root), "the RUN's overlay should be mounted in its namespace"
        send(proc)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    _wait_for(lambda: not processes(sleep), "the RUN's processes to die", 10)
    assert "Traceback" not in output, output
    assert not mounts_under(root)
    assert not list((root / "tmp").iterdir()), list((root / "tmp").iterdir())
    # The next build works (and the cache was not poisoned: it runs the step).
    again = run_cli("--progress", "plain", "--build-arg", "T=0", str(context), root=root)
    assert b"writing image" in again.stderr
    return subprocess.CompletedProcess(proc.args, code, output, "")


def _ctrl_c(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # a terminal signals the whole foreground group


def test_ctrl_c_during_run(tmp_path: Path, busybox_tar: Path) -> None:
    result = _interrupt_and_check(tmp_path, busybox_tar, ONE_STAGE, "167", 1, _ctrl_c)
    assert result.returncode == 130, result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last == "pybuild: build interrupted (SIGINT): stopped every step; nothing was kept"


def test_second_ctrl_c_is_safe(tmp_path: Path, busybox_tar: Path) -> None:
    def twice(proc: subprocess.Popen) -> None:
        _ctrl_c(proc)
        time.sleep(0.02)
        _ctrl_c(proc)

    result = _interrupt_and_check(tmp_path, busybox_tar, ONE_STAGE, "166", 1, twice)
    assert result.returncode == 130, result.stdout


def test_sigterm_during_run(tmp_path: Path, busybox_tar: Path) -> None:
    # SIGTERM goes to pybuild alone (as `kill` or a CI runner sends it).
    result = _interrupt_and_check(tmp_path, busybox_tar, ONE_STAGE, "165", 1,
                                  lambda proc: proc.send_signal(signal.SIGTERM))
    assert result.returncode == 143, result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith(
        "pybuild: build interrupted (SIGTERM)")


def test_ctrl_c_during_parallel_stages(tmp_path: Path, busybox_tar: Path) -> None:
    result = _interrupt_and_check(tmp_path, busybox_tar, TWO_STAGES, "168", 2, _ctrl_c)
    assert result.returncode == 130, result.stdout
