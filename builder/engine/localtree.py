"""``-o type=local``: the image's merged view copied into a host directory.

``-o type=local`` copies the merged view of the image into the destination
itself (not with ``tar -x``), entry by entry from directory fds:

* nothing below the destination is followed: directories are opened through
  ``layers.safeout`` (``openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)``), each
  entry is created ``O_EXCL|O_NOFOLLOW`` (or mknod/symlink/link at its parent
  fd) after the old one is unlinked, and owner, mode, xattrs and times go
  through the new entry's fd.  The image's own symlinks are written as links,
  never resolved on the host;
* by default device nodes are skipped and setuid/setgid bits and file
  capabilities are dropped (``preserve=true`` keeps them).  BuildKit
  recreates them for a root client; a 0666 ``/dev/mem`` or a setuid-root
  shell from someone's image has no business on the build host.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable

import msgspec

from builder.errors import BuildError
from builder.layers.safeout import OutputDir, open_beneath
from builder.layers.whiteout import CAPABILITY_XATTR, read_xattrs
from builder.snapshot import ActiveSnapshot
from builder.userns import rootless

_O_SRC = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NODE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID


class LocalStats(msgspec.Struct):
    """What ``-o type=local`` left out on purpose (without ``preserve=true``)."""

    devices: int = 0      # char and block device nodes not created
    privileged: int = 0   # files whose setuid/setgid bits or capabilities were dropped

    def summary(self) -> str | None:
        if not (self.devices or self.privileged):
            return None
        parts = []
        if self.devices:
            parts.append(f"skipped {self.devices} device node{'s' * (self.devices != 1)}")
        if self.privileged:
            parts.append(f"cleared setuid/setgid/file capabilities on {self.privileged} "
                         f"file{'s' * (self.privileged != 1)}")
        return f"-o type=local: {', '.join(parts)} (preserve=true keeps them)"


def local_out(view: ActiveSnapshot, dest: str, preserve: bool,
              mounted: Callable[[ActiveSnapshot], str]) -> LocalStats:
    """Runs in a child with a private mount namespace; ``mounted`` mounts the view."""
    merged = mounted(view)
    with OutputDir(dest, "-o type=local") as out:
        src = os.open(merged, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return _TreeCopy(src, out, preserve).run()
        except OSError as err:
            name = os.fsdecode(err.filename) if err.filename else dest
            raise BuildError(f"exporting the root filesystem to {dest} failed: {name}: "
                             f"{err.strerror}") from None
        finally:
            os.close(src)


class _TreeCopy:
    """Copy the tree open as ``src`` into ``out``, a directory at a time.

    Holds two fds (one directory of each side) whatever the depth; directory
    metadata is applied last, deepest first, so making children changes no
    finished directory's times and a read-only directory is still writable
    while it fills.
    """

    def __init__(self, src: int, out: OutputDir, preserve: bool) -> None:
        self.src = src
        self.out = out
        self.preserve = preserve
        # As root the files keep the image's owners (BuildKit's local exporter);
        # rootless, they stay the invoking user's, as BuildKit's rootless mode leaves them.
        self.keep_owners = not rootless()
        self.stats = LocalStats()
        self.links: dict[tuple[int, int], list[bytes]] = {}
        self.dirs: list[tuple[list[bytes], os.stat_result, dict[str, bytes]]] = []

    def run(self) -> LocalStats:
        self.dirs.append(([], os.fstat(self.src), read_xattrs(self.src)))
        todo: list[list[bytes]] = [[]]
        while todo:
            comps = todo.pop()
            sfd = open_beneath(self.src, comps)
            dfd = self.out.dir_fd(comps)
            try:
                if sfd is None:
                    raise OSError(errno.ENOENT, "vanished from the image view",
                                  b"/".join(comps))
                for name in sorted(os.listdir(sfd), reverse=True):
                    path = [*comps, os.fsencode(name)]
                    if self._entry(sfd, dfd, path):
                        todo.append(path)
            finally:
                os.close(dfd)
                if sfd is not None:
                    os.close(sfd)
        for comps, st, xattrs in reversed(self.dirs):
            fd = self.out.dir_fd(comps)
            try:
                self._meta(fd, st, xattrs)
            finally:
                os.close(fd)
        return self.stats

    def _entry(self, sfd: int, dfd: int, path: list[bytes]) -> bool:
        """Copy one entry; True for a directory (to be walked)."""
        name = path[-1]
        st = os.lstat(name, dir_fd=sfd)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            if not self.out.make_room(dfd, path, is_dir=True):
                os.mkdir(name, 0o700, dir_fd=dfd)  # nobody else's until its mode is set
            # Never followed: the last component is lstat'ed through the fd's path.
            self.dirs.append((path, st, read_xattrs(b"/proc/self/fd/%d/%s" % (sfd, name))))
            return True
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and not self.preserve:
            self.stats.devices += 1
            return False
        if kind == stat.S_IFSOCK:
            return False  # a layer tar cannot hold one; tar -x never made them either
        self.out.make_room(dfd, path, is_dir=False)
        key = (st.st_dev, st.st_ino)
        first = self.links.get(key) if st.st_nlink > 1 else None
        if first is not None:
            self._hardlink(first, dfd, name)
            return False
        if kind == stat.S_IFREG:
            self._file(sfd, dfd, name, st)
        elif kind == stat.S_IFLNK:
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
            if self.keep_owners:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd,
                     follow_symlinks=False)
        else:  # a FIFO (harmless), or a device with preserve=true
            if kind == stat.S_IFIFO:
                os.mkfifo(name, 0o600, dir_fd=dfd)
            else:
                os.mknod(name, kind | 0o600, st.st_rdev, dir_fd=dfd)
            self._node_meta(dfd, name, st)
        if st.st_nlink > 1:
            self.links[key] = path
        return False

    def _hardlink(self, first: list[bytes], dfd: int, name: bytes) -> None:
        tfd = self.out.dir_fd(first[:-1])
        try:
            os.link(first[-1], name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _file(self, sfd: int, dfd: int, name: bytes, st: os.stat_result) -> None:
        src = os.open(name, _O_SRC, dir_fd=sfd)
        try:
            dst = os.open(name, _O_NEW, 0o600, dir_fd=dfd)
            try:
                _copy_data(src, dst)
                self._meta(dst, st, read_xattrs(src))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _meta(self, fd: int, st: os.stat_result, xattrs: dict[str, bytes]) -> None:
        """Owner, mode, xattrs, times through ``fd``; chown first, as it clears setuid
        bits and capabilities."""
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode) and not self.preserve and \
                (mode & _PRIVILEGE_BITS or CAPABILITY_XATTR in xattrs):
            self.stats.privileged += 1
            mode &= ~_PRIVILEGE_BITS
            xattrs = {k: v for k, v in xattrs.items() if k != CAPABILITY_XATTR}
        if self.keep_owners:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, mode)
        for key, value in xattrs.items():
            os.setxattr(fd, key, value)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _node_meta(self, dfd: int, name: bytes, st: os.stat_result) -> None:
        # A FIFO or device must not be opened: its metadata goes through an
        # O_PATH fd (by /proc/self/fd, which names exactly that inode).
        fd = os.open(name, _O_NODE, dir_fd=dfd)
        try:
            if stat.S_IFMT(os.fstat(fd).st_mode) != stat.S_IFMT(st.st_mode):
                raise OSError(errno.EEXIST, "replaced while it was being made", name)
            proc = f"/proc/self/fd/{fd}"
            if self.keep_owners:
                os.chown(proc, st.st_uid, st.st_gid)
            os.chmod(proc, stat.S_IMODE(st.st_mode))
            os.utime(proc, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)


def _copy_data(src: int, dst: int) -> None:
    """All of ``src`` into ``dst``: in the kernel where it can, else by reads."""
    try:
        while os.copy_file_range(src, dst, 1 << 30):
            pass
        return
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    os.ftruncate(dst, 0)
    with open(src, "rb", closefd=False) as reader, open(dst, "wb", closefd=False) as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
