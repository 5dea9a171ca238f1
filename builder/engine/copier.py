"""The copier: what COPY and ADD write into a mounted snapshot, entry by entry.

``Copier`` copies files, links, special files and trees into the root it is given,
with the ownership, mode and times the request asks for; ``make_dirs`` creates a
destination's missing directories.  Paths inside the root are resolved with chroot
semantics (``rootpath``); every source is opened through a checked fd
(``copy_files.open_source``, C03).  The regular files of directories the copy made
are copied on worker threads (``copy_pool``).  Which sources, and what the copied
content must hash to, are ``copy.py``'s.

With ``defer_fresh``, the contents of the directories the copy makes are not written
during the walk: ``write_deferred`` writes them afterwards, straight into the snapshot's
upper dir once its overlay is unmounted (overlayfs allows changes to the upper tree only
offline).  A file created through an overlay costs about 1.6 times one created on the
upper filesystem itself, and a cold COPY of a big tree is mostly creating files.  Such a
directory is new and empty, so its upper dir is exactly what the overlay would have
written there.  Only a link in the image can lead the walk back into (or above) one, so
before it follows such a link the walk writes the deferred ones, through the mount, in
order (``_before_following_links``).
"""

from __future__ import annotations

import functools
import os
import posixpath
import shutil
import stat
from collections.abc import Callable

from builder.engine.copy_files import Metadata, copy_bytes, open_source
from builder.engine.copy_pool import CHUNK_FILES, Copied, CopyPool
from builder.engine.copy_records import ContentRecords, Segment
from builder.errors import BuildError, SandboxError
from builder.rootpath import resolve_components


def check_name(rel: str) -> None:
    # A layer entry named .wh.* would turn into a deletion when the layer is read (C10).
    if posixpath.basename(rel).startswith(".wh."):
        raise BuildError(f'"/{rel}": a file named .wh.* cannot be copied into an image')


def resolve_for_create(root: str, path: str) -> list[str]:
    """``path`` inside ``root`` as components with every existing symlink resolved
    (chroot semantics), dangling ones included; missing components are kept."""
    try:
        parts = resolve_components(root, path, keep_missing=True)
    except SandboxError as err:
        raise BuildError(str(err)) from None
    if parts is None:
        raise BuildError(f"cannot create {path}: a component is not a directory")
    return parts


def make_dirs(root: str, path: str, uid: int, gid: int) -> str:
    """Create ``path`` and its missing parents inside ``root`` (mode 0755, owned by
    uid:gid, as BuildKit's mkdir -p with the copy's owner), following symlinks with
    chroot semantics, dangling ones too; return the host path."""
    parts = resolve_for_create(root, path)
    host = root
    for part in parts:
        host = os.path.join(host, part)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            os.mkdir(host, 0o755)
            os.chmod(host, 0o755)
            os.lchown(host, uid, gid)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BuildError(f"cannot create {path}: /{'/'.join(parts)} is not a directory")
    return host


def _close_segment(records: ContentRecords, segment: Segment, _: object) -> None:
    records.close(segment)


class _Subtree:
    """A directory the copy made whose contents ``write_deferred`` writes."""

    __slots__ = ("inside", "origin", "rel", "segment", "source", "stat")

    def __init__(self, source: str, rel: str, inside: str, origin: str,
                 st: os.stat_result, segment: Segment | None) -> None:
        self.source, self.rel, self.origin, self.stat = source, rel, origin, st
        self.inside = inside       # its path under the copier's root, from "/"
        self.segment = segment


