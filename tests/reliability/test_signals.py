"""Signals from outside and processes left behind by a RUN (catalogue REL-1, REL-6, REL-7).

* A RUN that leaves background processes ends when its main process ends: the PID
  namespace's init exits and the kernel kills the rest, even ones that hold the
  step's stdout open or started their own session.
* SIGTERM (what ``timeout`` sends) or SIGKILL to the pybuild process alone, mid-RUN,
  leaves no process and no mount behind (the sandbox's children die with their
  parent), the store checks clean, and the next build works.
* SIGINT (Ctrl-C) mid-RUN: exit 130, same guarantees.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from relcommon import (
    ENV,
    assert_store_clean,
    build,
    make_context,
    new_store,
    running_marker,
    session_processes,
    wait_clean,
)

pytestmark = [pytest.mark.root, pytest.mark.overlay]

LONG_RUN = """\
FROM busybox
RUN echo before > /before
RUN sleep 30.5
"""


def _sleepers(arg: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == f"sleep\0{arg}\0".encode():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_background_processes_die_with_the_step(tmp_path: Path, busybox_tar: Path) -> None:
    root = new_store(tmp_path / "store", busybox_tar)
    context = make_context(tmp_path / "ctx", """\
FROM busybox
RUN (sleep 1000 &) ; true
RUN sleep 1001 & echo "holding stdout"
RUN setsid sleep 1002 > /dev/null 2>&1 < /dev/null & true
RUN nohup sleep 1003 & true
""")
    started = time.monotonic()
    build(root, context, tmp_path / "out.tar")
    assert time.monotonic() - started < 20, "a background process kept a RUN step alive"
    for arg in ("1000", "1001", "1002", "1003"):
        assert _sleepers(arg) == [], f"sleep {arg} outlived its RUN step"
    assert_store_clean(root)


def _start(root: Path, context: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "builder", "--root", str(root), "build", "-q", str(context)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, **ENV})


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT],
                         ids=["SIGTERM", "SIGKILL", "SIGINT"])
def test_signal_to_pybuild_mid_run(tmp_path: Path, busybox_tar: Path, signum: int) -> None:
    root = new_store(tmp_path / "store", busybox_tar)
    context = make_context(tmp_path / "ctx", LONG_RUN)
    proc = _start(root, context)
    deadline = time.monotonic() + 30
    while not running_marker(proc.pid, "30.5"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.01)
    started = time.monotonic()
    proc.send_signal(signum)  # to pybuild alone, as `timeout` or a supervisor does
    _, stderr = proc.communicate(timeout=20)
    assert time.monotonic() - started < 10
    assert proc.returncode != 0
    if signum == signal.SIGINT:
        assert proc.returncode == 130, stderr.decode()
        assert b"Traceback" not in stderr
    wait_clean(root, proc.pid)
    assert session_processes(proc.pid) == []
    assert _sleepers("30.5") == []
    assert_store_clean(root)
    # The step before the interrupted one was committed and stays cached.
    context.joinpath("Dockerfile").write_text(LONG_RUN.replace("sleep 30.5", "true"))
    rebuilt = subprocess.run(
        [sys.executable, "-m", "builder", "--root", str(root), "build", "--progress",
         "plain", str(context)], capture_output=True, env={**os.environ, **ENV})
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()
    assert b"RUN echo before > /before\n#2 CACHED" in rebuilt.stderr
    assert_store_clean(root)
