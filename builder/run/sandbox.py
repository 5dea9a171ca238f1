"""Run one RUN command in namespaces over a snapshot, after pivot_root.

``run_step`` writes the step's /etc/hosts and resolv.conf, starts the network
stack (``network.py``) and the setup child (``nschild.py``: namespaces, the
snapshot's mount, the init layer of ``rootfs.py``, then PID 1, which drops to
the step's user from ``users.py`` and execs), streams the step's output and
watches the store's free space until the step ends.  What a step asks for is
``spec.py``'s ``RunSpec``; its extra mounts are ``mountpoints.py``'s.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from builder import limits
from builder.errors import BuildError, SandboxError
from builder.rootpath import resolve_components, resolve_in_root
from builder.run.child import SPAWN_LOCK, kill_process_tree
from builder.run.nschild import setup_child
from builder.run.spec import HOSTS, NETWORKS, MountSpec, RunSpec
from builder.run.users import resolve_user

if TYPE_CHECKING:   # the network stack loads only for a RUN
    from builder.run import network
    from builder.snapshot.base import ActiveSnapshot

# The RUN machinery's public names; the resolvers and the user lookup are re-exported
# for the engine, which resolves COPY paths and USER with them.
__all__ = ["MountSpec", "RunSpec", "resolve_components", "resolve_in_root", "resolve_user",
           "run_step"]


def run_step(snapshot: ActiveSnapshot, spec: RunSpec, output: Callable[[bytes], None]) -> int:
    """Run ``spec`` over ``snapshot``; stream its output to ``output``; return its exit code.

    A failure to set up the sandbox raises ``SandboxError``; the command's own
    failure is its non-zero exit code.
    """
    from builder.run import network

    if spec.network not in NETWORKS:
        raise SandboxError(f"unknown network mode {spec.network!r}")
    # Before anything runs: no stack, no step (its one-line error names the package).
    program = network.require_program() if spec.network == "default" else None
    files = _write_files(snapshot, spec, isolated=program is not None)
    with SPAWN_LOCK:  # see child._SpawnLock: no other thread's child gets our pipes
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        stack = None if program is None else network.Stack.open(program, str(files / "net.log"))
        pid = os.fork()
        if pid:
            os.close(out_write)
            os.close(err_write)
            if stack is not None:
                _launch_or_kill(stack, pid)
    if pid == 0:
        os.close(out_read)
        os.close(err_read)
        if stack is not None:
            network.in_setup_child(stack)
        setup_child(snapshot, spec, out_write, err_write, stack)
    err_pipe = os.fdopen(err_read, "rb")
    try:
        _pump(out_read, output, lambda: _check_free_space(str(snapshot.upper)))
        setup_error = err_pipe.read().decode(errors="replace")
        _, wait_status = os.waitpid(pid, 0)
    except BaseException:
        kill_process_tree(pid)  # the step's PID 1 too, not only by its parent-death signal
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(out_read)
        err_pipe.close()
        if stack is not None:
            network.stop(stack)
    code = os.waitstatus_to_exitcode(wait_status)
    if setup_error:
        kind, _, text = setup_error.partition("\0")
        if kind == "build":
            raise BuildError(text)
        raise SandboxError(f"RUN sandbox: {text}")
    return code


def _write_files(snapshot: ActiveSnapshot, spec: RunSpec, *, isolated: bool) -> Path:
    """The step's /etc/hosts and /etc/resolv.conf (the host's, or slirp4netns's DNS
    when ``isolated``), in the snapshot's ``files`` dir, bound in by PID 1."""
    from builder.run import network

    files = snapshot.work.path / "files"
    files.mkdir(exist_ok=True)
    (files / "hosts").write_text(HOSTS + (spec.options.hosts_lines() if spec.options else ""))
    try:
        resolv = Path("/etc/resolv.conf").read_bytes()
    except OSError:
        resolv = b""
    (files / "resolv.conf").write_bytes(network.resolv_conf(resolv) if isolated else resolv)
    (snapshot.work.path / "merged").mkdir(exist_ok=True)
    return files


def _launch_or_kill(stack: network.Stack, setup_pid: int) -> None:
    """Start the step's network stack; if that fails, the setup child must not wait for it."""
    from builder.run import network

    try:
        network.launch(stack, setup_pid)
    except BaseException:
        os.kill(setup_pid, signal.SIGKILL)
        os.waitpid(setup_pid, 0)
        network.stop(stack)
        raise


def _pump(fd: int, output: Callable[[bytes], None], check: Callable[[], None]) -> None:
    """Stream ``fd`` to ``output`` until EOF, calling ``check`` about once a second."""
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if time.monotonic() - last >= 1.0:
            check()  # raises to stop the step; run_step then kills it
            last = time.monotonic()
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        output(chunk)


def _check_free_space(upper: str) -> None:
    """Stop a step before it fills the store's filesystem (X09).

    The step writes into its upper dir, on the store's filesystem; a full disk
    would fail every other build and the store's own commits.  pybuild has no
    per-step quota (that needs project quotas or a separate filesystem), so it
    watches the free space and stops the step at the reserve instead.
    """
    reserve = limits.get().min_free_bytes
    try:
        st = os.statvfs(upper)
    except OSError:
        return
    if st.f_bavail * st.f_frsize < reserve:
        raise BuildError(f"RUN stopped: less than {reserve} bytes left free on the store's "
                         f"filesystem (raise or lower the reserve with "
                         f"{limits.env_name('min_free_bytes')})")
