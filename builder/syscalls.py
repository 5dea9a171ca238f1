"""The one module that calls the kernel through ctypes.

Python 3.11 has no ``os.unshare``, ``mount`` or ``pivot_root``; every raw
system call pybuild needs is wrapped here, one small function per call, each
raising ``OSError(errno, strerror, path)`` on failure.  It is a leaf: it imports
only the standard library, so the sandbox child can use it after ``fork``
without importing anything else.
"""

from __future__ import annotations

import ctypes
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _check(result: int, call: str, path: str | None = None) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}", path)


def _bytes(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data)),
           "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_bytes(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(38, f"pivot_root: unsupported architecture {platform.machine()}")
    _check(_libc.syscall(number, _bytes(new_root), _bytes(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def set_parent_death_signal(signal_number: int) -> None:
    """Have the kernel send ``signal_number`` to us when our parent dies."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0), "prctl")


def loopback_up() -> None:
    """Bring up ``lo`` in the current network namespace (it starts down)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


# -- the new mount API (fsopen/fsconfig/fsmount/move_mount, Linux 5.2+) ----
# Used where a legacy mount(2) option string would not fit in one page: each
# fsconfig value is passed on its own (overlay's "lowerdir+" needs Linux 6.8).
# These syscall numbers are shared by every architecture's table.
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432

FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
# The kernel copies each fsconfig string with strndup_user(value, 256).
FSCONFIG_VALUE_MAX = 255


def _syscall(number: int, *args: object) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        return result
    return int(result)


def fsopen(fstype: str) -> int:
    """A filesystem context fd for ``fstype`` (close it when done)."""
    fd = _syscall(_SYS_FSOPEN, ctypes.c_char_p(fstype.encode()), ctypes.c_uint(FSOPEN_CLOEXEC))
    _check(fd, "fsopen", fstype)
    return fd


def fsconfig(fs_fd: int, cmd: int, key: str | None = None, value: str | None = None) -> None:
    """One fsconfig call; on failure the message includes the context's log."""
    result = _syscall(_SYS_FSCONFIG, ctypes.c_int(fs_fd), ctypes.c_uint(cmd),
                      ctypes.c_char_p(_bytes(key)), ctypes.c_char_p(_bytes(value)),
                      ctypes.c_int(0))
    if result < 0:
        err = ctypes.get_errno()
        log = fs_context_log(fs_fd)
        detail = f" ({log})" if log else ""
        raise OSError(err, f"fsconfig {key}={value}: {os.strerror(err)}{detail}")


def fs_context_log(fs_fd: int) -> str:
    """The messages the kernel queued on a filesystem context (why a config failed)."""
    lines = []
    for _ in range(8):
        try:
            data = os.read(fs_fd, 4096)
        except OSError:
            break
        if not data:
            break
        lines.append(data.decode(errors="replace"))
    return "; ".join(lines)


def fsmount(fs_fd: int, attr_flags: int = 0) -> int:
    """A detached mount fd for a created context (close it when done)."""
    fd = _syscall(_SYS_FSMOUNT, ctypes.c_int(fs_fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
                  ctypes.c_uint(attr_flags))
    _check(fd, "fsmount")
    return fd


def move_mount_to(mount_fd: int, target: str) -> None:
    """Attach the detached mount ``mount_fd`` at ``target``."""
    result = _syscall(_SYS_MOVE_MOUNT, ctypes.c_int(mount_fd), ctypes.c_char_p(b""),
                      ctypes.c_int(AT_FDCWD), ctypes.c_char_p(_bytes(target)),
                      ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    _check(result, "move_mount", target)