class Copier:
    def __init__(self, root: str, uid: int, gid: int, mode: int | None,
                 leaves_out: Callable[[str, str, bool], bool], keep_owner: bool = False):
        self.root, self.uid, self.gid, self.mode = root, uid, gid, mode
        self.leaves_out = leaves_out   # (source rel, entry rel, is_dir): not copied
        self.keep_owner = keep_owner
        self.owner_fixed = False    # --chown given: it wins over archive owners too
        self.source_root: str | None = None   # set: every source open is checked in it
        # Set: every copied entry is recorded as the content checksum records it, with
        # the digest of the bytes actually written (see _check_copied).
        self.records: ContentRecords | None = None
        self._segment: Segment | None = None   # set: a deferred subtree's records
        self.defer_fresh = False    # see the module docstring and write_deferred
        self._deferred: list[_Subtree] = []    # in the copy's order
        # Source inode -> (first copy, its content digest), so hardlinked sources stay
        # hardlinked (BuildKit).
        self.links: dict[tuple[int, int], tuple[str, str]] = {}
        # Files of directories this copy made go to worker threads; what depends on
        # order (records, links, directories' final metadata) runs in order behind them.
        self.pool = CopyPool()

    def record(self, rel: str, st: os.stat_result, content: str) -> None:
        if self.records is not None:
            records, segment = self.records, self._recording_to()
            self.pool.later(lambda _: records.add(segment, rel, st, content))

    def _recording_to(self) -> Segment:
        assert self.records is not None
        return self._segment if self._segment is not None else self.records.walk

    def make_dirs(self, path: str) -> str:
        self._before_following_links()
        return make_dirs(self.root, path, self.uid, self.gid)

    def finish(self, path: str, st: os.stat_result) -> None:
        """Give ``path`` its source's owner, mode and times, once what is queued before
        it (the directory's own files) is written."""
        self.pool.later(lambda _: self._finish_now(path, st))

    def _finish_now(self, path: str, st: os.stat_result) -> None:
        if self.keep_owner:
            os.lchown(path, st.st_uid, st.st_gid)
        else:
            os.lchown(path, self.uid, self.gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(path, self.mode if self.mode is not None else stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _replace(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def copy_file(self, source: str, target: str, rel: str = "") -> None:
        st = os.lstat(source)
        self._replace(target)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            # An earlier name of this inode may be in a chunk still on the pool: its
            # turn comes first, so that this one finds it (and a chunk done while this
            # file is copied cannot record it after the lookup, before this name).
            self.pool.drain()
            if key in self.links:
                first, content = self.links[key]
                os.link(first, target)
                self.record(rel, st, content)
                return
        content = ""
        if stat.S_ISLNK(st.st_mode):
            content = os.readlink(source)
            os.symlink(content, target)
        elif stat.S_ISREG(st.st_mode):
            # The mode given to the copy is that of the inode whose bytes were copied.
            content, st = self._copy_regular(source, target)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(target)   # made anew: a FIFO in the source is never opened (C11)
        elif stat.S_ISSOCK(st.st_mode):
            # BuildKit turns a socket into an empty regular file (testCopySocket).
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600))
        elif (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and self.keep_owner:
            # Only from an image or stage; a device node in the context is refused (C11).
            os.mknod(target, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev)
        else:
            raise BuildError(f"cannot copy {source}: unsupported file type")
        self.finish(target, st)
        self.record(rel, st, content)
        if st.st_nlink > 1:
            self.links[key] = (target, content)

    def _copy_regular(self, source: str, target: str) -> tuple[str, os.stat_result]:
        """Copy a regular file's bytes; its content digest (hashed while copying, never
        re-read) and the stat of the opened file."""
        # O_NONBLOCK: if the entry was swapped for a FIFO since lstat, open must not hang;
        # fstat then refuses it (C11).
        src_fd = open_source(source, self.source_root, os.O_RDONLY | os.O_NONBLOCK)
        try:
            st = os.fstat(src_fd)
            if not stat.S_ISREG(st.st_mode):
                raise BuildError(f"cannot copy {source}: it changed while being copied")
            dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
            try:
                digest = copy_bytes(src_fd, dst_fd, st.st_size)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        return digest, st

    def write_file(self, target: str, data: bytes, mode: int = 0o644,
                   mtime: float | None = None) -> None:
        self._replace(target)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(target, self.mode if self.mode is not None else mode)
        os.lchown(target, self.uid, self.gid)
        if mtime is not None:
            os.utime(target, (mtime, mtime), follow_symlinks=False)

    def copy_tree(self, source: str, rel: str, target: str, origin: str = ".") -> None:
        """Copy the contents of directory ``source`` into existing directory ``target``,
        in the checksum's order (pre-order, by name); ``origin`` is the copied source's
        own relative path, for --exclude.  Everything is written when it returns, but
        for the subtrees ``defer_fresh`` leaves to ``write_deferred``."""
        try:
            self._tree(source, rel, target, origin, fresh=False)
            self.pool.drain()
        finally:
            self.pool.close()

    def _tree(self, source: str, rel: str, target: str, origin: str, fresh: bool) -> None:
        """``copy_tree`` of one directory; ``fresh``: this copy made ``target`` (empty),
        so its regular files go to the pool, copied relative to the two directories."""
        # Listed through a checked fd (C03); the fd stays open while entries are used.
        dir_fd = open_source(source, self.source_root, os.O_RDONLY | os.O_DIRECTORY)
        target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                            | os.O_CLOEXEC) if fresh else None
        try:
            made_as = None
            if target_fd is not None:  # what a new file here is owned by (a set-gid dir)
                made = os.fstat(target_fd)
                made_as = (os.geteuid(), made.st_gid if made.st_mode & stat.S_ISGID
                           else os.getegid())
            with os.scandir(dir_fd) as listing:
                entries = sorted(listing, key=lambda e: e.name)
            self._copy_entries(source, rel, target, origin, entries, (dir_fd, target_fd),
                               made_as)
        finally:
            os.close(dir_fd)
            if target_fd is not None:
                os.close(target_fd)

    def _pool_files(self, fds: tuple[int, int], files: list[tuple[str, str, str]],
                    made_as: tuple[int, int] | None) -> None:
        """Hand regular ``files`` (name, rel, destination) of a directory this copy made
        to the pool; their results are taken in the copy's order."""
        if not files:
            return
        owner = None if self.keep_owner else self.uid
        group = None if self.keep_owner else self.gid
        future = self.pool.copy_files(fds, [f[0] for f in files], [f'"/{f[1]}"' for f in files],
                                      Metadata(owner, group, self.mode, made_as))
        segment = self._recording_to() if self.records is not None else None
        for index, (_, rel, destination) in enumerate(files):
            self.pool.later(functools.partial(self._copied, rel, destination, segment, index),
                            future)
        files.clear()

    def _copied(self, rel: str, destination: str, segment: Segment | None, index: int,
                results: Copied) -> None:
        """A pooled file's result, in order: a source hardlinked to one already copied
        is made again as a link to that copy (BuildKit), then it is recorded."""
        content, st = results[index]
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            os.unlink(destination)
            first, content = self.links[key]
            os.link(first, destination)
        elif st.st_nlink > 1:
            self.links[key] = (destination, content)
        if self.records is not None and segment is not None:
            self.records.add(segment, rel, st, content)

    def _copy_entries(self, source: str, rel: str, target: str, origin: str,
                      entries: list[os.DirEntry[str]],
                      fds: tuple[int, int | None], made_as: tuple[int, int] | None) -> None:
        source_fd, target_fd = fds
        pooled: list[tuple[str, str, str]] = []
        for entry in entries:
            entry_path = os.path.join(source, entry.name)
            entry_rel = posixpath.normpath(posixpath.join(rel, entry.name))
            is_dir = entry.is_dir(follow_symlinks=False)
            if self.leaves_out(origin, entry_rel, is_dir):
                continue
            check_name(entry_rel)
            destination = os.path.join(target, entry.name)
            if target_fd is not None and not is_dir and entry.is_file(follow_symlinks=False):
                pooled.append((entry.name, entry_rel, destination))
                if len(pooled) >= CHUNK_FILES:
                    self._pool_files((source_fd, target_fd), pooled, made_as)
                continue
            if target_fd is not None:   # queued before what follows them in order
                self._pool_files((source_fd, target_fd), pooled, made_as)
            if is_dir:
                self._copy_dir(entry, entry_path, entry_rel, destination, origin)
            else:
                self.copy_file(entry_path, destination, entry_rel)
        if target_fd is not None:
            self._pool_files((source_fd, target_fd), pooled, made_as)

    def _copy_dir(self, entry: os.DirEntry[str], source: str, rel: str, destination: str,
                  origin: str) -> None:
        try:
            existing = os.lstat(destination).st_mode
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISLNK(existing):
            # An image symlink in the way is followed inside the root, never on
            # the host: an absolute target would otherwise name a host path.
            destination = self.make_dirs(os.path.relpath(destination, self.root))
        elif existing is not None and not stat.S_ISDIR(existing):
            self._replace(destination)
            existing = None
        if existing is None:
            os.mkdir(destination, 0o700)
        try:
            dir_stat = entry.stat(follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError) as err:
            # Listed by fd, so the error names no context path for copy_into to place.
            raise BuildError(f'"/{rel}": changed while being copied ({err.strerror})') \
                from None
        self.record(rel, dir_stat, "")
        if existing is None and self.defer_fresh:
            self._defer(source, rel, destination, origin, dir_stat)
            return
        self._tree(source, rel, destination, origin, fresh=existing is None)
        self.finish(destination, dir_stat)

    # -- deferred subtrees ------------------------------------------------------------

    def _defer(self, source: str, rel: str, destination: str, origin: str,
               st: os.stat_result) -> None:
        if not destination.startswith(self.root.rstrip("/") + "/"):
            raise SandboxError(f"copy: {destination} is not under {self.root}")
        inside = destination[len(self.root.rstrip("/")):]
        # The walk's records queued so far belong before the subtree's (none are, while
        # deferring: no chunk is pooled then); reserving closes the walk's segment.
        self.pool.drain()
        segment = self.records.reserve() if self.records is not None else None
        self._deferred.append(_Subtree(source, rel, inside, origin, st, segment))

    def _before_following_links(self) -> None:
        """A path is about to be resolved through the image's links, which may lead into
        (or above) a directory this copy made, and whatever is there decides where the
        walk writes: everything the copy's order puts before it is written first, the
        pooled files still being written and every deferred subtree (now, through the
        mount; no more are deferred).  Resolving first would let a deferred subtree put
        a link where the resolved path has a directory, and the walk's writes would
        follow it out of the root (catalogue C03)."""
        self.pool.drain()
        if self._deferred:
            self._write_deferred()

    @property
    def deferred(self) -> bool:
        """Subtrees wait for ``write_deferred``."""
        return bool(self._deferred)

    def write_deferred(self, upper: str | None) -> None:
        """Write the deferred subtrees, in the copy's order: into ``upper``, the
        snapshot's upper dir whose overlay the caller unmounted (the root's paths are
        the same there: whatever the copy made through the overlay is in the upper
        dir), or through the mount when None."""
        if not self._deferred:
            return
        if upper is not None:
            old = self.root.rstrip("/")
            self.root = upper
            self.links = {key: (upper + first[len(old):], content)
                          for key, (first, content) in self.links.items()}
        self._write_deferred()

    def _write_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        self.defer_fresh = False    # what they hold is written now, not deferred again
        try:
            for tree in deferred:
                target = self.root.rstrip("/") + tree.inside
                self._segment = tree.segment
                self._tree(tree.source, tree.rel, target, tree.origin, fresh=True)
                self.finish(target, tree.stat)
                if self.records is not None and tree.segment is not None:
                    self.pool.later(functools.partial(_close_segment, self.records,
                                                      tree.segment))
            self.pool.drain()
        finally:
            self._segment = None
            self.pool.close()
