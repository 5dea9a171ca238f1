"""Walk a layer directory as a change set: what goes in its tar, in tar order.

A layer dir is in overlay format (0:0 char devs for deletions, the opaque
xattr on directories).  Without ``lowers`` every entry is a change.  With
``lowers`` (the parent chain, topmost first, overlay format too) the walk
compares against them as BuildKit's overlay differ does; see ``tar_write``
for the rules.  ``same_entry`` is also the vfs differ's (``diff.py``)
definition of "unchanged", so both snapshot drivers agree.

Also ``layer_changes``: the added/modified/deleted lists, whose ``summary()`` is the
``layers.summary.ChangeSummary`` a step's layer travels with.
"""

from __future__ import annotations

import heapq
import os
import stat
from collections.abc import Iterator, Sequence
from typing import cast

import msgspec

from builder import userns
from builder.errors import LayerError
from builder.layers import whiteout as wh
from builder.layers.summary import LARGEST_KEPT, ChangedFile, ChangeKind, ChangeSummary

PathLike = str | os.PathLike[str]

_FLUSH_AT = 1 << 20
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a file must not hang the walk.
OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class _Frame(msgspec.Struct):
    rel: bytes                  # tar name of the dir without "/", b"" for the root
    path: bytes                 # absolute path in the layer dir
    fd: int
    entries: Iterator[tuple[bytes, os.DirEntry[bytes] | None]]
    lowers: list[bytes]         # lower dirs merging into this one, topmost first
    expand: bool                # opaque: lower children absent here are deleted
    st: os.stat_result | None = None
    xattrs: dict[str, bytes] = msgspec.field(default_factory=dict)
    emitted: bool = True
    in_lower: bool = False


# Events handed from the walker to writers:
#   (kind, rel, stat, xattrs, fd for FILE / path for OTHER / None, in_lower)
# A plain tuple, not a class: one is made per entry on the commit's hot path.
DIR, OPAQUE, WHITEOUT, FILE, OTHER = range(5)
Event = tuple[int, bytes, os.stat_result | None, dict[str, bytes] | None, int | bytes | None, bool]


