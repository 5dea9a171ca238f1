"""COPY's sources opened safely, and regular files: their bytes, hashed as they are
written, and their metadata.

``open_source`` opens a source found by path and checks that the open reached that
very file (C03).

``copy_bytes`` copies between open fds (the digest is of the bytes written: the
layer holds what the cache key names, catalogue K).  ``copy_at`` copies one entry of
a directory tree the copy walks, relative to the two directories' fds: a name is one
component opened with O_NOFOLLOW beneath a directory fd the copy already checked, so
nothing can redirect it (C03) and no path is resolved again per file; ownership,
mode and times are set on the new file's fd.  About half the system calls of a copy by
path, which matters for a COPY of 100,000 small files (issue 17, point 4).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import stat

from builder.errors import BuildError

_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: an entry swapped for a FIFO since it was listed must not hang the open;
# fstat then refuses it (C11).
_OPEN_SOURCE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def copy_bytes(src_fd: int, dst_fd: int, size: int) -> str:
    """Copy ``src_fd`` to its end into ``dst_fd``; the sha256 of the bytes written.
    ``size`` (the source's, from fstat) sizes the first read: a small file is one read,
    and it ends there when it gave all ``size`` bytes.  The digest is always of what
    was written, so a file that changed is caught by the caller's check (catalogue K)."""
    hasher = hashlib.sha256()
    want = min(max(size, 0) + 1, _CHUNK)
    while chunk := os.read(src_fd, want):
        hasher.update(chunk)
        os.write(dst_fd, chunk)
        if len(chunk) == size < want:
            # All of a small file in one read, and it asked for a byte more: the read
            # that would return b"" is skipped (100,000 system calls in a COPY of
            # 100,000 files).  A file growing meanwhile is copied as fstat saw it.
            break
    return "sha256:" + hasher.hexdigest()


class Metadata:
    """What a copied file gets: its owner (None: the source's, for COPY --from) and its
    mode (None: the source's permission bits).  ``made_as``: the owner a new file in
    the destination directory gets from the kernel, under a umask of 0 (``copy_into``
    sets it); None: unknown.  Given, a file is created with its final mode and chowned
    only when that owner is not the one it needs: two fewer inode updates per file
    (about a tenth of a COPY of 100,000 small files)."""

    __slots__ = ("gid", "made_as", "mode", "uid")

    def __init__(self, uid: int | None, gid: int | None, mode: int | None,
                 made_as: tuple[int, int] | None = None) -> None:
        self.uid, self.gid, self.mode, self.made_as = uid, gid, mode, made_as


def copy_at(src_dir: int, dst_dir: int, name: str, meta: Metadata,
            where: str) -> tuple[str, os.stat_result]:
    """Copy the regular file ``name`` of ``src_dir`` to a new ``name`` in ``dst_dir``;
    its content digest and the stat of the file whose bytes were copied.  ``where``
    names the source in an error."""
    try:
        src = os.open(name, _OPEN_SOURCE, dir_fd=src_dir)
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise
        # Gone, or swapped for a link (O_NOFOLLOW), since it was listed (C03).
        raise BuildError(f"cannot copy {where}: it changed while being copied "
                         f"({err.strerror})") from None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise BuildError(f"cannot copy {where}: it changed while being copied")
        owner = (st.st_uid if meta.uid is None else meta.uid,
                 st.st_gid if meta.gid is None else meta.gid)
        mode = stat.S_IMODE(st.st_mode) if meta.mode is None else meta.mode
        # Set-id and sticky bits always go through chown then chmod (the chown clears
        # them); so does everything when the directory's defaults are unknown.
        plain = meta.made_as is not None and not mode & 0o7000
        dst = os.open(name, _CREATE, mode if plain else 0o600, dir_fd=dst_dir)
        try:
            digest = copy_bytes(src, dst, st.st_size)
            if not plain or owner != meta.made_as:
                os.fchown(dst, *owner)
                os.fchmod(dst, mode)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return digest, st


def open_source(path: str, root: str | None, flags: int) -> int:
    """Open ``path``, found by resolving inside ``root``, and check that the open
    reached that very file.  Sources are resolved by path and then used, so a
    component swapped for a symlink in between (a context changed during the
    build, catalogue C03, as in CVE-2018-15664) would redirect the open to the
    host; the fd's own path in /proc tells, and such a source is refused."""
    # The root itself is the invoker's choice and may be a link (a context given as a
    # symlink, `COPY .`); only what lies below it must not be one.
    is_root = root is not None and path.rstrip("/") == root.rstrip("/")
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | (0 if is_root else os.O_NOFOLLOW))
    except OSError as err:
        if root is None or err.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise
        # The final component became a symlink (O_NOFOLLOW) or went away.
        raise BuildError(f'"/{os.path.relpath(path, root)}": changed while being copied '
                         f"({err.strerror})") from None
    if root is None:
        return fd
    prefix = root.rstrip("/") + "/"
    rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
    expected = os.path.normpath(os.path.join(_real_root(root), rel))
    try:
        reached = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        reached = ""
    if reached != expected:
        os.close(fd)
        raise BuildError(f'"/{os.path.relpath(path, root)}": changed while being copied '
                         "(a path component became a symlink)")
    return fd


@functools.lru_cache(maxsize=8)
def _real_root(root: str) -> str:
    """The root's own real path, once per copy (a copy opens every file through
    ``open_source``; ``realpath`` is an lstat per component).  The root itself is the
    invoking user's context directory or pybuild's own snapshot, not something a
    context can swap: only what is below it is checked per open."""
    return os.path.realpath(root)
