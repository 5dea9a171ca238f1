"""Resolve and remove paths inside a root directory through file descriptors.

Every lookup starts at the root's fd and yields an fd; no path string is ever
joined to the root and handed to the kernel, so a symlink planted by an
earlier tar entry (or a lower layer) cannot redirect a write outside the
root (catalogue section 0, T04-T16).  Semantics are a chroot's:

* ``..`` at the root stays at the root;
* an absolute symlink target restarts at the root fd;
* more than 40 symlinks in one lookup is ELOOP.

The fast path is ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``, where
the kernel enforces all of this; when it cannot finish (a parent is missing
and must be created, or the kernel lacks openat2), a component walk with
``O_PATH | O_NOFOLLOW`` and ``readlinkat`` does the same in user space
(``builder.rootpath.walk``, the walker every in-root lookup shares, over fds).
Nothing resolved is cached between calls (T13): a later entry may have
changed any component.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from builder import rootpath, syscalls

MAX_SYMLINKS = rootpath.MAX_SYMLINKS

_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_STEP = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_O_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_have_openat2 = True
# Plain names for the enum members the fd walk returns per component (see rootpath).
_MISSING, _DIR, _LINK = rootpath.Kind.MISSING, rootpath.Kind.DIR, rootpath.Kind.LINK


def _openat2_in_root(dirfd: int, path: bytes, flags: int) -> int:
    """openat2(..., RESOLVE_IN_ROOT); raises OSError like os.open."""
    global _have_openat2
    try:
        return syscalls.openat2(dirfd, path, flags,
                                syscalls.RESOLVE_IN_ROOT | syscalls.RESOLVE_NO_MAGICLINKS)
    except OSError as err:
        if err.errno in (errno.ENOSYS, errno.EPERM):
            # ENOSYS: kernel < 5.6; EPERM: a seccomp filter that predates it.
            _have_openat2 = False
        raise


class Root:
    """An open directory that lookups are confined to."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # The root itself must be a real directory, not a symlink to one.
        self.fd = os.open(path, _O_PATH_DIR | os.O_NOFOLLOW)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def open_dir(self, comps: list[bytes], *, create: bool,
                 on_replace: Callable[[int, bytes], None] | None = None) -> int | None:
        """An O_PATH fd for the directory ``comps`` (symlinks followed in root).

        With ``create``, missing directories are made (mode 0755) and a
        non-directory in the way is replaced by one (the OCI replace rule,
        T21) and ``on_replace(parent_fd, name)`` is told; otherwise None when
        the path is missing or not a directory.
        Raises OSError (ELOOP, ENAMETOOLONG...) for what cannot resolve.
        """
        if not comps:
            return os.dup(self.fd)
        if _have_openat2:
            try:
                return _openat2_in_root(self.fd, b"/".join(comps), _O_PATH_DIR)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.ENOTDIR) and not create:
                    return None
                if err.errno == errno.ELOOP:
                    raise
                # ENOENT/ENOTDIR with create, ENAMETOOLONG, EAGAIN (a rename
                # raced the lookup), ENOSYS: the walk below settles it.
        return self._walk(comps, create, on_replace)

    def _walk(self, comps: list[bytes], create: bool,
              on_replace: Callable[[int, bytes], None] | None) -> int | None:
        tree = _FdTree(self.fd, create, on_replace, limit=len(comps) + MAX_SYMLINKS * 64,
                       shown=b"/".join(comps))
        try:
            found = rootpath.walk(tree, tree.shown, want_dir=True)
            if found.parts is None:
                return None
            return tree.take()
        except rootpath.TooManyLinks:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), tree.shown) from None
        finally:
            tree.close()


