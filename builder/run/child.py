"""Run a Python function in a forked child with a private mount namespace; kill
a child and everything below it at once."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, cast

from builder import errors, syscalls

T = TypeVar("T")
Args = TypeVarTuple("Args")


class _SpawnLock:
    """Held from making a child's pipes until the parent has closed the child's ends.

    Stages build on threads: a child forked by another thread inside that window
    would inherit the write end and keep the reader from ever seeing EOF while it
    lives.  The child gets a fresh lock (its copy may be held).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder = 0  # the PID that took it: a child forked inside leaves it alone

    def __enter__(self) -> None:
        self._lock.acquire()
        self._holder = os.getpid()

    def __exit__(self, *exc: object) -> None:
        if self._holder == os.getpid():
            self._holder = 0
            self._lock.release()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._holder = 0


SPAWN_LOCK = _SpawnLock()
os.register_at_fork(after_in_child=SPAWN_LOCK._reset)

# Writes the disk refused (full, over quota, read-only, failing): a one-line error that
# the caller places (the step), not the "internal error" of a bug (catalogue REL-4).
_DISK_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO))


def _failure(err: BaseException, writing: str) -> tuple[str, object]:
    """What the child sends back for ``err``; called in its ``except`` block."""
    if isinstance(err, errors.PybuildError):
        return ("err", err)
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        reason = err.strerror or os.strerror(err.errno)
        # EIO may come from either side of a copy; the others are refused writes.
        verb = "read or write" if err.errno == errno.EIO else "write"
        return ("err", errors.BuildError(f"cannot {verb} {writing}: {reason}"))
    return ("bug", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")


def in_mount_namespace(fn: Callable[[*Args], T], *args: *Args, flags: int = 0,
                       writing: str = "to the disk") -> T:
    """Call ``fn(*args)`` in a child process with a private mount namespace.

    The return value must be picklable.  A ``PybuildError`` raised in the child
    is raised again here with the same type and message; a write the disk refused
    becomes the ``BuildError`` "cannot write ``writing``: <reason>" ("cannot read or
    write" for EIO); any other
    exception becomes a ``PybuildError`` carrying the child's traceback text.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with SPAWN_LOCK:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid:
            os.close(write_fd)
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_fd)
            # A new session with no controlling terminal (as RUN steps get): what
            # this child runs (COPY, export's tar) can never reach the invoker's tty.
            os.setsid()
            syscalls.set_parent_death_signal(signal.SIGKILL)
            syscalls.unshare(syscalls.CLONE_NEWNS | flags)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            payload: tuple[str, object] = ("ok", fn(*args))
        except BaseException as err:  # everything must reach the parent
            payload = _failure(err, writing)
        try:
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(payload, out)
        except BaseException:
            status = 1
        os._exit(status)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if not data:
        code = os.waitstatus_to_exitcode(wait_status)
        raise errors.PybuildError(f"helper process died (status {code})")
    kind, value = pickle.loads(data)
    if kind == "ok":
        return cast(T, value)  # what fn returned, unpickled: its type is fn's
    if kind == "err":
        raise value
    raise errors.PybuildError(f"internal error in helper process: {value}")


def kill_process_tree(root: int, *, include_root: bool = True) -> None:
    """SIGKILL every process below ``root`` (and ``root`` itself if ``include_root``).

    The whole tree is read from /proc before anything is killed, so a grandchild
    is killed by its PID even if its parent dies first and it is handed to init.
    A RUN step's PID 1 is such a grandchild: its parent-death signal should end
    it with the setup child, but a build stopped by Ctrl-C must never depend on
    that alone (a step left running keeps its output pipe open, and the build
    waits for it)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                parent = int(stat_file.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry.name))
    doomed = [root] if include_root else []
    pending = [root]
    while pending:
        below = children.get(pending.pop(), [])
        doomed.extend(below)
        pending.extend(below)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
