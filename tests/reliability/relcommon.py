"""Shared by the reliability tests: a small busybox build driven through the real CLI,
and the after-a-crash checks (mounts, processes, store integrity)."""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import mounts_under, run_cli

# Several RUN and COPY steps, every one deterministic (the same build twice gives the
# same image ID and archive bytes under SOURCE_DATE_EPOCH), each RUN with a sleep whose
# argument marks it, so that a test can tell which RUN is running from outside.
DOCKERFILE = """\
FROM busybox
COPY a.txt /a.txt
RUN echo one > /one && sleep 0.21
RUN mkdir -p /data && seq 1 30000 > /data/seq && sleep 0.22
COPY a.txt /b.txt
RUN cat /a.txt /b.txt > /c.txt && sleep 0.23
"""
RUN_MARKERS = ("0.21", "0.22", "0.23")
ENV = {"SOURCE_DATE_EPOCH": "0"}


def make_context(path: Path, dockerfile: str = DOCKERFILE) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Dockerfile").write_text(dockerfile)
    (path / "a.txt").write_text("hello\n")
    return path


def new_store(root: Path, busybox_tar: Path) -> Path:
    run_cli("import", str(busybox_tar), "busybox", root=root)
    return root


def start_build(root: Path, context: Path, out: Path, *extra: str,
                env: dict[str, str] | None = None) -> subprocess.Popen:
    """``pybuild build`` in its own session (so its process group can be killed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "builder", "--root", str(root), "build", "-q", "-t", "rel",
         "-o", f"type=oci,dest={out}", *extra, str(context)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, **ENV, **(env or {})})


def build(root: Path, context: Path, out: Path, *extra: str) -> str:
    """Build to completion; returns the image ID."""
    proc = start_build(root, context, out, *extra)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"build failed ({proc.returncode}): {stderr.decode()}"
    return stdout.decode().strip()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Sessions that processes of a build (by pybuild's PID) were seen in: RUN steps and
# helper children lead sessions of their own, away from the invoker's terminal.
_BUILD_SESSIONS: dict[int, set[int]] = {}


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        pid = int(_stat_fields(pid)[1])
    return False


def session_processes(sid: int) -> list[str]:
    """Processes still in session ``sid`` (a killed build's session), or in a session
    running_marker saw one of its RUN steps in: "pid cmdline"."""
    sessions = {sid} | _BUILD_SESSIONS.get(sid, set())
    left = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) in sessions:
                pid = stat.split("/")[2]
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                left.append(f"{pid} {cmd.decode(errors='replace')}")
        except (OSError, IndexError, ValueError):
            continue
    return left


def wait_clean(root: Path, sid: int, timeout: float = 10) -> None:
    """After a kill: no mount mentions the store and no process of the build is left."""
    deadline = time.monotonic() + timeout
    while (mounts_under(root) or session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mounts_under(root) == [], "mounts left under the store"
    assert session_processes(sid) == [], "processes of the killed build left"


def running_marker(pid_session: int, marker: str) -> bool:
    """Whether a ``sleep MARKER`` started by the build whose pybuild (a session
    leader) is ``pid_session`` is running; its session is remembered for
    session_processes."""
    want = f"sleep\0{marker}\0".encode()
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if Path(cmdline).read_bytes() != want:
                continue
            pid = int(cmdline.split("/")[2])
            if _descends_from(pid, pid_session):
                _BUILD_SESSIONS.setdefault(pid_session, set()).add(int(_stat_fields(pid)[3]))
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def doctor(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("doctor", *args, root=root, check=False)


def assert_store_clean(root: Path) -> None:
    result = doctor(root)
    assert result.returncode == 0, (f"doctor found problems:\n{result.stdout.decode()}"
                                    f"{result.stderr.decode()}")
    assert not list((root / "tmp").iterdir()), "tmp/ not swept"
    assert not list((root / "blobs").glob(".incoming-*")), "half-written blobs not swept"