class _FdTree:
    """``rootpath.walk`` over O_PATH fds from the root's: only the current
    directory's fd is held (and the entry just looked up); ``..`` re-walks the
    resolved names from the root (real directories, each step O_NOFOLLOW), which
    keeps 4096-deep trees within the fd limit.

    With ``create``, a missing directory is made (0755) and a non-directory in
    the way is replaced by one (the OCI replace rule, T21; ``on_replace`` is
    told), unless a symlink's target led to it: never delete a file because a
    link pointed at it (containerd and moby stop with ENOTDIR there too).
    """

    def __init__(self, root_fd: int, create: bool,
                 on_replace: Callable[[int, bytes], None] | None, limit: int,
                 shown: bytes) -> None:
        self.root_fd = root_fd
        self.shown = shown       # the path walked, for errors
        self.create = create
        self.on_replace = on_replace
        self.made_left = limit   # a directory that keeps vanishing must not loop forever
        self.fd = os.dup(root_fd)
        self.pending = -1        # the link last looked up (for readlink), O_PATH

    def lookup(self, parents: list[bytes], comp: bytes, via_link: bool) -> rootpath.Kind:
        if self.pending >= 0:
            self._drop_pending()
        while True:
            try:
                nxt = os.open(comp, _O_STEP, dir_fd=self.fd)
            except FileNotFoundError:
                if not self.create:
                    return _MISSING
                self.made_left -= 1
                if self.made_left < 0:
                    raise OSError(errno.ELOOP, "directory keeps vanishing", comp) from None
                _mkdir_quiet(self.fd, comp)
                continue
            mode = os.fstat(nxt).st_mode
            if stat.S_ISDIR(mode):   # the common case first: this runs per component
                os.close(self.fd)
                self.fd = nxt
                return _DIR
            kind = rootpath.kind_of(mode)
            if kind is _LINK:
                self.pending = nxt
                return kind
            os.close(nxt)
            if not self.create:
                return kind
            if via_link:
                raise NotADirectoryError(errno.ENOTDIR, "a symlink in the path leads to a "
                                         "non-directory", self.shown)
            os.unlink(comp, dir_fd=self.fd)
            _mkdir_quiet(self.fd, comp)
            if self.on_replace is not None:
                self.on_replace(self.fd, comp)

    def readlink(self, parents: list[bytes], name: bytes) -> bytes:
        try:
            return os.readlink(b"", dir_fd=self.pending)
        finally:
            self._drop_pending()

    def enter(self, parents: list[bytes], name: bytes) -> None:
        # Directories are entered in lookup; nothing else is (walk runs with want_dir).
        raise AssertionError(f"not a directory: {name!r}")

    def leave(self, parents: list[bytes]) -> None:
        self._move(parents)

    def restart(self) -> None:
        self._move([])

    def _move(self, names: list[bytes]) -> None:
        os.close(self.fd)
        self.fd = -1
        fd = os.dup(self.root_fd)
        try:
            for name in names:
                nxt = os.open(name, _O_STEP | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def take(self) -> int:
        """The fd of where the walk ended; the tree no longer owns it."""
        fd, self.fd = self.fd, -1
        return fd

    def _drop_pending(self) -> None:
        if self.pending >= 0:
            os.close(self.pending)
            self.pending = -1

    def close(self) -> None:
        self._drop_pending()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _mkdir_quiet(dirfd: int, name: bytes) -> None:
    try:
        os.mkdir(name, 0o755, dir_fd=dirfd)
    except FileExistsError:
        return
    os.chmod(name, 0o755, dir_fd=dirfd)   # an implicit parent is 0755 whatever the umask


Keep = Callable[[int, int, bytes], bool]


def remove_at(dirfd: int, name: bytes, keep: Keep | None = None) -> None:
    """Remove ``name`` in ``dirfd`` and, if it is a directory, all below it.

    Never follows a symlink, never uses a path of more than one component,
    holds one fd whatever the depth, and never recurses in Python (T22).
    With ``keep`` (see ``clear_dir``) what it keeps survives, and so does
    every directory above a kept entry.
    """
    try:
        st = os.lstat(name, dir_fd=dirfd)
    except FileNotFoundError:
        return
    here = os.fstat(dirfd)
    kept = keep is not None and keep(here.st_dev, here.st_ino, name)
    if not stat.S_ISDIR(st.st_mode):
        if not kept:
            os.unlink(name, dir_fd=dirfd)
        return
    fd = os.open(name, _O_READ_DIR, dir_fd=dirfd)
    try:
        clear_dir(fd, keep)
    finally:
        os.close(fd)
    if not kept:
        _rmdir(dirfd, name, keep)


def clear_dir(fd: int, keep: Keep | None = None) -> None:
    """Empty the directory open as ``fd``.

    ``keep(dev, ino, name)`` spares the entry ``name`` of the directory
    (dev, ino).  A kept directory is still entered and cleared of what is not
    kept; a directory that is not kept but holds a kept entry stays too.  That
    is how a whiteout or opaque marker removes lower content while the layer's
    own entries, whatever their order in the tar, survive (W07).
    """
    cur = os.dup(fd)
    # Per level: subdirectories still to visit; per descent: how to come back.
    pending: list[list[tuple[bytes, bool]]] = [_scan(cur, keep)]
    path: list[tuple[bytes, bool, int, int]] = []
    try:
        while pending:
            if pending[-1]:
                name, kept = pending[-1].pop()
                here = os.fstat(cur)
                child = os.open(name, _O_READ_DIR, dir_fd=cur)
                os.close(cur)
                cur = child
                path.append((name, kept, here.st_dev, here.st_ino))
                pending.append(_scan(cur, keep))
                continue
            pending.pop()
            if not path:
                break
            name, kept, dev, ino = path.pop()
            # Up through "..": this dir was entered with O_NOFOLLOW from the
            # parent, so ".." is that parent; the check catches a concurrent move.
            parent = os.open(b"..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=cur)
            os.close(cur)
            cur = parent
            pst = os.fstat(cur)
            if (pst.st_dev, pst.st_ino) != (dev, ino):
                raise OSError(errno.EXDEV, "directory moved while it was being cleared")
            if not kept:
                _rmdir(cur, name, keep)
    finally:
        os.close(cur)


def _rmdir(dirfd: int, name: bytes, keep: Keep | None) -> None:
    try:
        os.rmdir(name, dir_fd=dirfd)
    except OSError as err:
        # Not empty because something below is kept: it stays as their parent.
        if keep is None or err.errno != errno.ENOTEMPTY:
            raise


def _scan(fd: int, keep: Keep | None) -> list[tuple[bytes, bool]]:
    """Unlink the non-directories of ``fd`` that are not kept; return its subdirs."""
    here = os.fstat(fd)
    with os.scandir(fd) as it:
        entries = list(it)
    subdirs = []
    for entry in entries:
        name = os.fsencode(entry.name)
        kept = keep is not None and keep(here.st_dev, here.st_ino, name)
        if entry.is_dir(follow_symlinks=False):
            subdirs.append((name, kept))
        elif not kept:
            os.unlink(name, dir_fd=fd)
    return subdirs
