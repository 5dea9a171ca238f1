"""The fuse-overlayfs snapshot driver: rootless mode's fallback where the kernel's
overlayfs will not mount in a user namespace (before Linux 5.11).

The same lowers and upper dir as the overlay driver (``snapshot.overlay``), mounted by
Debian's ``fuse-overlayfs`` (the daemon podman and buildah use) instead of the kernel.
The daemon serves the mount for as long as it lives, so ``mount`` forks it in the
foreground as a child of the process that mounts, with the kernel's parent-death
signal: it ends with that process (a finished, failed or killed step) and its mount
with it.  Mount it before a PID namespace is made (``run.nschild``), or it would be the
step's PID 1.

Its upper dir is overlay format but for one mark: it keeps an opaque directory as a
``user.fuseoverlayfs.opaque`` xattr (``trusted.overlay.opaque`` as root) with
``.wh..wh..opq`` and ``.wh..opq`` entries in it; ``commit`` turns those into the
store's mark (``user.overlay.opaque`` rootless, ``trusted.overlay.opaque`` as root), so
the layer is the kernel driver's byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import ClassVar

from builder import syscalls
from builder.errors import SandboxError
from builder.layers import whiteout as wh
from builder.snapshot.base import Commit, commit_upper
from builder.snapshot.overlay import OverlayDriver
from builder.snapshot.overlay import Snapshot as OverlaySnapshot
from builder.userns import rootless

PROGRAM = "fuse-overlayfs"
# Its mark for an opaque directory: its own xattr in a user namespace, the kernel's
# trusted one as root; with two entries of its own in the directory either way.
_OPAQUE_MARKS = ("user.fuseoverlayfs.opaque", wh.OPAQUE_XATTR_ROOT, wh.OPAQUE_XATTR_ROOTLESS)
_MARKERS = (wh.WHITEOUT_OPAQUE, b".wh..opq")
_MOUNT_SECONDS = 10.0


class Snapshot(OverlaySnapshot):
    """An overlay snapshot mounted by fuse-overlayfs."""

    def mount(self, target: str, *, readonly: bool = False) -> None:
        self.check_active("mount")
        program = shutil.which(PROGRAM)
        if program is None:
            raise SandboxError(f"the {PROGRAM} driver needs {PROGRAM} "
                               f"(apt-get install {PROGRAM})")
        lowers = ":".join(self._lower_names(readonly))
        options = f"lowerdir={lowers}"
        if not readonly:
            options += f",upperdir={self.upper},workdir={self.work.path / 'ovl-work'}"
        before = os.stat(target).st_dev
        log = self.work.path / f"{PROGRAM}.log"
        pid = os.fork()
        if pid == 0:
            _daemon(program, str(self.store.root / "l"), options, target, str(log))
        _wait_mounted(pid, target, before, log)

    # fuse-overlayfs marks whiteouts its own way (``as_kernel_marks``) and its daemon
    # owns the mount: a copy keeps writing through it.
    has_offline_upper: ClassVar[bool] = False

    def offline_upper(self, target: str) -> str | None:
        return None

    def commit(self, *, source_date_epoch: int | None = None) -> Commit:
        self.check_active("commit")
        as_kernel_marks(self.upper)
        return commit_upper(self, source_date_epoch=source_date_epoch)


def _daemon(program: str, cwd: str, options: str, target: str, log: str) -> None:
    """The forked child: becomes the mount's daemon; never returns."""
    try:
        syscalls.set_parent_death_signal(signal.SIGKILL)
        os.chdir(cwd)  # the lowers are named relative to the store's l/, as for overlay
        null = os.open("/dev/null", os.O_RDWR)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # Nothing of the mounting process's: a step's output pipe held here would keep
        # its reader waiting until this daemon ends.
        os.closerange(3, 65536)
        os.execv(program, [program, "-f", "-o", options, target])
    except BaseException:  # must not return into pybuild's code
        pass
    os._exit(127)


def _wait_mounted(pid: int, target: str, before: int, log: Path) -> None:
    """Until ``target`` is the daemon's mount (bounded), or the daemon has failed."""
    deadline = time.monotonic() + _MOUNT_SECONDS
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            said = [line for line in log.read_text(errors="replace").splitlines()
                    if line.strip() and "unknown argument ignored" not in line]
            raise SandboxError(f"{PROGRAM} could not mount {target}: "
                               f"{said[-1] if said else os.waitstatus_to_exitcode(status)}")
        if os.stat(target).st_dev != before:
            return
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise SandboxError(f"{PROGRAM} did not mount {target} within {_MOUNT_SECONDS:.0f} s")


def as_kernel_marks(upper: Path) -> None:
    """Every opaque directory fuse-overlayfs marked in ``upper`` marked as the kernel
    marks it (``layers.whiteout.opaque_xattr``), without fuse-overlayfs's entries and
    xattr."""
    todo = [os.fsencode(upper)]
    while todo:
        directory = todo.pop()
        with os.scandir(directory) as entries:
            names = {entry.name: entry.is_dir(follow_symlinks=False) for entry in entries}
        marks = [key for key in wh.list_xattrs(directory) if key in _OPAQUE_MARKS]
        if marks:
            for marker in _MARKERS:
                if marker in names:
                    os.unlink(os.path.join(directory, marker))
                    del names[marker]
            for key in marks:
                os.removexattr(directory, key, follow_symlinks=False)
            os.setxattr(directory, wh.opaque_xattr(rootless()), b"y", follow_symlinks=False)
        todo.extend(os.path.join(directory, name) for name, is_dir in names.items() if is_dir)


class FuseDriver(OverlayDriver):
    name = PROGRAM

    def prepare(self, parent: str | None) -> Snapshot:
        made = super().prepare(parent)
        return Snapshot(made.store, made.parent, made.work)
