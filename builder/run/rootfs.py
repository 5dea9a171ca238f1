"""The step's root before pivot_root: the init layer of mount-point stubs, and the
kernel filesystems and files mounted into it in PID 1.

Mount points the image lacks (/proc, /dev, /sys, /etc/hosts, /etc/resolv.conf, the
targets of ``RUN --mount``) come from an "init" lower layer above the image's
layers (moby's ``daemon/initlayer``), so they never land in the step's upper dir.
/proc, /dev and /sys are mounted only onto verified plain directories (R02-R05);
what Docker masks in them is masked (R04, R17).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from builder import syscalls
from builder.errors import SandboxError
from builder.run.mountpoints import finish_stubs, make_stub
from builder.run.spec import MountSpec, RunSpec

_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_STUB_DIRS = ("proc", "sys", "dev")
_STUB_FILES = ("etc/hosts", "etc/resolv.conf")
# What Docker/containerd/BuildKit mask and make read-only in /proc and /sys by
# default (containerd oci/spec.go).  Without them a RUN as root could write
# /proc/sys/kernel/core_pattern or /proc/sysrq-trigger, which are the host's.
_MASKED = ("proc/acpi", "proc/asound", "proc/kcore", "proc/keys", "proc/latency_stats",
           "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi",
           "sys/firmware", "sys/devices/virtual/powercap")
_READONLY = ("proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger")


def _plain(path: str, want_dir: bool) -> bool:
    """True if ``path`` exists and is a real directory (or regular file), not a link."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)


def make_init_layer(merged: str, init: Path, mounts: list[MountSpec]) -> None:
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


def mount_specials(merged: str, spec: RunSpec, files: Path) -> None:
    """In PID 1: /proc, /dev, /sys, the masks, /etc/hosts and /etc/resolv.conf (from
    ``files``), and the step's /dev/pipes, into the root at ``merged``."""
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
