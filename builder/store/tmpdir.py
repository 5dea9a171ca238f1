"""Work in progress under ``tmp/``: flock-owned scratch dirs, and removing trees safely."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

from builder.errors import StoreError


class TmpDir:
    """A scratch directory under ``tmp/`` that lives while this process holds its lock."""

    def __init__(self, path: Path):
        self.path = path
        # Lock first, directory second: a sweeper in another process removes a
        # directory only when its lock file is missing or unlocked.  A sweeper may
        # unlink our lock file between our open and our flock (it looked stale);
        # then the file we hold is no longer the one on disk, so try again.
        lock = path.parent / f"{path.name}.lock"
        while True:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._lock_fd = fd
        if path.exists():  # a fixed name (unpack-<chain>) whose owner died: ours now
            remove_tree(path)
        path.mkdir(mode=0o700)

    def release(self) -> None:
        if self._lock_fd < 0:
            return
        if self.path.exists():
            remove_tree(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.parent / f"{self.path.name}.lock")
        os.close(self._lock_fd)
        self._lock_fd = -1

    def detach(self) -> None:
        """Forget the directory (it was renamed away) and drop the lock."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.parent / f"{self.path.name}.lock")
        os.close(self._lock_fd)
        self._lock_fd = -1


def sweep_tmp(tmp: Path) -> None:
    """Remove the work dirs under ``tmp`` that no live process holds."""
    for lock in tmp.glob("*.lock"):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # its owner released it since we listed tmp/
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The file opened may be one another sweeper unlinked since, its owner gone
            # on to a new lock file under the same name (and a live dir): only the
            # lock file still at that name says whether the dir is free.
            if os.stat(lock).st_ino != os.fstat(fd).st_ino:
                continue
        except (BlockingIOError, FileNotFoundError):
            continue  # its owner is alive, or another sweeper took it
        else:
            work = tmp / lock.name[: -len(".lock")]
            with contextlib.suppress(FileNotFoundError):
                remove_tree(work)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for entry in tmp.iterdir():
        if not entry.name.endswith(".lock") and not (tmp / f"{entry.name}.lock").exists():
            # No lock file: not a live TmpDir (a live owner holds its lock file
            # before its dir exists, and removes the dir before the lock file).
            with contextlib.suppress(FileNotFoundError):
                remove_tree(entry)


def mounts_under(path: Path | str, *, itself: bool = False) -> list[str]:
    """Mount points below ``path`` (and ``path`` itself if ``itself``) in this process's
    mount namespace, deepest first."""
    real = os.path.realpath(path).rstrip("/")
    prefix = real + "/"
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                # Field 5 is the mount point, with space, tab, newline, backslash octal-escaped.
                target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                                line.split(" ")[4])
                if target.startswith(prefix) or (itself and target == real):
                    found.append(target)
    except FileNotFoundError:  # no /proc: nothing we could detach anyway
        return []
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree that also gets through mode-000 dirs (overlay work dirs, steps' leftovers).

    Never deletes through a mount point (catalogue R18, REL-6): a mount left
    under ``path`` (by a crash, or by hand) is detached first, and if that fails
    the removal stops with an error rather than deleting what is mounted there.
    """
    stale = mounts_under(path, itself=True)
    if stale:
        from builder import syscalls

        for target in stale:
            try:
                syscalls.umount2(target, syscalls.MNT_DETACH)
            except OSError as err:
                raise StoreError(f"cannot remove {path}: {target} is mounted and cannot be "
                                 f"detached ({err.strerror})") from None
    def onerror(func, failed, exc_info):  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
            os.chmod(failed, 0o700)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            func(failed)

    import shutil  # loaded by a removal only, not by a cached rebuild

    shutil.rmtree(path, onerror=onerror)
