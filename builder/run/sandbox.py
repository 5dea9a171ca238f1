"""Run one RUN command in namespaces over a snapshot, after pivot_root.

Process tree (mkosi's sandbox and runc have the same shape)::

    pybuild ──fork──> setup child: unshare(mount, ipc, uts[, net]); [network up];
       │              unshare(pid); mount the overlay; read /etc/passwd as text; fork
       │                └──> PID 1 of the new PID namespace: /proc, /dev, hosts,
       │                     resolv.conf; pivot_root; drop to USER; close fds; execve
       └──fork──> (default network) slirp4netns in the host's namespaces, its own
                  session; joins the setup child's network namespace (network.py);
                  killed and reaped by pybuild when the step ends

Nothing is ever unmounted by hand: the mounts live in the setup child's mount
namespace and vanish with it.  Mount-point stubs the image lacks (/proc, /dev,
/sys, /etc/hosts, /etc/resolv.conf) come from an "init" lower layer above the
image's layers, so they never land in the step's upper dir.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder import limits, syscalls
from builder.errors import BuildError, SandboxError
from builder.run.child import SPAWN_LOCK
from builder.run.mountpoints import (
    finish_stubs,
    make_stub,
    mount_extra,
    resolve_in_root,
    source_is_dir,
)
from builder.run.mountpoints import (  # re-exported: COPY resolves paths with it
    resolve_components as resolve_components,
)
from builder.run.runopts import RunOptions, apply_ulimits
from builder.snapshot.base import ActiveSnapshot
from builder.snapshot.overlay import Snapshot

if TYPE_CHECKING:   # the network stack and the filtered context load only for a RUN
    from builder.run import network

HOSTNAME = "buildkitsandbox"
HOSTS = (f"127.0.0.1\tlocalhost {HOSTNAME}\n"
         "::1\tlocalhost ip6-localhost ip6-loopback\n")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
NETWORKS = ("default", "host", "none")
_STUB_DIRS = ("proc", "sys", "dev")
_STUB_FILES = ("etc/hosts", "etc/resolv.conf")
_SETUP_FAILED = 125
_NOT_FOUND = 127
# What Docker/containerd/BuildKit mask and make read-only in /proc and /sys by
# default (containerd oci/spec.go).  Without them a RUN as root could write
# /proc/sys/kernel/core_pattern or /proc/sysrq-trigger, which are the host's.
_MASKED = ("proc/acpi", "proc/asound", "proc/kcore", "proc/keys", "proc/latency_stats",
           "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi",
           "sys/firmware", "sys/devices/virtual/powercap")
_READONLY = ("proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger")


@dataclass
class MountSpec:
    """One extra mount of a RUN step (``RUN --mount``, secrets)."""

    kind: str                      # "bind", "tmpfs", "view" (another stage or image),
                                   # "scratch", "context-file" (subpath below source) or
                                   # "secret" (a copy of the file at source)
    target: str                    # absolute path inside the image
    source: str = ""               # host path, for "bind" and "scratch" (its lower dir)
    readonly: bool = True
    is_dir: bool = True            # the kind of mount point to create if the image lacks it
    view: ActiveSnapshot | None = None  # for "view": source inside it is mounted at target
    options: str = ""              # tmpfs options
    subpath: str = ""              # for "bind": a directory below source (cache source=)
    # For "bind"/"scratch" of the context: writes the whiteouts of what .dockerignore
    # hides below source into the dir given, False if none (builder/run/ctxmount.py).
    hide: Callable[[str], bool] | None = None
    uid: int = 0                   # for "secret": the copy's owner, group and mode
    gid: int = 0
    mode: int = 0o400


@dataclass
class RunSpec:
    argv: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: str = ""
    network: str = "default"       # one of NETWORKS: "default" is isolated (run/network.py)
    hostname: str = HOSTNAME
    mounts: list[MountSpec] = field(default_factory=list)
    pipes: list[tuple[str, bytes]] = field(default_factory=list)  # files for /dev/pipes/
    options: RunOptions | None = None  # --add-host, --ulimit, --shm-size (run/runopts.py)


@dataclass
class Identity:
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)


# -- reading the image's files with chroot semantics ----------------------
def _read_table(root: str, path: str) -> list[list[str]]:
    """The image's passwd/group file as rows, read as text and bounded (R15).

    O_NOFOLLOW + fstat: a FIFO, a device (``/etc/passwd -> /dev/zero``) or a
    link swapped in after resolving is never read; a huge file is an error,
    not a memory bomb (CVE-2024-9676).
    """
    host_path = resolve_in_root(root, path)
    if host_path is None:
        return []
    try:
        # O_NOCTTY: the setup child leads a session of its own with no terminal;
        # an image's /etc/passwd that is a tty node must not become its terminal.
        fd = os.open(host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                     | os.O_NOCTTY)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as table:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        max_bytes = limits.get().max_passwd_bytes
        data = table.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BuildError(f"{path} in the image is larger than {max_bytes} bytes (raise it "
                         f"with {limits.env_name('max_passwd_bytes')})")
    return [line.split(":") for line in data.decode("utf-8", "replace").split("\n")
            if line.strip() and not line.startswith("#")]


def resolve_user(root: str, user: str) -> Identity:
    """Resolve USER ``name|uid[:group|gid]`` against the image's passwd and group files.

    Only text is read (never NSS), as Docker and BuildKit do.
    """
    if not user:
        user = "0"
    name, _, group = user.partition(":")
    passwd = _read_table(root, "/etc/passwd")
    groups = _read_table(root, "/etc/group")
    entry = next((e for e in passwd if len(e) >= 4 and name in (e[0], e[2])), None)
    if entry is not None and (entry[0] == name or name.isdigit()):
        uid, gid, username = int(entry[2]), int(entry[3]), entry[0]
    elif name.isdigit():
        uid, gid, username = int(name), 0, None
    else:
        raise BuildError(f"unable to find user {name}: no matching entries in passwd file")
    if group:
        match = next((g for g in groups if len(g) >= 3 and group in (g[0], g[2])), None)
        if match is not None and (match[0] == group or group.isdigit()):
            gid = int(match[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise BuildError(f"unable to find group {group}: no matching entries in group file")
    extra: list[int] = []
    if username is not None and not group:
        extra = [int(g[2]) for g in groups
                 if len(g) >= 4 and username in g[3].split(",") and g[2].isdigit()]
    for value in (uid, gid, *extra):
        if not 0 <= value < 2**32 - 1:
            raise BuildError(f"user {user}: id {value} out of range")
    # Supplementary groups: only memberships listed in /etc/group (BuildKit adds no
    # implicit primary group).
    return Identity(uid, gid, sorted(set(extra)))


# -- the setup child and PID 1 --------------------------------------------
def _plain(path: str, want_dir: bool) -> bool:
    """True if ``path`` exists and is a real directory (or regular file), not a link."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)


