"""The namespace children of a RUN step: the setup child and PID 1.

Process tree (mkosi's sandbox and runc have the same shape)::

    pybuild ──fork──> setup child: unshare(mount, ipc, uts[, net]); [network up];
       │              mount the overlay; read /etc/passwd as text; unshare(pid); fork
       │                └──> PID 1 of the new PID namespace: its own mount namespace;
       │                     /proc, /dev, hosts, resolv.conf; pivot_root; drop to USER;
       │                     close fds; execve
       └──fork──> (default network) slirp4netns in the host's namespaces, its own
                  session; joins the setup child's network namespace (network.py);
                  killed and reaped by pybuild when the step ends

Nothing is ever unmounted by hand: the mounts live in the setup child's and PID
1's mount namespaces and vanish with them.  Neither child returns into the caller's code: a
failure is sent up ``err_fd`` as ``kind NUL message`` (``report``) and the child
exits (125 setup failed, 127 program not found, as shells and runc do).
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from builder import syscalls, userns
from builder.errors import BuildError, PybuildError, SandboxError
from builder.run.mountpoints import mount_extra, source_is_dir
from builder.run.rootfs import make_init_layer, mount_specials
from builder.run.runopts import apply_ulimits
from builder.run.spec import DEFAULT_PATH, RunSpec
from builder.run.users import Identity, resolve_user

if TYPE_CHECKING:   # the network stack loads only for a RUN
    from builder.run import network
    from builder.snapshot.base import ActiveSnapshot

SETUP_FAILED = 125
NOT_FOUND = 127


def setup_child(snapshot: ActiveSnapshot, spec: RunSpec, out_fd: int, err_fd: int,
                stack: network.Stack | None) -> None:
    """The setup child: namespaces, overlay mount, then PID 1.  Never returns."""
    status = SETUP_FAILED
    try:
        # Out of the invoker's session first: it reads image files (/etc/passwd)
        # and must never hold the invoker's terminal as its controlling tty.
        os.setsid()
        orphaned = _Orphaned()
        _unshare(spec, stack)
        # R13: nothing in the step may ptrace or open /proc/<pid>/exe of the
        # (host) Python doing the setup; execve of the step's program resets it.
        # After the network is up: slirp4netns opens /proc/<pid>/ns/net, which a
        # process that is not dumpable only shows to CAP_SYS_PTRACE over its memory's
        # user namespace, the host's even in rootless mode (this Python was started
        # there).  No step process exists before this point.
        syscalls.set_dumpable(False)
        merged = str(snapshot.work.path / "merged")
        _mount_views(snapshot, spec)
        snapshot.mount(merged, readonly=True)
        make_init_layer(merged, snapshot.work.path / "init", spec.mounts)
        ident = resolve_user(merged, spec.user)
        syscalls.umount2(merged)
        snapshot.extra_lowers = [snapshot.work.path / "init"]
        snapshot.mount(merged)
        # nodev on the root: a device node from a layer (b 8 0) must not open;
        # only the binds set up in /dev do (no device cgroup here, unlike Docker).
        syscalls.mount(None, merged, None,
                       syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_NODEV)
        # Last, and with no fork after it but PID 1's: the first child becomes PID 1,
        # and a fuse-overlayfs daemon forked by the mounts above stays out of the step.
        syscalls.unshare(syscalls.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            syscalls.set_parent_death_signal(signal.SIGKILL)
            _pid1(merged, spec, ident, snapshot.work.path / "files", out_fd, err_fd)
        orphaned.step = pid
        os.close(out_fd)
        _, wait_status = os.waitpid(pid, 0)
        orphaned.step = 0  # reaped: its PID may be another process's now
        status = os.waitstatus_to_exitcode(wait_status)
        if status < 0:
            status = 128 - status
    except BaseException as err:  # must not return into the caller's code
        report(err_fd, err)
    os._exit(status)


class _Orphaned:
    """The setup child's parent-death signal, SIGTERM, handled: kill the step's PID 1
    (which ends its PID namespace), then exit.

    PID 1 asks for SIGKILL when the setup child dies, but the step's program may
    clear that (any process may, with prctl).  If pybuild is killed outright (kill
    -9, the OOM killer) nothing else would end such a step: it would run on with
    no build around it."""

    def __init__(self) -> None:
        self.step = 0  # PID 1 once forked, as this process sees it
        signal.signal(signal.SIGTERM, self._parent_died)
        syscalls.set_parent_death_signal(signal.SIGTERM)

    def _parent_died(self, signum: int, frame: object) -> None:
        if self.step:
            os.kill(self.step, signal.SIGKILL)
        os._exit(SETUP_FAILED)


def _unshare(spec: RunSpec, stack: network.Stack | None) -> None:
    """New mount, IPC, UTS (and network) namespaces, the network up, and every mount
    made private (the PID namespace comes last, in ``setup_child``)."""
    from builder.run import network

    flags = syscalls.CLONE_NEWNS | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWUTS
    if spec.network != "host":
        flags |= syscalls.CLONE_NEWNET
    syscalls.unshare(flags)
    if spec.network != "host":
        syscalls.loopback_up()
    if spec.network == "default":
        # Without CAP_NET_RAW (see _step_caps), ping uses ICMP datagram sockets,
        # which this namespace's sysctl must allow for every group (as Docker sets it;
        # in a user namespace the kernel takes only groups that are mapped).
        with open("/proc/sys/net/ipv4/ping_group_range", "w") as sysctl:
            sysctl.write(f"0 {userns.highest_gid()}")
    if stack is not None:
        network.attach(stack)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)


def _mount_views(snapshot: ActiveSnapshot, spec: RunSpec) -> None:
    """Mount the other stages and images that ``from=`` binds read from, and learn
    whether each source is a file or a directory (the kind of its mount point).

    Here, not in PID 1: reading the store's database from inside the new PID
    namespace fails (SQLite WAL: "locking protocol").  An ``rw`` bind gets a
    writable view over a throw-away upper dir, as BuildKit's writable snapshot."""
    for index, mount in enumerate(spec.mounts):
        if mount.kind == "view" and mount.view is not None:
            whole = snapshot.work.path / "files" / f"scratch-{index}" / "view"
            whole.mkdir(parents=True)
            mount.view.mount(str(whole), readonly=mount.readonly)
            mount.is_dir = source_is_dir(str(whole), mount.source or "/")


