"""Run a Python function in a forked child with a private mount namespace."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from builder import errors, syscalls

T = TypeVar("T")


def in_mount_namespace(fn: Callable[..., T], *args: Any, flags: int = 0) -> T:
    """Call ``fn(*args)`` in a child process with a private mount namespace.

    The return value must be picklable.  A ``PybuildError`` raised in the child
    is raised again here with the same type and message; any other exception
    becomes a ``PybuildError`` carrying the child's traceback text.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            os.close(read_fd)
            syscalls.set_parent_death_signal(signal.SIGKILL)
            syscalls.unshare(syscalls.CLONE_NEWNS | flags)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            payload = ("ok", fn(*args))
        except errors.PybuildError as err:
            payload = ("err", err)
        except BaseException as err:  # everything must reach the parent
            payload = ("bug", f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        try:
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(payload, out)
        except BaseException:
            status = 1
        os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if not data:
        code = os.waitstatus_to_exitcode(wait_status)
        raise errors.PybuildError(f"helper process died (status {code})")
    kind, value = pickle.loads(data)
    if kind == "ok":
        return value
    if kind == "err":
        raise value
    raise errors.PybuildError(f"internal error in helper process: {value}")
