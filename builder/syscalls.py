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

import msgspec

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# The capability set Docker, containerd and BuildKit give a container by
# default (containerd oci/spec.go defaultUnixCaps): no CAP_SYS_ADMIN,
# CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_DAC_READ_SEARCH, CAP_SYS_RAWIO ...
DEFAULT_CAPS = {
    0: "CAP_CHOWN", 1: "CAP_DAC_OVERRIDE", 3: "CAP_FOWNER", 4: "CAP_FSETID",
    5: "CAP_KILL", 6: "CAP_SETGID", 7: "CAP_SETUID", 8: "CAP_SETPCAP",
    10: "CAP_NET_BIND_SERVICE", 13: "CAP_NET_RAW", 18: "CAP_SYS_CHROOT",
    27: "CAP_MKNOD", 29: "CAP_AUDIT_WRITE", 31: "CAP_SETFCAP",
}
CAP_NET_RAW = 13   # not given on the default network (run/sandbox.py, _step_caps)
_CAP_VERSION_3 = 0x20080522

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.syncfs.argtypes = [ctypes.c_int]
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


def syncfs(fd: int) -> None:
    """Write back every dirty page and inode of the filesystem holding ``fd``
    (syncfs(2)); ctypes drops the GIL for the call, so a thread can wait on it."""
    _check(_libc.syncfs(fd), "syncfs")


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


def set_dumpable(dumpable: bool) -> None:
    """PR_SET_DUMPABLE: 0 makes /proc/<pid> root-owned and ptrace-proof (R13)."""
    _check(_libc.prctl(PR_SET_DUMPABLE, int(dumpable), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def limit_capabilities(keep: set[int]) -> None:
    """Keep only the capabilities ``keep`` (numbers), in every set of this process.

    The bounding set is what matters for the program exec'd next (root gets
    exactly the bounding set back at execve); permitted and effective are cut
    now, inheritable and ambient cleared (CVE-2022-24769: a non-empty
    inheritable set lets file capabilities grant more than the bounding set
    intends).  Needs CAP_SETPCAP, so call it before dropping to a user.
    """
    last = 63
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        pass
    for cap in range(last + 1):
        if cap not in keep:
            result = _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
            if result < 0 and ctypes.get_errno() != 22:  # EINVAL: unknown to this kernel
                _check(result, f"prctl(PR_CAPBSET_DROP, {cap})")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
           "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for word in (0, 1):
        mask = sum(1 << (cap - 32 * word) for cap in keep if 32 * word <= cap < 32 * word + 32)
        data[word].effective &= mask
        data[word].permitted &= mask
        data[word].inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")


# -- seccomp: the namespace and keyring part of Docker's default profile ----
# Without CAP_SYS_ADMIN, Docker's profile refuses unshare/clone with namespace
# flags (an unprivileged user namespace is a large kernel attack surface, and
# undoes "no CAP_SYS_ADMIN" inside it), clone3 (ENOSYS, so libc falls back to
# clone, whose flags can be checked) and the keyring calls (keyrings are not
# namespaced).  The rest of that profile is not reproduced.
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
_AUDIT_ARCH = {"x86_64": (0xC000003E, {"unshare": 272, "clone": 56, "clone3": 435,
                                      "add_key": 248, "request_key": 249, "keyctl": 250}),
               "i386": (0x40000003, {"unshare": 310, "clone": 120, "clone3": 435,
                                     "add_key": 286, "request_key": 287, "keyctl": 288}),
               "aarch64": (0xC00000B7, {"unshare": 97, "clone": 220, "clone3": 435,
                                        "add_key": 217, "request_key": 218, "keyctl": 219})}
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}
_X32_BIT = 0x40000000


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


class _Op(msgspec.Struct, frozen=True):
    """One BPF instruction before assembly: a ``str`` jump target names a label."""

    code: int
    jt: int | str = 0
    jf: int | str = 0
    k: int | str = 0   # a label only for ``ja`` (an unconditional jump by k)


def seccomp_program() -> list[tuple[int, int, int, int]]:
    """The BPF program (code, jt, jf, k) installed by ``restrict_syscalls``."""
    ld_w_abs, jeq, jge, jset, ja, ret = 0x20, 0x15, 0x35, 0x45, 0x05, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    # Assembled with symbolic jump targets (a bare str marks a label's position),
    # resolved below into relative offsets.
    code: list[_Op | str] = [_Op(ld_w_abs, k=4)]  # seccomp_data.arch
    arches = list(_AUDIT_ARCH.items())
    for index, (name, (audit, _)) in enumerate(arches):
        code.append(_Op(jeq, f"arch-{name}", 0 if index < len(arches) - 1 else "allow", audit))
    for name, (_, numbers) in arches:
        code += [f"arch-{name}", _Op(ld_w_abs, k=0)]  # seccomp_data.nr
        if name == "x86_64":
            code.append(_Op(jge, "eperm", 0, _X32_BIT))  # the x32 ABI, used by nothing
        code.append(_Op(jeq, "flags", 0, numbers["unshare"]))
        code.append(_Op(jeq, "flags", 0, numbers["clone"]))
        code.append(_Op(jeq, "enosys", 0, numbers["clone3"]))
        for call in ("add_key", "request_key", "keyctl"):
            code.append(_Op(jeq, "eperm", 0, numbers[call]))
        code.append(_Op(ja, k="allow"))
    code += ["flags", _Op(ld_w_abs, k=16),  # args[0], low 32 bits
             _Op(jset, "eperm", "allow", NAMESPACE_FLAGS),
             "allow", _Op(ret, k=allow),
             "eperm", _Op(ret, k=eperm),
             "enosys", _Op(ret, k=enosys)]
    labels: dict[str, int] = {}
    program: list[_Op] = []
    for item in code:
        if isinstance(item, str):
            labels[item] = len(program)
        else:
            program.append(item)

    def rel(pc: int, target: int | str) -> int:
        return labels[target] - pc - 1 if isinstance(target, str) else target

    return [(op.code, rel(pc, op.jt), rel(pc, op.jf),
             rel(pc, op.k) if op.code == ja else _number(op.k))
            for pc, op in enumerate(program)]


def _number(k: int | str) -> int:
    if isinstance(k, str):
        raise TypeError(f"BPF label {k!r} as an operand: only ja jumps by k")
    return k


def restrict_syscalls() -> None:
    """Install ``seccomp_program`` for this process and everything it execs.

    Needs CAP_SYS_ADMIN (pybuild does not set no_new_privs, as BuildKit does
    not), so call it before dropping capabilities.
    """
    program = seccomp_program()
    filters = (_SockFilter * len(program))(*[_SockFilter(*op) for op in program])
    fprog = _SockFprog(len(program), filters)
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER,
                       ctypes.cast(ctypes.byref(fprog), ctypes.c_void_p).value, 0, 0),
           "prctl(PR_SET_SECCOMP)")


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
    result: int = _libc.syscall(ctypes.c_long(number), *args)
    return result


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


# -- openat2 (Linux 5.6+): path resolution the kernel confines --------------
_SYS_OPENAT2 = 437  # the same number on every architecture (generic table)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: bytes, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2); raises OSError like ``os.open`` (ENOSYS: kernel < 5.6; EPERM: a
    seccomp filter older than the call), so callers can fall back to a walk."""
    how = _OpenHow(flags, mode, resolve)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)