def _pid1(merged: str, spec: RunSpec, ident: Identity, files: Path, out_fd: int,
          err_fd: int) -> None:
    """Runs as PID 1 of the new PID namespace; never returns."""
    try:
        # A session of its own, as runc's init makes: no controlling terminal,
        # so /dev/tty gives ENXIO and nothing can TIOCSTI into the invoker's shell.
        os.setsid()
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        # Before anything can name an inherited fd (WORKDIR /proc/self/fd/N: runc
        # CVE-2024-21626), close them all; err_fd is close-on-exec.
        os.closerange(3, err_fd)
        os.closerange(err_fd + 1, 65536)
        # A mount namespace of the step's own: pivot_root moves the root of every
        # process whose root is the old one, and a fuse-overlayfs daemon serving the
        # new root must keep the host's (snapshot/fuse.py).
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        mount_specials(merged, spec, files)
        for index, mount in enumerate(spec.mounts):
            mount_extra(merged, mount, files / f"scratch-{index}")
        syscalls.sethostname(spec.hostname)
        os.chdir(merged)
        syscalls.pivot_root(".", ".")
        syscalls.umount2(".", syscalls.MNT_DETACH)
        os.chdir("/")
        _become_step(spec, ident)
        program = _find_program(spec.argv[0], spec.env)
        if program is None:
            report(err_fd, BuildError(f"exec: \"{spec.argv[0]}\": executable file not "
                                      "found in $PATH"))
            os._exit(NOT_FOUND)
        # setgid/setuid to the step's user cleared the parent-death signal; the
        # step must still die with the setup child (a stopped or killed build).
        syscalls.set_parent_death_signal(signal.SIGKILL)
        os.execve(program, spec.argv, dict(e.split("=", 1) for e in spec.env))
    except BaseException as err:  # must not return into the caller's code
        report(err_fd, err)
        if isinstance(err, OSError) and err.errno in (errno.ENOENT, errno.EACCES):
            os._exit(NOT_FOUND)
    os._exit(SETUP_FAILED)


def _become_step(spec: RunSpec, ident: Identity) -> None:
    """After pivot_root: limits, seccomp, capabilities, the step's user, umask, cwd."""
    # Docker's default capabilities from here on (R17): no CAP_SYS_ADMIN, so
    # the step cannot undo the masks, mount, or unshare a new user namespace
    # with full capabilities; the bounding set is what the exec'd program gets.
    apply_ulimits(spec.options)  # raising a hard limit needs CAP_SYS_RESOURCE
    syscalls.restrict_syscalls()  # needs CAP_SYS_ADMIN: before the drop
    syscalls.limit_capabilities(_step_caps(spec.network))
    if userns.may_set_groups():  # not with a single-id map (builder.userns)
        os.setgroups(ident.groups)
    if (why := userns.unmapped(ident.uid, ident.gid)) is not None:
        raise BuildError(f"cannot run the step as its USER: {why}")
    os.setgid(ident.gid)
    os.setuid(ident.uid)
    # runc sets 0022 for every container: a step's files must not take their modes
    # from whatever umask the invoker of pybuild happened to have.
    os.umask(0o022)
    try:
        os.chdir(spec.cwd)
    except OSError as err:
        raise SandboxError(f"cannot enter working directory {spec.cwd}: "
                           f"{err.strerror}") from None


def _step_caps(network_mode: str) -> set[int]:
    """Docker's default capabilities, less CAP_NET_RAW on the default network.

    With CAP_NET_RAW a step can write raw frames (AF_PACKET) onto the tap device that
    slirp4netns reads, addressed to 127.0.0.1: slirp4netns then connects to the host's
    loopback as asked (--disable-host-loopback only covers its 10.0.2.x aliases), and
    the step talks to host-only services.  The kernel's routing refuses a loopback
    destination on tap0 for every other socket.  Dropping the capability closes it
    for every ABI (a seccomp rule on socket() misses i386's socketcall)."""
    caps = set(syscalls.DEFAULT_CAPS)
    if network_mode == "default":
        caps.discard(syscalls.CAP_NET_RAW)
    return caps


def _find_program(argv0: str, env: list[str]) -> str | None:
    if "/" in argv0:
        return argv0
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", argv0)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def report(err_fd: int, err: BaseException) -> None:
    """Send a setup failure to the parent as ``kind NUL message``."""
    if isinstance(err, SandboxError):
        kind, text = "sandbox", str(err)
    elif isinstance(err, PybuildError):  # the step's own line (a BuildError, a context
        kind, text = "build", str(err)   # that changed while its mount was made)
    elif isinstance(err, OSError):
        kind, text = "sandbox", f"{err.strerror or err}" + (f": {err.filename}"
                                                            if err.filename else "")
    else:
        kind, text = "sandbox", repr(err)
    os.write(err_fd, f"{kind}\0{text}".encode())
