"""OCI layer tar -> a layer directory, or into a root filesystem.

Entries come from ``tar_read.members`` (validated: names, ids, limits, end
marker).  For each one, under the rules of catalogue section 0:

* every parent is resolved from the root's fd with chroot semantics
  (``safepath.Root``), afresh for each entry; the final component is removed
  if present (only directory-on-directory merges, the OCI replace rule) and
  created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` relative to the parent fd; owner,
  mode, xattrs and times go through that fd (``/proc/self/fd/N`` for
  devices and FIFOs, which must not be opened);
* whiteout names are refused as directories (W08), as non-regular entries
  (W09), and with an empty, ``.`` or ``..`` target (W01-W03); ``.wh..wh.*``
  other than the opaque marker is refused (AUFS metadata, not OCI);
* hardlink targets resolve in the root too (absolute ones included, T10); the
  link is made to the entry itself, never through a symlink (T11).

``mode="overlay"``: ``dest`` is a new, empty layer dir.  ``.wh.x`` becomes a
0:0 character device ``x``, ``.wh..wh..opq`` the opaque xattr on its dir (on
``dest`` itself at the root); a directory replacing a non-directory is made
opaque too, as overlayfs does.  ``dest`` gets mode 0755 unless the tar has a
root entry: overlay shows the top layer's root, and a 0700 temp dir would make
``/`` unreadable in the container.

``mode="merged"``: ``dest`` is a whole root filesystem (vfs driver, ADD of a
local tar).  Whiteouts delete, opaque markers clear lower children; both
reach only what was there before this layer, whatever the entry order (W07).

Contract on failure: the caller passes a fresh directory (a temp dir, or a
copy it will throw away).  On any error ``dest`` is removed entirely and
LayerError names the layer and the entry; nothing half-applied survives.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import tarfile
from collections.abc import Callable
from typing import BinaryIO, Literal

import msgspec

from builder import interrupt, userns
from builder.errors import LayerError
from builder.layers import safepath
from builder.layers import whiteout as wh
from builder.layers.tar_read import Refused, check, members, mtime_ns, split_name, xattrs

log = logging.getLogger("builder.layers")

_CHUNK = 1 << 20
_O_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NODE = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class ApplyStats(msgspec.Struct):
    """What one apply did; ``skipped`` names entries deliberately not created."""

    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    whiteouts: int = 0
    opaques: int = 0
    bytes: int = 0
    skipped: list[str] = msgspec.field(default_factory=list)


class _Applier:
    def __init__(self, root: safepath.Root, mode: str, rootless: bool | None,
                 stats: ApplyStats) -> None:
        self.root = root
        self.tar: tarfile.TarFile | None = None
        self.merged = mode == "merged"
        self.rootless = userns.rootless() if rootless is None else rootless
        self.stats = stats
        # (parent dev, parent ino, name) of everything this layer created or
        # merged into: what whiteouts and opaque markers must not touch.
        self.created: set[tuple[int, int, bytes]] = set()
        self.opaque_done: set[tuple[int, int]] = set()
        self.dir_times: list[tuple[list[bytes], int, int, int]] = []
        self.buf = memoryview(bytearray(_CHUNK))

    # ------------------------------------------------------------ dispatch

    def entry(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.tar = archive
        self.stats.entries += 1
        comps = split_name(member.name)
        check(member)
        if not comps:
            self._root_entry(member)
            return
        for comp in comps[:-1]:
            if wh.is_whiteout_name(comp):
                raise Refused("whiteout name used as a directory (W08)")
        base = comps[-1]
        if wh.is_whiteout_name(base):
            self._whiteout_entry(member, comps[:-1], base)
        elif member.isdir():
            self._dir(member, comps)
        elif member.isreg():
            self._file(member, comps)
        elif member.issym():
            self._symlink(member, comps)
        elif member.islnk():
            self._hardlink(member, comps)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._node(member, comps)
        else:
            raise Refused(f"unsupported entry type {member.type!r}")

    def _root_entry(self, member: tarfile.TarInfo) -> None:
        if not member.isdir():
            raise Refused("refusing to change the type of the root directory (T12)")
        fd = os.open(b".", _O_DIR & ~os.O_NOFOLLOW, dir_fd=self.root.fd)
        try:
            self._meta_fd(fd, member)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.dir_times.append(([], st.st_dev, st.st_ino, mtime_ns(member)))

    def _whiteout_entry(self, member: tarfile.TarInfo, parent: list[bytes], base: bytes) -> None:
        if not member.isreg():
            raise Refused("whiteout entry is not a regular file (W09)")
        if base == wh.WHITEOUT_OPAQUE:
            self.stats.opaques += 1
            self._opaque(parent)
            return
        target = wh.whiteout_target(base)
        if target is None:
            raise Refused("AUFS metadata entry (.wh..wh.*) is not a valid OCI entry")
        if target in (b"", b".", b".."):
            raise Refused("invalid whiteout target (W01-W03)")
        self.stats.whiteouts += 1
        self._whiteout(parent, target)

    # ------------------------------------------------------------ whiteouts

    def _whiteout(self, parent: list[bytes], target: bytes) -> None:
        pfd = self.root.open_dir(parent, create=not self.merged, on_replace=self._replaced)
        if pfd is None:
            return  # a missing or dead-link parent: nothing below it to delete (W04)
        try:
            try:
                st = os.lstat(target, dir_fd=pfd)
            except FileNotFoundError:
                st = None
            if not self.merged:
                # Everything in a fresh layer dir is this layer's own: a file
                # already hides the lower one, a dir must hide lower children.
                if st is None:
                    os.mknod(target, stat.S_IFCHR, 0, dir_fd=pfd)
                elif stat.S_ISDIR(st.st_mode):
                    self._set_opaque_at(pfd, target)
                return
            if st is not None:
                safepath.remove_at(pfd, target, keep=self._is_created)
        finally:
            os.close(pfd)

    def _opaque(self, comps: list[bytes]) -> None:
        dfd = self.root.open_dir(comps, create=True, on_replace=self._replaced)
        assert dfd is not None
        try:
            st = os.fstat(dfd)
            if (st.st_dev, st.st_ino) in self.opaque_done:
                return
            self.opaque_done.add((st.st_dev, st.st_ino))
            rfd = os.open(b".", _O_DIR & ~os.O_NOFOLLOW, dir_fd=dfd)
            try:
                if self.merged:
                    safepath.clear_dir(rfd, keep=self._is_created)
                else:
                    os.setxattr(rfd, wh.opaque_xattr(self.rootless), b"y")
            finally:
                os.close(rfd)
        finally:
            os.close(dfd)

    def _set_opaque_at(self, pfd: int, name: bytes) -> None:
        fd = os.open(name, _O_DIR, dir_fd=pfd)
        try:
            os.setxattr(fd, wh.opaque_xattr(self.rootless), b"y")
        finally:
            os.close(fd)

    def _replaced(self, pfd: int, name: bytes) -> None:
        # A directory that replaces a non-directory (or a whiteout) in an
        # upper layer must not let lower children of that name show through.
        if not self.merged:
            self._set_opaque_at(pfd, name)

    def _is_created(self, dev: int, ino: int, name: bytes) -> bool:
        return (dev, ino, name) in self.created

    # ------------------------------------------------------------ entries

    def _parent(self, comps: list[bytes]) -> int:
        fd = self.root.open_dir(comps[:-1], create=True, on_replace=self._replaced)
        assert fd is not None
        return fd

    def _clear(self, pfd: int, name: bytes) -> None:
        """Make room for a non-directory ``name``: whatever is there goes."""
        safepath.remove_at(pfd, name)

    def _record(self, pfd: int, name: bytes) -> None:
        st = os.fstat(pfd)
        self.created.add((st.st_dev, st.st_ino, name))

    def _dir(self, member: tarfile.TarInfo, comps: list[bytes]) -> None:
        pfd = self._parent(comps)
        name = comps[-1]
        try:
            try:
                old = os.lstat(name, dir_fd=pfd)
            except FileNotFoundError:
                old = None
            if old is not None and not stat.S_ISDIR(old.st_mode):
                safepath.remove_at(pfd, name)
            if old is None or not stat.S_ISDIR(old.st_mode):
                os.mkdir(name, 0o700, dir_fd=pfd)
                if old is not None and not self.merged:
                    self._set_opaque_at(pfd, name)
            fd = os.open(name, _O_DIR, dir_fd=pfd)
            try:
                self._meta_fd(fd, member)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            self._record(pfd, name)
        finally:
            os.close(pfd)
        self.dir_times.append((comps, st.st_dev, st.st_ino, mtime_ns(member)))
        self.stats.dirs += 1

    def _file(self, member: tarfile.TarInfo, comps: list[bytes]) -> None:
        pfd = self._parent(comps)
        name = comps[-1]
        try:
            self._clear(pfd, name)
            fd = os.open(name, _O_NEW_FILE, 0o600, dir_fd=pfd)
            try:
                self._copy_body(member, fd)
                self._meta_fd(fd, member)
                mtime = mtime_ns(member)
                os.utime(fd, ns=(mtime, mtime))
            finally:
                os.close(fd)
            self._record(pfd, name)
        finally:
            os.close(pfd)
        self.stats.files += 1
        self.stats.bytes += member.size

    def _copy_body(self, member: tarfile.TarInfo, fd: int) -> None:
        left = member.size
        if not left:
            return
        assert self.tar is not None
        body = self.tar.extractfile(member)
        # tarfile's ExFileObject, a BufferedReader: readinto fills our buffer, no copy.
        assert isinstance(body, io.BufferedReader)
        while left:
            interrupt.check()  # a stage thread: a stopping build ends it mid-file
            n = body.readinto(self.buf[:min(left, _CHUNK)])
            if not n:
                raise Refused("truncated entry body (T23)")
            view = self.buf[:n]
            while view:
                view = view[os.write(fd, view):]
            left -= n

    def _symlink(self, member: tarfile.TarInfo, comps: list[bytes]) -> None:
        target = member.linkname.encode("utf-8", "surrogateescape")
        if not target or b"\0" in target:
            raise Refused("empty symlink target or NUL in it")
        pfd = self._parent(comps)
        name = comps[-1]
        try:
            self._clear(pfd, name)
            # Stored verbatim: it is only ever followed later with chroot
            # semantics, and rewriting targets broke images (kaniko).
            os.symlink(target, name, dir_fd=pfd)
            self._chown(lambda: os.chown(name, member.uid, member.gid, dir_fd=pfd,
                                         follow_symlinks=False), member)
            mtime = mtime_ns(member)
            os.utime(name, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)
            self._record(pfd, name)
        finally:
            os.close(pfd)
        self.stats.symlinks += 1

    def _hardlink(self, member: tarfile.TarInfo, comps: list[bytes]) -> None:
        tcomps = split_name(member.linkname, "hardlink target")
        if not tcomps:
            raise Refused("hardlink to the root directory")
        tpfd = self.root.open_dir(tcomps[:-1], create=False)
        if tpfd is None:
            raise Refused("hardlink target does not exist")
        try:
            pfd = self._parent(comps)
            name = comps[-1]
            try:
                try:
                    target_st = os.lstat(tcomps[-1], dir_fd=tpfd)
                except FileNotFoundError:
                    raise Refused("hardlink target does not exist") from None
                if stat.S_ISDIR(target_st.st_mode):
                    raise Refused("hardlink to a directory")
                try:
                    here = os.lstat(name, dir_fd=pfd)
                    same = (here.st_dev, here.st_ino) == (target_st.st_dev, target_st.st_ino)
                except FileNotFoundError:
                    same = False
                if not same:
                    self._clear(pfd, name)
                    # No AT_SYMLINK_FOLLOW: a link to a symlink links the
                    # symlink, never what it points to (T11).
                    os.link(tcomps[-1], name, src_dir_fd=tpfd, dst_dir_fd=pfd,
                            follow_symlinks=False)
                self._record(pfd, name)
            finally:
                os.close(pfd)
        finally:
            os.close(tpfd)
        self.stats.hardlinks += 1

    def _node(self, member: tarfile.TarInfo, comps: list[bytes]) -> None:
        fifo = member.isfifo()
        if not fifo and self.rootless:
            # A user namespace cannot make device nodes; moby skips them too.
            log.warning("skipping device node %s in rootless mode", member.name)
            self.stats.skipped.append(member.name)
            return
        pfd = self._parent(comps)
        name = comps[-1]
        try:
            self._clear(pfd, name)
            if fifo:
                os.mkfifo(name, 0o600, dir_fd=pfd)
            else:
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                os.mknod(name, kind | 0o600, os.makedev(member.devmajor, member.devminor),
                         dir_fd=pfd)
            # Never open a device or FIFO: go through an O_PATH fd and its
            # /proc/self/fd link, which also works on nodev mounts (T19).
            fd = os.open(name, _O_NODE, dir_fd=pfd)
            try:
                proc = f"/proc/self/fd/{fd}"
                self._chown(lambda: os.chown(proc, member.uid, member.gid), member)
                os.chmod(proc, member.mode & 0o7777)
                mtime = mtime_ns(member)
                os.utime(proc, ns=(mtime, mtime))
            finally:
                os.close(fd)
            self._record(pfd, name)
        finally:
            os.close(pfd)
        if fifo:
            self.stats.fifos += 1
        else:
            self.stats.devices += 1

    # ------------------------------------------------------------ metadata

    def _chown(self, call: Callable[[], None], member: tarfile.TarInfo) -> None:
        try:
            call()
        except OSError as err:
            if self.rootless and err.errno == errno.EINVAL:  # the id is not mapped here
                raise Refused(
                    f"uid {member.uid} / gid {member.gid} is not mapped in this user "
                    "namespace (try increasing the subordinate IDs in /etc/subuid and "
                    "/etc/subgid)") from err
            raise

    def _meta_fd(self, fd: int, member: tarfile.TarInfo) -> None:
        # chown first: it clears setuid bits and file capabilities.
        self._chown(lambda: os.fchown(fd, member.uid, member.gid), member)
        os.fchmod(fd, member.mode & 0o7777)
        wanted = xattrs(member)
        # A directory merged into an existing one takes the entry's xattrs
        # (within the allowlist) instead of keeping the lower one's.
        for xattr in wh.list_xattrs(fd):
            if wh.exportable_xattr(xattr) and xattr not in wanted:
                os.removexattr(fd, xattr)
        for xattr, value in wanted.items():
            try:
                os.setxattr(fd, xattr, value)
            except OSError as err:
                if err.errno != errno.EOPNOTSUPP:  # the fs lacks that namespace
                    raise
                log.warning("xattr %s on %s not supported here, dropped", xattr, member.name)

    def finish(self) -> None:
        # Directory times last: creating entries inside moved them.  Each is
        # looked up again from the root and must still be the same inode.
        for comps, dev, ino, mtime in self.dir_times:
            fd = self.root.open_dir(comps, create=False)
            if fd is None:
                continue
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (dev, ino):
                    continue
                rfd = os.open(b".", _O_DIR & ~os.O_NOFOLLOW, dir_fd=fd)
                try:
                    os.utime(rfd, ns=(mtime, mtime))
                finally:
                    os.close(rfd)
            finally:
                os.close(fd)


def apply_layer_tar(src: BinaryIO, dest: str | os.PathLike[str], *, layer: str = "",
                    mode: Literal["overlay", "merged"] = "overlay",
                    rootless: bool | None = None) -> ApplyStats:
    """Apply the uncompressed layer tar ``src`` to ``dest`` (see the module doc).

    ``layer`` (a digest) names the layer in errors.  ``src`` is read to its
    end, so a hashing wrapper around it sees every byte.  On error ``dest`` is
    removed and LayerError raised.
    """
    if mode not in ("overlay", "merged"):
        raise ValueError(f"mode must be 'overlay' or 'merged', not {mode!r}")
    stats = ApplyStats()
    entry: str | None = None
    root = safepath.Root(dest)
    try:
        if mode == "overlay":
            fd = os.open(b".", _O_DIR & ~os.O_NOFOLLOW, dir_fd=root.fd)
            try:
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        applier = _Applier(root, mode, rootless, stats)
        for archive, member in members(src):
            interrupt.check()
            entry = member.name
            applier.entry(archive, member)
        entry = None
        applier.finish()
        while src.read(_CHUNK):
            pass
    except BaseException as err:
        root.close()
        _discard(dest)
        if isinstance(err, LayerError) or not isinstance(err, Exception):
            raise
        message = str(err) if isinstance(err, Refused) else f"{type(err).__name__}: {err}"
        raise LayerError(message, layer=layer, entry=entry) from err
    finally:
        root.close()
    return stats


def _discard(dest: str | os.PathLike[str]) -> None:
    parent, name = os.path.split(os.path.abspath(dest))
    pfd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        safepath.remove_at(pfd, os.fsencode(name))
    except OSError as err:
        log.warning("could not remove %s after a failed apply: %s", dest, err)
    finally:
        os.close(pfd)
