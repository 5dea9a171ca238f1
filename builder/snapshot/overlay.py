"""The overlay snapshot driver: lower layers + a fresh upper dir, committed by rename."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import ClassVar

from builder import syscalls
from builder.errors import SandboxError
from builder.snapshot.base import Commit, SnapshotBase, commit_upper
from builder.store.store import Store
from builder.userns import rootless

# index/redirect_dir/metacopy off: with any of them on, the upper dir is no longer a
# self-contained change set (moby overlay2 check.go, buildkit#2480, catalogue W10).
_OPTIONS = "index=off,redirect_dir=off,metacopy=off"
_FLAGS = (("index", "off"), ("redirect_dir", "off"), ("metacopy", "off"))
# volatile (writable mounts): without it the kernel syncs the whole upper filesystem
# when the mount goes away (ovl_sync_fs), so every step's exit waited for all the
# disk's writeback (1.5-2 s after a COPY of 100,000 files), and a RUN's fsync calls
# (dpkg's) wrote through.  The commit syncs the filesystem itself, beside the walk
# that hashes the layer and before the layer's row is written (snapshot.base), so
# a layer in the store is as durable as before.  The upper dir is never mounted
# again, so the kernel's mark of a volatile upper never stops a later mount.
_WRITABLE = "volatile"
# In a user namespace (rootless) overlay may not use trusted.* xattrs: userxattr
# makes it keep its opaque marks as user.overlay.* (layers.whiteout), as rootless
# Docker and podman mount it.  The kernel takes userxattr only with redirect_dir=
# nofollow, which is what "off" means unless redirect_always_follow is set: no
# redirect is created or followed either way.
_ROOTLESS_OPTIONS = "index=off,redirect_dir=nofollow,metacopy=off,userxattr"
_ROOTLESS_FLAGS = (("index", "off"), ("redirect_dir", "nofollow"), ("metacopy", "off"))
# The whole option string must fit in one page (the kernel copies it with copy_mount_options).
_PAGE = 4096


def options(*, lowers: str, upper: str | None = None, work: str | None = None) -> str:
    """The overlay option string for this process's mode (root or rootless), with an
    upper and work dir for a writable mount."""
    common = _ROOTLESS_OPTIONS if rootless() else _OPTIONS
    if upper is None or work is None:
        return f"lowerdir={lowers},{common}"
    return f"lowerdir={lowers},upperdir={upper},workdir={work},{_WRITABLE},{common}"


class Snapshot(SnapshotBase):
    """An overlay snapshot: the chain's layer dirs as lowers, ``work/diff`` as upper."""

    def _lower_names(self, readonly: bool) -> list[str]:
        """Lower dirs as overlay gets them, relative to ``l/`` where a short link exists."""
        links = self.store.short_links(self.parent)
        extra = [str(p) for p in self.extra_lowers]
        if not links and not extra:
            extra = [str(self.empty_lower())]
        names = [*extra, *links]
        if readonly and len(names) < 2:
            names.append(str(self.empty_lower()))  # read-only overlay needs two lowers
        return names

    def mount_options(self, *, readonly: bool = False) -> tuple[str, str]:
        """(directory to chdir into, overlay option string) for this snapshot.

        Lower dirs are named by their short links under ``l/`` relative to that
        directory, as Docker's overlay2 does, so that 120+ layers fit in a page.
        Raises SandboxError when even that does not fit (``mount`` then uses
        the new mount API instead).
        """
        lower = ":".join(self._lower_names(readonly))
        given = options(lowers=lower) if readonly else options(
            lowers=lower, upper=str(self.upper), work=str(self.work.path / "ovl-work"))
        if len(given) >= _PAGE:
            raise SandboxError(f"overlay: {len(self.store.chain(self.parent))} layers do not fit "
                               "the kernel's one-page mount option limit")
        return str(self.store.root / "l"), given

    def empty_lower(self) -> Path:
        empty = self.work.path / "empty"
        empty.mkdir(exist_ok=True)
        return empty

    def mount(self, target: str, *, readonly: bool = False) -> None:
        """Mount the overlay at ``target``.  Call only in a private mount namespace."""
        self.check_active("mount")
        try:
            cwd, options = self.mount_options(readonly=readonly)
        except SandboxError:
            # Past one page (about 370 layers with 10-hex links): one fsconfig call
            # per lower dir has no total limit.
            self._mount_fsconfig(target, readonly)
            return
        saved = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(cwd)
            syscalls.mount("overlay", target, "overlay",
                           syscalls.MS_RDONLY if readonly else 0, options)
        except OSError as err:
            raise SandboxError(f"cannot mount overlay at {target}: {err.strerror} "
                               f"(options {options})") from None
        finally:
            os.fchdir(saved)
            os.close(saved)

    def _mount_fsconfig(self, target: str, readonly: bool) -> None:
        values = [("lowerdir+", name) for name in self._lower_names(readonly)]
        if not readonly:
            values += [("upperdir", str(self.upper)),
                       ("workdir", str(self.work.path / "ovl-work"))]
        values += list(_ROOTLESS_FLAGS if rootless() else _FLAGS)
        saved = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fs_fd = mnt_fd = -1
        try:
            # Relative lower names are resolved at fsconfig time, against our cwd.
            os.chdir(self.store.root / "l")
            fs_fd = syscalls.fsopen("overlay")
            for key, value in values:
                if len(value) > syscalls.FSCONFIG_VALUE_MAX:
                    raise SandboxError(f"overlay: path too long for fsconfig: {value}")
                syscalls.fsconfig(fs_fd, syscalls.FSCONFIG_SET_STRING, key, value)
            if not readonly:
                syscalls.fsconfig(fs_fd, syscalls.FSCONFIG_SET_FLAG, _WRITABLE)
            if rootless():
                syscalls.fsconfig(fs_fd, syscalls.FSCONFIG_SET_FLAG, "userxattr")
            syscalls.fsconfig(fs_fd, syscalls.FSCONFIG_CMD_CREATE)
            mnt_fd = syscalls.fsmount(fs_fd, syscalls.MOUNT_ATTR_RDONLY if readonly else 0)
            syscalls.move_mount_to(mnt_fd, target)
        except OSError as err:
            raise SandboxError(f"cannot mount overlay at {target} with the new mount API "
                               f"({len(values)} parameters): {err.strerror}") from None
        finally:
            for fd in (mnt_fd, fs_fd):
                if fd >= 0:
                    os.close(fd)
            os.fchdir(saved)
            os.close(saved)

    has_offline_upper: ClassVar[bool] = True

    def offline_upper(self, target: str) -> str | None:
        """Unmount the overlay at ``target`` and give the upper dir: overlayfs allows
        changes to the upper tree only while it is not mounted.  A busy mount (an fd
        still open in it) is kept, and None says to go on writing through it."""
        self.check_active("write to")
        try:
            syscalls.umount2(target)
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise SandboxError(f"cannot unmount overlay at {target}: {err.strerror}") \
                    from None
            return None
        return str(self.upper)

    def commit(self, *, source_date_epoch: int | None = None) -> Commit:
        """Turn the upper dir into a store layer by rename (no change: the empty layer)."""
        return commit_upper(self, source_date_epoch=source_date_epoch)


class OverlayDriver:
    name = "overlay"

    def __init__(self, store: Store) -> None:
        self.store = store

    def prepare(self, parent: str | None) -> Snapshot:
        self.store.unpack(parent)
        work = self.store.tmp_dir("snap")
        (work.path / "diff").mkdir()
        # The upper dir is the merged root the step sees: 0755 whatever the umask.
        (work.path / "diff").chmod(0o755)
        (work.path / "ovl-work").mkdir()
        return Snapshot(self.store, parent, work)
