"""Mount the build context minus its ``.dockerignore``'d entries (a RUN bind mount).

An overlay whose top lower layer holds a whiteout for each hidden entry
(``builder.context.view.ContextFilter.write_whiteouts``) over the context
directory: reads go to the context itself, so the cost is the number of hidden
entries, not the context's size.  Called in the step's own mount namespace,
which takes the mount with it when the step ends.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from builder import syscalls
from builder.errors import SandboxError
from builder.userns import rootless

# As the snapshots' overlays, and redirects are never followed: the context is
# the user's directory, and an overlay xattr in it must not make the view show
# anything but its own entries.
_OPTIONS = "index=off,redirect_dir=nofollow,metacopy=off,xino=off"


def mount_filtered(source: str, hide: str, target: str, scratch: Path, *,
                   writable: bool) -> None:
    """Mount ``source`` with the whiteouts in ``hide`` laid over it at ``target``:
    read-only, or with ``writable`` over a throw-away upper dir in ``scratch``.
    nosuid and nodev, as every host directory a step sees."""
    mount_overlay([hide, source], target, scratch, writable=writable,
                  what=f"the build context at {target} without its .dockerignore'd files")


def mount_overlay(lowers: list[str], target: str, scratch: Path, *, writable: bool,
                  what: str) -> None:
    """An overlay of ``lowers`` (topmost first) at ``target``, read-only or over a
    throw-away upper dir in ``scratch``; nosuid and nodev."""
    fds: list[int] = []
    try:
        # Directories go to the kernel as /proc/self/fd names: a context path may
        # hold the ',' and ':' that split overlay options (a directory named
        # "a:/etc" would add the host's /etc as a lower layer), or be long.
        def name(path: str | Path) -> str:
            fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            return f"/proc/self/fd/{fds[-1]}"

        options = f"lowerdir={':'.join(name(lower) for lower in lowers)},{_OPTIONS}"
        if rootless():
            options += ",userxattr"  # as the snapshots' mounts (snapshot/overlay.py)
        flags = syscalls.MS_NOSUID | syscalls.MS_NODEV
        if writable:
            upper, work = scratch / "upper", scratch / "work"
            upper.mkdir(parents=True)
            work.mkdir()
            # volatile: the upper is thrown away, so the kernel need not sync the
            # filesystem under it when the step's mounts go (snapshot/overlay.py).
            options += f",upperdir={name(upper)},workdir={name(work)},volatile"
        else:
            flags |= syscalls.MS_RDONLY
        try:
            syscalls.mount("overlay", target, "overlay", flags, options)
        except OSError as err:
            raise SandboxError(f"cannot mount {what}: {err.strerror}") from None
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
