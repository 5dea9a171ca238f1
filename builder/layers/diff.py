"""Tree diff for the vfs snapshot driver: (lower, merged) -> layer dir.

The vfs driver runs a step in a full copy of the parent tree; afterwards
``diff_trees`` writes what changed into a fresh directory in overlay format,
so the result is a layer dir like any overlay upper:

* new and changed entries are copied with mode, owner, allowlisted xattrs and
  nanosecond times; hardlinks among them stay hardlinks;
* a deleted name becomes a 0:0 character device;
* a directory that replaced a non-directory is marked opaque (as overlayfs
  marks it); a directory that replaced a directory cannot be told apart from
  one whose children were deleted one by one, so its removed children get
  explicit whiteouts, which ``write_layer_tar(..., lowers=...)`` also emits
  for an opaque upper dir: both drivers give the same tar;
* unchanged directories holding changes are created with the merged tree's
  metadata, so the layer dir mounts the same as an upper.

"Changed" is ``changes.same_entry`` (the overlay writer's rule), except that
a hardlinked file whose link count is the same in both trees is not a change.
Symlinks in either tree are never followed: each path is lstat'ed and opened
with O_NOFOLLOW.  Directories are walked with an explicit stack.
"""

from __future__ import annotations

import errno
import os
import stat

import msgspec

from builder import userns
from builder.layers import whiteout as wh
from builder.layers.changes import OPEN_FILE, PathLike, same_entry

_COPY = 1 << 24
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Frame(msgspec.Struct):
    rel: bytes
    merged: bytes
    lower: bytes | None         # the lower dir to compare against, None if new
    st: os.stat_result
    names: list[bytes]
    made: bool                  # exists in out_dir already


class _Differ:
    def __init__(self, lower: bytes, merged: bytes, out: bytes, rootless: bool | None) -> None:
        self.lower = lower
        self.merged = merged
        self.out = out
        self.rootless = userns.rootless() if rootless is None else rootless
        self.links: dict[tuple[int, int], bytes] = {}
        self.stack: list[_Frame] = []

    def run(self) -> None:
        st = os.lstat(self.merged)
        self._meta(self.out, st, self.merged)
        self._push(b"", self.merged, self.lower, st, made=True)
        while self.stack:
            top = self.stack[-1]
            if not top.names:
                self.stack.pop()
                if top.made:
                    os.utime(self._out(top.rel), ns=(top.st.st_atime_ns, top.st.st_mtime_ns))
                continue
            self._entry(top, top.names.pop())

    def _push(self, rel: bytes, merged: bytes, lower: bytes | None, st: os.stat_result,
              made: bool) -> None:
        names = set(os.listdir(merged))
        if lower is not None:
            names.update(os.listdir(lower))
        # Popped from the end: reverse order pops in byte order.
        self.stack.append(_Frame(rel, merged, lower, st, sorted(names, reverse=True), made))

    def _out(self, rel: bytes) -> bytes:
        return self.out + b"/" + rel if rel else self.out

    def _ensure_parents(self) -> None:
        for frame in self.stack:
            if not frame.made:
                path = self._out(frame.rel)
                os.mkdir(path, 0o700)
                self._meta(path, frame.st, frame.merged)
                frame.made = True

    def _entry(self, top: _Frame, name: bytes) -> None:
        rel = top.rel + b"/" + name if top.rel else name
        mpath = top.merged + b"/" + name
        lpath = top.lower + b"/" + name if top.lower is not None else None
        mst = _lstat(mpath)
        lst = _lstat(lpath) if lpath is not None else None
        if mst is None:
            if lst is not None:
                self._ensure_parents()
                os.mknod(self._out(rel), stat.S_IFCHR, 0)
            return
        if stat.S_ISSOCK(mst.st_mode):
            return
        if stat.S_ISDIR(mst.st_mode):
            lower_dir = lpath if lst is not None and stat.S_ISDIR(lst.st_mode) else None
            changed = lower_dir is None or not self._same(mst, mpath, lst, lpath)
            self._push(rel, mpath, lower_dir, mst, made=False)
            if changed:
                self._ensure_parents()
                if lst is not None and lower_dir is None:
                    self._set_opaque(self._out(rel))
            return
        if lst is not None and self._same(mst, mpath, lst, lpath):
            return
        self._ensure_parents()
        self._copy(rel, mpath, mst)

    def _same(self, mst: os.stat_result, mpath: bytes, lst: os.stat_result | None,
              lpath: bytes | None) -> bool:
        if lst is None or lpath is None:
            return False
        xattrs = wh.read_xattrs(mpath)
        if stat.S_ISREG(mst.st_mode):
            fd = os.open(mpath, OPEN_FILE)
            try:
                return same_entry(mst, xattrs, fd, lst, lpath, upper=False)
            finally:
                os.close(fd)
        return same_entry(mst, xattrs, mpath, lst, lpath, upper=False)

    def _copy(self, rel: bytes, mpath: bytes, st: os.stat_result) -> None:
        out = self._out(rel)
        mode = st.st_mode
        if st.st_nlink > 1 and not stat.S_ISDIR(mode):
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                os.link(first, out, follow_symlinks=False)
                return
            self.links[(st.st_dev, st.st_ino)] = out
        if stat.S_ISREG(mode):
            _copy_file(mpath, out)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(mpath), out)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(out, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(out, 0o600)
        else:
            return
        self._meta(out, st, mpath)

    def _meta(self, out: bytes, st: os.stat_result, source: bytes) -> None:
        link = stat.S_ISLNK(st.st_mode)
        os.chown(out, st.st_uid, st.st_gid, follow_symlinks=False)
        if not link:
            os.chmod(out, stat.S_IMODE(st.st_mode))
            for key, value in wh.read_xattrs(source).items():
                os.setxattr(out, key, value, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def _set_opaque(self, path: bytes) -> None:
        os.setxattr(path, wh.opaque_xattr(self.rootless), b"y", follow_symlinks=False)


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _copy_file(src: bytes, dst: bytes) -> None:
    sfd = os.open(src, OPEN_FILE)
    try:
        dfd = os.open(dst, _O_NEW, 0o600)
        try:
            try:
                while os.copy_file_range(sfd, dfd, _COPY):
                    pass
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                while data := os.read(sfd, _COPY):
                    os.write(dfd, data)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def diff_trees(lower_root: PathLike, merged_root: PathLike, out_dir: PathLike, *,
               rootless: bool | None = None) -> None:
    """Write ``merged_root`` minus ``lower_root`` into the empty ``out_dir``
    in overlay format (see the module docstring)."""
    _Differ(os.fsencode(os.fspath(lower_root)), os.fsencode(os.fspath(merged_root)),
            os.fsencode(os.fspath(out_dir)), rootless).run()