def _make_init_layer(merged: str, init: Path, mounts: list[MountSpec]) -> None:
    """Create, in ``init``, the mount-point stubs that the image at ``merged`` lacks."""
    init.mkdir(exist_ok=True)
    copied: list[tuple[Path, os.stat_result]] = []
    for mount in mounts:
        make_stub(merged, init, mount.target, mount.is_dir, copied)
    for name in _STUB_DIRS:
        # Missing, or not a real directory (R02/R03: `/proc -> /host/path`,
        # `/dev -> /etc`): a directory here hides the image's entry, as moby's
        # init layer does, so /proc and /dev are always made on a verified dir.
        if not _plain(os.path.join(merged, name), want_dir=True):
            (init / name).mkdir(mode=0o755)
    etc = os.path.join(merged, "etc")
    if not os.path.lexists(etc):
        (init / "etc").mkdir(mode=0o755)
    for name in _STUB_FILES:
        if not os.path.lexists(os.path.join(merged, name)) and (
                not os.path.lexists(etc) or _plain(etc, want_dir=True)):
            (init / "etc").mkdir(mode=0o755, exist_ok=True)
            (init / name).touch(mode=0o644)
    if (init / "etc").exists():
        # The stub /etc must not change the image's /etc as seen in the merged view.
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(etc)
            os.chown(init / "etc", st.st_uid, st.st_gid)
            os.chmod(init / "etc", stat.S_IMODE(st.st_mode))
            os.utime(init / "etc", ns=(st.st_atime_ns, st.st_mtime_ns))
    finish_stubs(copied)