class Walker:
    """Walks one layer dir in tar order and yields what belongs in the tar."""

    def __init__(self, layer_dir: PathLike, lowers: Sequence[PathLike], *, prune: bool,
                 rootless: bool | None, summary: LayerChanges | None = None) -> None:
        self.root = os.fsencode(os.fspath(layer_dir))
        # Filled, when given, as an unpruned walk would classify the layer (every
        # entry of the upper dir is a change): the commit gets the ``explain``
        # summary from the same walk that hashes the tar.
        self.summary = summary
        # Store paths may be short symlinks (l/<id>); resolve them once so
        # per-entry lookups below never meet a symlinked lower root.
        self.lowers = [os.fsencode(os.path.realpath(p)) for p in lowers]
        self.prune = prune and bool(self.lowers)
        self.rootless = userns.rootless() if rootless is None else rootless

    def error(self, message: str, rel: bytes) -> LayerError:
        return LayerError(message, layer=os.fsdecode(self.root), entry=os.fsdecode(rel or b"/"))

    def events(self) -> Iterator[Event]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        stack: list[_Frame] = []
        try:
            lowers = self._root_lowers()
            opaque = wh.has_opaque(fd, self.rootless)
            if opaque and not self.lowers:
                if self.summary is not None:
                    self._note(OPAQUE, b"", None, False)
                yield (OPAQUE, b"", None, None, None, False)
            stack.append(self._frame(b"", self.root, fd, lowers, opaque and bool(lowers)))
            while stack:
                top = stack[-1]
                if top.fd < 0:
                    # Parents give up their fd while a child is walked, so a
                    # 4096-deep layer needs two fds, not 4096.
                    top.fd = os.open(top.path, _OPEN_DIR)
                # Fast path, inlined: a regular file in a dir with no lower
                # counterpart (every file without lowers).  This loop is most
                # of the cost of hashing 100,000 small files.
                fast = not top.lowers and top.emitted
                summary = self.summary
                prefix = top.rel + b"/" if top.rel else b""
                for name, entry in top.entries:
                    if (fast and entry is not None and entry.is_file(follow_symlinks=False)
                            and not name.startswith(wh.WHITEOUT_PREFIX)):
                        ffd = os.open(name, OPEN_FILE, dir_fd=top.fd)
                        try:
                            st = os.fstat(ffd)
                            if not stat.S_ISREG(st.st_mode):
                                raise self.error("layer changed while it was being read",
                                                 prefix + name)
                            try:
                                keys = os.listxattr(ffd)
                            except OSError:
                                keys = wh.list_xattrs(ffd)  # raises unless "unsupported"
                            if keys:
                                self._check_overlay(keys, prefix + name)
                            if summary is not None:
                                summary.add_file("/" + os.fsdecode(prefix + name), st.st_size)
                            yield (FILE, prefix + name, st,
                                   wh.read_xattrs(ffd, keys) if keys else {}, ffd, False)
                        finally:
                            os.close(ffd)
                        continue
                    depth = len(stack)
                    yield from self._entry(stack, top, name, entry)
                    if len(stack) != depth:
                        os.close(top.fd)
                        top.fd = -1
                        break  # a directory was pushed: walk it first
                else:
                    os.close(stack.pop().fd)
        finally:
            for frame in stack:
                if frame.fd >= 0:
                    os.close(frame.fd)

    def _root_lowers(self) -> list[bytes]:
        out = []
        for lower in self.lowers:
            out.append(lower)
            if wh.has_opaque(lower, self.rootless):
                break
        return out

    def _frame(self, rel: bytes, path: bytes, fd: int, lowers: list[bytes], expand: bool,
               st: os.stat_result | None = None, xattrs: dict[str, bytes] | None = None,
               emitted: bool = True) -> _Frame:
        with os.scandir(path) as it:
            entries: dict[bytes, os.DirEntry[bytes] | None] = {e.name: e for e in it}
        if expand:
            for name in self._lower_names(lowers):
                entries.setdefault(name, None)
        ordered = iter(sorted(entries.items()))
        return _Frame(rel, path, fd, ordered, lowers, expand, st, xattrs or {}, emitted)

    def _lower_names(self, lowers: list[bytes]) -> list[bytes]:
        seen: dict[bytes, bool] = {}
        for lower in lowers:
            for name in os.listdir(lower):
                if name not in seen:
                    seen[name] = not wh.is_overlay_whiteout(os.lstat(lower + b"/" + name))
        return [name for name, visible in seen.items() if visible]

    def _lower_entry(self, lowers: list[bytes], name: bytes
                     ) -> tuple[bytes, os.stat_result] | None:
        for lower in lowers:
            path = lower + b"/" + name
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            return None if wh.is_overlay_whiteout(st) else (path, st)
        return None

    def _child_lowers(self, lowers: list[bytes], name: bytes) -> list[bytes]:
        out = []
        for lower in lowers:
            path = lower + b"/" + name
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or non-dir hides everything below it
            out.append(path)
            if wh.has_opaque(path, self.rootless):
                break
        return out

    def _flush_parents(self, stack: list[_Frame]) -> Iterator[Event]:
        for frame in stack:
            if not frame.emitted:
                frame.emitted = True
                if self.summary is not None and frame.rel:  # as the tar has it
                    self._note(DIR, frame.rel, frame.st, frame.in_lower)
                yield (DIR, frame.rel, frame.st, frame.xattrs, None, frame.in_lower)

    def _entry(self, stack: list[_Frame], top: _Frame, name: bytes,
               entry: os.DirEntry[bytes] | None) -> Iterator[Event]:
        rel = top.rel + b"/" + name if top.rel else name
        lower = self._lower_entry(top.lowers, name) if top.lowers else None
        if entry is None:  # only in the lowers of an expanded opaque dir
            if lower is not None:
                if self.summary is not None:
                    self._note(WHITEOUT, rel, None, True)
                yield from self._flush_parents(stack)
                yield (WHITEOUT, rel, None, None, None, True)
            return
        if wh.is_whiteout_name(name):
            raise self.error("unrepresentable name: a file named like a whiteout (W12)", rel)
        if entry.is_file(follow_symlinks=False):
            yield from self._file(stack, top, rel, name, lower)
            return
        st = os.lstat(name, dir_fd=top.fd)
        if wh.is_overlay_whiteout(st):
            if lower is not None or not self.lowers:
                if self.summary is not None:
                    self._note(WHITEOUT, rel, st, lower is not None)
                yield from self._flush_parents(stack)
                yield (WHITEOUT, rel, st, None, None, lower is not None)
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self._dir(stack, top, rel, name, lower)
            return
        if stat.S_ISSOCK(st.st_mode):
            return
        path = top.path + b"/" + name
        keys = wh.list_xattrs(path)
        self._check_overlay(keys, rel)
        xattrs = wh.read_xattrs(path, keys)
        if self._unchanged(st, xattrs, path, lower):
            return  # copied up, not changed: not in the tar, not in the summary
        if self.summary is not None:
            self._note(OTHER, rel, st, lower is not None)
        yield from self._flush_parents(stack)
        yield (OTHER, rel, st, xattrs, path, lower is not None)

    def _file(self, stack: list[_Frame], top: _Frame, rel: bytes, name: bytes,
              lower: tuple[bytes, os.stat_result] | None) -> Iterator[Event]:
        fd = os.open(name, OPEN_FILE, dir_fd=top.fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self.error("layer changed while it was being read", rel)
            keys = wh.list_xattrs(fd)
            if keys:
                self._check_overlay(keys, rel)
            xattrs = wh.read_xattrs(fd, keys) if keys else {}
            if lower is not None and self._unchanged(st, xattrs, fd, lower):
                return  # copied up (a chmod to its own mode), not changed
            if self.summary is not None:
                self._note(FILE, rel, st, lower is not None)
            yield from self._flush_parents(stack)
            yield (FILE, rel, st, xattrs, fd, lower is not None)
        finally:
            os.close(fd)

    def _dir(self, stack: list[_Frame], top: _Frame, rel: bytes, name: bytes,
             lower: tuple[bytes, os.stat_result] | None) -> Iterator[Event]:
        fd = os.open(name, _OPEN_DIR, dir_fd=top.fd)
        try:
            st = os.fstat(fd)
            keys = wh.list_xattrs(fd)
            self._check_overlay(keys, rel)
            xattrs = wh.read_xattrs(fd, keys)
            opaque = wh.has_opaque(fd, self.rootless, keys)
            lowers = self._child_lowers(top.lowers, name) if top.lowers else []
            expand = top.expand or (opaque and bool(lowers))
            changed = not self._unchanged(st, xattrs, fd, lower)
            frame = self._frame(rel, top.path + b"/" + name, fd, lowers, expand, st, xattrs,
                                emitted=False)
            frame.in_lower = lower is not None
        except BaseException:
            os.close(fd)
            raise
        stack.append(frame)
        if changed:  # always, without lowers (the summary notes it as it is emitted)
            yield from self._flush_parents(stack)
        if opaque and not self.lowers:
            if self.summary is not None:
                self._note(OPAQUE, rel, None, lower is not None)
            yield (OPAQUE, rel, None, None, None, lower is not None)

    def _note(self, kind: int, rel: bytes, st: os.stat_result | None, in_lower: bool) -> None:
        summary = cast(LayerChanges, self.summary)
        path = "/" + os.fsdecode(rel)
        if kind == WHITEOUT:
            summary.deleted.append(path)
        elif kind == OPAQUE:
            summary.opaque.append(path.rstrip("/") or "/")
            summary.deleted.append(path.rstrip("/") or "/")
        elif in_lower:
            summary.modified.append(path)
            if stat.S_ISREG(cast(os.stat_result, st).st_mode):
                size = cast(os.stat_result, st).st_size
                summary.modified_bytes += size
                summary.consider(path, size, ChangeKind.MODIFIED)
        else:
            summary.added.append(path)
            if stat.S_ISREG(cast(os.stat_result, st).st_mode):
                size = cast(os.stat_result, st).st_size
                summary.added_bytes += size
                summary.consider(path, size, ChangeKind.ADDED)

    def _check_overlay(self, keys: list[str], rel: bytes) -> None:
        bad = wh.check_overlay_xattrs(keys)
        if bad is not None:
            raise self.error(f"overlay {bad} found: mount with redirect_dir=off,metacopy=off "
                             "(W10)", rel)

    def _unchanged(self, st: os.stat_result, xattrs: dict[str, bytes], this: bytes | int,
                   lower: tuple[bytes, os.stat_result] | None) -> bool:
        if not self.prune or lower is None:
            return False
        return same_entry(st, xattrs, this, lower[1], lower[0])


def same_entry(st: os.stat_result, xattrs: dict[str, bytes], path: bytes | int,
               old_st: os.stat_result, old_path: bytes, *, upper: bool = True) -> bool:
    """Whether an entry equals its lower counterpart, so a change set can omit it.

    Compared: type and mode bits, owner, allowlisted xattrs; for directories
    nothing else (their mtime moves with every create/delete inside and is
    noise, as in BuildKit's ``sameDirent``); for the rest also the link count
    (a new hardlink, or a copy-up that broke one, changes the set of names an
    inode has), mtime to the nanosecond, the device number, and the symlink
    target or file content.  In an ``upper`` dir any link count above one is a
    change: copy-up never keeps a hardlink, so the link was made in this layer.
    ``path`` is an fd for regular files and dirs.
    """
    if (st.st_mode != old_st.st_mode or st.st_uid != old_st.st_uid
            or st.st_gid != old_st.st_gid):
        return False
    if not stat.S_ISDIR(st.st_mode) and (
            (upper and st.st_nlink > 1) or st.st_nlink != old_st.st_nlink
            or st.st_mtime_ns != old_st.st_mtime_ns or st.st_rdev != old_st.st_rdev
            or st.st_size != old_st.st_size):
        return False
    if wh.read_xattrs(old_path) != xattrs:
        return False
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(cast(bytes, path)) == os.readlink(old_path)
    if stat.S_ISREG(st.st_mode):
        return same_content(path, old_path)
    return True


def same_content(this: bytes | int, old_path: bytes) -> bool:
    fd = this if isinstance(this, int) else os.open(this, OPEN_FILE)
    other = os.open(old_path, OPEN_FILE)
    try:
        offset = 0
        while True:
            a = os.pread(fd, _FLUSH_AT, offset)
            if a != os.pread(other, _FLUSH_AT, offset):
                return False
            if not a:
                return True
            offset += len(a)
    finally:
        os.close(other)
        if fd is not this:
            os.close(fd)


class LayerChanges(msgspec.Struct):
    """What a layer adds, modifies (the name exists in a lower) and deletes.

    Paths are absolute in the image (``/usr/bin/x``).  ``opaque`` lists dirs
    whose lower content is hidden as a whole (counted in ``deleted`` too).
    """

    added: list[str] = msgspec.field(default_factory=list)
    modified: list[str] = msgspec.field(default_factory=list)
    deleted: list[str] = msgspec.field(default_factory=list)
    opaque: list[str] = msgspec.field(default_factory=list)
    added_bytes: int = 0
    modified_bytes: int = 0
    # The largest files so far, a min-heap of (size, path, kind) of at most LARGEST_KEPT;
    # ``floor`` is the smallest size a file needs to get in (the walk's fast path
    # skips the heap below it).
    _largest: list[tuple[int, str, ChangeKind]] = msgspec.field(default_factory=list)
    floor: int = -1

    @property
    def bytes(self) -> int:
        return self.added_bytes + self.modified_bytes

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "modified": len(self.modified),
                "deleted": len(self.deleted), "bytes": self.bytes}

    def add_file(self, path: str, size: int) -> None:
        """A regular file the layer adds (the walk's fast path)."""
        self.added.append(path)
        self.added_bytes += size
        if size > self.floor:
            self.consider(path, size, ChangeKind.ADDED)

    def consider(self, path: str, size: int, kind: ChangeKind) -> None:
        """Keep ``path`` if it is among the largest files seen so far."""
        if len(self._largest) < LARGEST_KEPT:
            heapq.heappush(self._largest, (size, path, kind))
        elif size > self._largest[0][0]:
            heapq.heapreplace(self._largest, (size, path, kind))
        if len(self._largest) == LARGEST_KEPT:
            self.floor = self._largest[0][0]

    def summary(self) -> ChangeSummary:
        """The shape the cache, the build record and explain keep (``layers.summary``)."""
        largest = sorted(self._largest, key=lambda item: (-item[0], item[1]))
        return ChangeSummary(len(self.added), len(self.modified), len(self.deleted),
                             self.bytes, tuple(ChangedFile(path, size, kind)
                                               for size, path, kind in largest))


def layer_changes(layer_dir: PathLike, *, lowers: Sequence[PathLike] = (),
                  rootless: bool | None = None) -> LayerChanges:
    """Classify a layer's entries for ``explain``: one walk, no content reads.

    (A commit gets the same summary from its diff_id walk: ``layer_diff_id``'s
    ``changes``.)
    """
    changes = LayerChanges()
    walker = Walker(layer_dir, lowers, prune=False, rootless=rootless, summary=changes)
    for _ in walker.events():
        pass
    return changes
