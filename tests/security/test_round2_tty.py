"""Round 2, point 1: a RUN step must not reach the terminal of the shell that started pybuild.

The attack, for real: a pty is the controlling terminal of the pybuild process (a
session leader on the pty's slave, as an interactive shell makes its jobs), and the
RUN step is a static C program that opens ``/dev/tty`` and pushes a command into the
terminal's input queue with ``TIOCSTI`` (this kernel allows it:
``dev.tty.legacy_tiocsti=1``).  Docker refuses this because runc always calls
``setsid``: the step has no controlling terminal and ``/dev/tty`` gives ENXIO.

Checked: nothing reaches the pty's input queue, ``open("/dev/tty")`` fails with
ENXIO, the step's session (seen from the host) is not the invoker's and it has no
controlling tty; the other children pybuild starts for a build (COPY/export helpers
and the ``tar`` they run, credential helpers) are in sessions of their own too.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
import time
import tty
import uuid
from pathlib import Path

import pytest
from helpers import REPO
from security.oracle import static_binary

pytestmark = [
    pytest.mark.root, pytest.mark.overlay,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, overlay"),
]

INJECT = "touch /tmp/pybuild-tiocsti-pwned\n"

# Opens /dev/tty, TIOCSTIs INJECT through it and through fds 0-2, prints what
# happened, then waits (bounded) for SIGUSR1 so the test can look at it from the
# host while it is alive.
PROBE_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void done(int sig) { (void)sig; _exit(0); }

int main(void) {
    const char *cmd = "%s";
    int injected = 0, last = 0;
    signal(SIGUSR1, done);
    int fd = open("/dev/tty", O_RDWR);
    printf("PROBE open_tty=%%d\n", fd < 0 ? errno : 0);
    int fds[4] = {fd, 0, 1, 2};
    for (int i = 0; i < 4; i++) {
        if (fds[i] < 0) continue;
        for (const char *c = cmd; *c; c++) {
            if (ioctl(fds[i], TIOCSTI, c) == 0) injected++; else last = errno;
        }
    }
    printf("PROBE injected=%%d last_errno=%%d\n", injected, last);
    printf("PROBE waiting\n");
    fflush(stdout);
    for (int i = 0; i < 600; i++) usleep(200000);
    return 0;
}
"""


def _compile_probe(directory: Path) -> Path:
    return static_binary(PROBE_C % INJECT.replace("\n", "\\n"), directory, "ttyprobe")


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, tty_nr, ..."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def _session_and_tty(stat_line: str) -> tuple[int, int]:
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return int(fields[3]), int(fields[4])


def _find(cmdline: bytes, deadline: float, proc: subprocess.Popen) -> int | None:
    """The PID of the process running ``cmdline`` (bounded wait), None if the build ended."""
    while time.monotonic() < deadline and proc.poll() is None:
        with os.scandir("/proc") as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                try:
                    if Path(f"/proc/{entry.name}/cmdline").read_bytes() == cmdline:
                        return int(entry.name)
                except OSError:
                    continue
        time.sleep(0.05)
    return None


def _pending(fd: int) -> int:
    """Bytes waiting in the tty's input queue (FIONREAD on the slave)."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, sys.byteorder)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy2(_compile_probe(tmp_path), ctx / "ttyprobe")
    return ctx


def _tar_wrapper(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An env whose PATH starts with a ``tar`` that logs its /proc stat line, and the log.

    ``-o type=tar`` runs the host's tar in a helper child pybuild forks."""
    real_tar = shutil.which("tar")
    assert real_tar is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tar.log"
    (bin_dir / "tar").write_text(f'#!/bin/sh\ncat /proc/$$/stat >> "{log}"\n'
                                 f'exec {real_tar} "$@"\n')
    (bin_dir / "tar").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"), log