def _setup_dev(dev: str, shm_size: int) -> None:
    # nodev: with no device cgroup, a node the RUN makes (CAP_MKNOD) must not
    # open, or `mknod /dev/sda b 8 0` reads the host's disk.  The allowed
    # devices are binds of the host's nodes, whose own mount allows devices.
    syscalls.mount("tmpfs", dev, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV,
                   "mode=755,size=65536k")
    for name in _DEVICES:
        host = os.stat(f"/dev/{name}")
        if not stat.S_ISCHR(host.st_mode):
            raise SandboxError(f"host /dev/{name} is not a character device")
        target = os.path.join(dev, name)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
        syscalls.mount(f"/dev/{name}", target, None, syscalls.MS_BIND)
    os.mkdir(os.path.join(dev, "pts"))
    syscalls.mount("devpts", os.path.join(dev, "pts"), "devpts",
                   syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.mkdir(os.path.join(dev, "shm"))
    # containerd's default /dev/shm; --shm-size replaces it, as BuildKit's tmpfs mount
    # there does (only nosuid and the size: solver/llbsolver/mounts/mount.go).
    syscalls.mount("shm", os.path.join(dev, "shm"), "tmpfs",
                   syscalls.MS_NOSUID | syscalls.MS_NODEV | (0 if shm_size else syscalls.MS_NOEXEC),
                   f"mode=1777,size={shm_size or 65536 * 1024}")
    for index, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{index}", os.path.join(dev, name))
    os.symlink("/proc/self/fd", os.path.join(dev, "fd"))


def _mask_paths(merged: str) -> None:
    """Mask and write-protect /proc and /sys paths as Docker does (R04, R17).

    The mask source is the host's /dev/null, checked to be char 1:3 through the
    fd it is mounted from (runc CVE-2025-31133 used the image's own /dev/null).
    Targets are in the procfs and sysfs just mounted, which the image cannot shape.
    """
    null = os.open("/dev/null", os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(null)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            raise SandboxError("/dev/null is not the null device (1:3); refusing to mask")
        for rel in _MASKED:
            target = os.path.join(merged, rel)
            try:
                st = os.lstat(target)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                syscalls.mount("tmpfs", target, "tmpfs", syscalls.MS_RDONLY
                               | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
                               "size=0,mode=555")
            elif not stat.S_ISLNK(st.st_mode):
                syscalls.mount(f"/proc/self/fd/{null}", target, None, syscalls.MS_BIND)
    finally:
        os.close(null)
    for rel in _READONLY:
        target = os.path.join(merged, rel)
        if not os.path.lexists(target) or os.path.islink(target):
            continue
        syscalls.mount(target, target, None, syscalls.MS_BIND | syscalls.MS_REC)
        syscalls.mount(None, target, None, syscalls.MS_BIND | syscalls.MS_REMOUNT
                       | syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
                       | syscalls.MS_NOEXEC)


def _bind_file(source: str, target: str) -> None:
    syscalls.mount(source, target, None, syscalls.MS_BIND)
    syscalls.mount(None, target, None,
                   syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)


def _find_program(argv0: str, env: list[str]) -> str | None:
    if "/" in argv0:
        return argv0
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", argv0)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


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
        proc = os.path.join(merged, "proc")
        if not _plain(proc, want_dir=True):
            raise SandboxError("/proc in the image is not a directory")
        syscalls.mount("proc", proc, "proc",
                       syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
        if _plain(os.path.join(merged, "dev"), want_dir=True):
            _setup_dev(os.path.join(merged, "dev"), spec.options.shm_size if spec.options else 0)
        if _plain(os.path.join(merged, "sys"), want_dir=True):
            with contextlib.suppress(OSError):
                syscalls.mount("sysfs", os.path.join(merged, "sys"), "sysfs",
                               syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
                               | syscalls.MS_NOEXEC)
        _mask_paths(merged)
        if _plain(os.path.join(merged, "etc"), want_dir=True):
            for name in ("hosts", "resolv.conf"):
                target = os.path.join(merged, "etc", name)
                if _plain(target, want_dir=False):
                    _bind_file(str(files / name), target)
        if spec.pipes:
            pipes = os.path.join(merged, "dev", "pipes")
            os.mkdir(pipes, 0o755)
            for name, data in spec.pipes:
                fd = os.open(os.path.join(pipes, os.path.basename(name)),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
                os.write(fd, data)
                os.close(fd)
        for index, mount in enumerate(spec.mounts):
            mount_extra(merged, mount, files / f"scratch-{index}")
        syscalls.sethostname(spec.hostname)
        os.chdir(merged)
        syscalls.pivot_root(".", ".")
        syscalls.umount2(".", syscalls.MNT_DETACH)
        os.chdir("/")
        # Docker's default capabilities from here on (R17): no CAP_SYS_ADMIN, so
        # the step cannot undo the masks, mount, or unshare a new user namespace
        # with full capabilities; the bounding set is what the exec'd program gets.
        apply_ulimits(spec.options)  # raising a hard limit needs CAP_SYS_RESOURCE
        syscalls.restrict_syscalls()  # needs CAP_SYS_ADMIN: before the drop
        syscalls.limit_capabilities(_step_caps(spec.network))
        os.setgroups(ident.groups)
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
        program = _find_program(spec.argv[0], spec.env)
        if program is None:
            _report(err_fd, BuildError(f"exec: \"{spec.argv[0]}\": executable file not "
                                       "found in $PATH"))
            os._exit(_NOT_FOUND)
        # setgid/setuid to the step's user cleared the parent-death signal; the
        # step must still die with the setup child (a stopped or killed build).
        syscalls.set_parent_death_signal(signal.SIGKILL)
        os.execve(program, spec.argv, dict(e.split("=", 1) for e in spec.env))
    except BaseException as err:  # must not return into the caller's code
        _report(err_fd, err)
        if isinstance(err, OSError) and err.errno in (errno.ENOENT, errno.EACCES):
            os._exit(_NOT_FOUND)
    os._exit(_SETUP_FAILED)


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


def _setup_child(snapshot: Snapshot, spec: RunSpec, out_fd: int, err_fd: int,
                 stack: network.Stack | None) -> None:
    """The setup child: namespaces, overlay mount, then PID 1.  Never returns."""
    from builder.run import network

    status = _SETUP_FAILED
    try:
        # Out of the invoker's session first: it reads image files (/etc/passwd)
        # and must never hold the invoker's terminal as its controlling tty.
        os.setsid()
        syscalls.set_parent_death_signal(signal.SIGKILL)
        # R13: nothing in the step may ptrace or open /proc/<pid>/exe of the
        # (host) Python doing the setup; execve of the step's program resets it.
        syscalls.set_dumpable(False)
        flags = syscalls.CLONE_NEWNS | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWUTS
        if spec.network != "host":
            flags |= syscalls.CLONE_NEWNET
        syscalls.unshare(flags)
        if spec.network != "host":
            syscalls.loopback_up()
        if spec.network == "default":
            # Without CAP_NET_RAW (see _step_caps), ping uses ICMP datagram sockets,
            # which this namespace's sysctl must allow for every group (as Docker sets it).
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as sysctl:
                sysctl.write("0 2147483647")
        if stack is not None:
            network.attach(stack)
        # Last, and with no fork before ours: the first child becomes PID 1.
        syscalls.unshare(syscalls.CLONE_NEWPID)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        merged = str(snapshot.work.path / "merged")
        _mount_views(snapshot, spec)
        snapshot.mount(merged, readonly=True)
        _make_init_layer(merged, snapshot.work.path / "init", spec.mounts)
        ident = resolve_user(merged, spec.user)
        syscalls.umount2(merged)
        snapshot.extra_lowers = [snapshot.work.path / "init"]
        snapshot.mount(merged)
        # nodev on the root: a device node from a layer (b 8 0) must not open;
        # only the binds set up in /dev do (no device cgroup here, unlike Docker).
        syscalls.mount(None, merged, None,
                       syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_NODEV)
        pid = os.fork()
        if pid == 0:
            syscalls.set_parent_death_signal(signal.SIGKILL)
            _pid1(merged, spec, ident, snapshot.work.path / "files", out_fd, err_fd)
        os.close(out_fd)
        _, wait_status = os.waitpid(pid, 0)
        status = os.waitstatus_to_exitcode(wait_status)
        if status < 0:
            status = 128 - status
    except BaseException as err:  # must not return into the caller's code
        _report(err_fd, err)
    os._exit(status)


def _mount_views(snapshot: Snapshot, spec: RunSpec) -> None:
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


def _report(err_fd: int, err: BaseException) -> None:
    """Send a setup failure to the parent as ``kind NUL message``."""
    if isinstance(err, BuildError):
        kind, text = "build", str(err)
    elif isinstance(err, SandboxError):
        kind, text = "sandbox", str(err)
    elif isinstance(err, OSError):
        kind, text = "sandbox", f"{err.strerror or err}" + (f": {err.filename}"
                                                            if err.filename else "")
    else:
        kind, text = "sandbox", repr(err)
    os.write(err_fd, f"{kind}\0{text}".encode())


def run_step(snapshot: Snapshot, spec: RunSpec, output: Callable[[bytes], None]) -> int:
    """Run ``spec`` over ``snapshot``; stream its output to ``output``; return its exit code.

    A failure to set up the sandbox raises ``SandboxError``; the command's own
    failure is its non-zero exit code.
    """
    from builder.run import network

    if spec.network not in NETWORKS:
        raise SandboxError(f"unknown network mode {spec.network!r}")
    # Before anything runs: no stack, no step (its one-line error names the package).
    program = network.require_program() if spec.network == "default" else None
    files = snapshot.work.path / "files"
    files.mkdir(exist_ok=True)
    (files / "hosts").write_text(HOSTS + (spec.options.hosts_lines() if spec.options else ""))
    try:
        resolv = Path("/etc/resolv.conf").read_bytes()
    except OSError:
        resolv = b""
    (files / "resolv.conf").write_bytes(network.resolv_conf(resolv) if program else resolv)
    (snapshot.work.path / "merged").mkdir(exist_ok=True)
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
        _setup_child(snapshot, spec, out_write, err_write, stack)
    err_pipe = os.fdopen(err_read, "rb")
    try:
        _pump(out_read, output, lambda: _check_free_space(str(snapshot.upper)))
        setup_error = err_pipe.read().decode(errors="replace")
        _, wait_status = os.waitpid(pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
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