def _build_on_pty(argv: list[str], slave: int, log_path: Path, env: dict[str, str],
                  probe: str) -> tuple[int, list[str], list[str]]:
    """Run ``argv`` as a session leader whose controlling terminal is the pty's
    ``slave`` (as a shell starts a job); while the RUN step ``probe`` waits, read its
    and pybuild's /proc stat fields, then let it finish.  (pybuild's PID, its stat,
    the step's stat)."""
    def make_controlling_terminal() -> None:  # runs after setsid
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=slave, stdout=log, stderr=log, env=env, cwd=REPO,
                                start_new_session=True, preexec_fn=make_controlling_terminal)
    try:
        pid = _find(f"/{probe}".encode() + b"\0", time.monotonic() + 300, proc)
        assert pid is not None, log_path.read_text(errors="replace")
        invoker, step = _stat_fields(proc.pid), _stat_fields(pid)
        os.kill(pid, signal.SIGUSR1)
        assert proc.wait(timeout=300) == 0, log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.pid, invoker, step


def _typed(slave: int) -> tuple[int, bytes]:
    """What waits in the tty's input queue: (FIONREAD count, the bytes)."""
    pending = _pending(slave)
    os.set_blocking(slave, False)
    try:
        return pending, os.read(slave, 4096) if pending else b""
    except BlockingIOError:
        return pending, b""


def test_round2_run_step_cannot_reach_the_invokers_terminal(bstore, context, tmp_path):
    name = f"ttyprobe-{uuid.uuid4().hex[:8]}"
    (tmp_path / "Dockerfile").write_text(
        f"FROM busybox\nCOPY ttyprobe /{name}\nRUN [\"/{name}\"]\n")
    env, tar_log = _tar_wrapper(tmp_path)
    argv = [sys.executable, "-m", "builder", "--root", str(bstore), "build", "--no-cache",
            "--progress", "plain", "-f", str(tmp_path / "Dockerfile"),
            "-o", f"type=tar,dest={tmp_path / 'rootfs.tar'}", str(context)]
    log_path = tmp_path / "build.log"
    master, slave = os.openpty()
    try:
        tty.setraw(slave)  # every injected byte counts in FIONREAD, newline or not
        pybuild, invoker, step = _build_on_pty(argv, slave, log_path, env, name)
        # The invoker: pybuild leads its session and the pty is its terminal.
        assert int(invoker[3]) == pybuild and int(invoker[4]) == os.fstat(slave).st_rdev
        pending, typed = _typed(slave)
    finally:
        os.close(master)
        os.close(slave)
    assert pending == 0, f"the RUN step typed into the invoker's terminal: {typed!r}"
    output = log_path.read_text(errors="replace")
    found = dict(re.findall(r"PROBE (\w+)=(\d+)", output))
    assert found.get("open_tty") == str(errno.ENXIO), output
    assert found.get("injected") == "0", output
    # Seen from the host: another session, and no controlling terminal at all.
    assert int(step[3]) != pybuild, "the RUN step is in the invoker's session"
    assert int(step[4]) == 0, "the RUN step has a controlling terminal"
    # The export's tar too; should the export stop using tar,
    # test_round2_helper_children_lead_their_own_session still covers its child.
    for line in tar_log.read_text().splitlines() if tar_log.exists() else []:
        session, ctty = _session_and_tty(line)
        assert session != pybuild and ctty == 0, line
    assert not Path("/tmp/pybuild-tiocsti-pwned").exists()


def _session_of_this_process() -> tuple[int, int, int]:
    fields = _stat_fields("self")
    return os.getpid(), int(fields[3]), int(fields[4])


def test_round2_helper_children_lead_their_own_session():
    # COPY, ADD and export run in children made by in_mount_namespace.
    from builder.run import in_mount_namespace

    pid, session, ctty = in_mount_namespace(_session_of_this_process)
    assert session == pid != os.getsid(0)
    assert ctty == 0


def test_round2_credential_helper_in_its_own_session(tmp_path, monkeypatch):
    # docker-credential-* helpers run when a build pulls its base image.
    from builder.registry.auth import find_credentials

    bin_dir, docker = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    docker.mkdir()
    log = tmp_path / "helper.log"
    helper = bin_dir / "docker-credential-probe"
    helper.write_text(f'#!/bin/sh\ncat /proc/$$/stat > "{log}"\n'
                      'echo "credentials not found in native keychain"; exit 1\n')
    helper.chmod(0o755)
    (docker / "config.json").write_text('{"credHelpers": {"r.example": "probe"}}')
    monkeypatch.setenv("PYBUILD_CONFIG", str(tmp_path / "own"))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert find_credentials("r.example") is None
    session, ctty = _session_and_tty(log.read_text())
    assert session != os.getsid(0)
    assert ctty == 0
