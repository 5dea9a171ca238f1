"""Writing beneath an output directory, never through a symlink.

An export's destination (``-o type=local``, ``-o type=oci|docker,tar=false``,
``--cache-to type=local``) is named by the user, so its own path is trusted
and followed like any path the user types.  What is already *inside* it is
not: the dir may have been prepared by someone else, or left by an earlier
export of a hostile image (``blobs/sha256 -> /etc``, ``index.json ->
/etc/passwd``, a hardlink of a host file).  So below it:

* every directory is opened from the output dir's fd with
  ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)``, or, where the kernel
  lacks openat2, one ``O_DIRECTORY | O_NOFOLLOW`` component at a time; a
  symlink (or a non-directory) in the way is an ``UnsafeOutput`` error that
  names it, and nothing is created past it;
* a file is written under a fresh temp name (``O_CREAT | O_EXCL |
  O_NOFOLLOW``) and renamed over the old name, so an existing hardlink is
  replaced rather than written through, and a failed write leaves no partial
  file; a symlink or directory at the final name is refused.

Nothing resolved is kept between calls: each lookup starts at the root fd.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable
from typing import BinaryIO

from builder import syscalls
from builder.errors import PybuildError

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_RESOLVE = syscalls.RESOLVE_BENEATH | syscalls.RESOLVE_NO_SYMLINKS
# openat2 takes one path string: past this, the walk (any depth) takes over.
_OPENAT2_MAX = 4000

use_openat2 = True  # cleared when the kernel (or a seccomp filter) refuses it


class UnsafeOutput(PybuildError):
    """Something below an output directory that pybuild will not write through."""


def components(rel: str | bytes) -> list[bytes]:
    """``a/b/c`` -> ``[b"a", b"b", b"c"]``; ``..`` and absolute names are refused
    (every name here comes from pybuild itself, so this is a programming error)."""
    raw = os.fsencode(rel)
    comps = [c for c in raw.split(b"/") if c not in (b"", b".")]
    if raw.startswith(b"/") or b".." in comps:
        raise ValueError(f"not a relative name below an output directory: {rel!r}")
    return comps


def open_beneath(root_fd: int, comps: list[bytes], *, create: bool = False,
                 refuse: Callable[[list[bytes], str], Exception] | None = None) -> int | None:
    """A read fd for the directory ``comps`` below ``root_fd``, never through a symlink.

    With ``create``, missing directories are made (mode 0777 less the umask,
    as ``mkdir -p``).  Without, None when a component is missing.  A symlink or
    non-directory in the way raises ``refuse(comps_so_far, what)``.
    """
    global use_openat2
    if not comps:
        return os.dup(root_fd)
    joined = b"/".join(comps)
    if use_openat2 and len(joined) < _OPENAT2_MAX:
        try:
            return syscalls.openat2(root_fd, joined, _O_DIR, _RESOLVE)
        except OSError as err:
            if err.errno in (errno.ENOSYS, errno.EPERM):
                use_openat2 = False
            # Anything else (ENOENT, ELOOP, EXDEV, EAGAIN...): the walk below
            # settles it and names the component that is in the way.
    return _walk(root_fd, comps, create, refuse or _default_refuse)


def _default_refuse(comps: list[bytes], what: str) -> Exception:
    return UnsafeOutput(f"{os.fsdecode(b'/'.join(comps))} {what}")


def _walk(root_fd: int, comps: list[bytes], create: bool,
          refuse: Callable[[list[bytes], str], Exception]) -> int | None:
    fd = os.dup(root_fd)
    try:
        for depth, comp in enumerate(comps):
            nxt = _step(fd, comp, create)
            if nxt is None:
                return None
            if nxt < 0:
                raise refuse(comps[:depth + 1], _what_is(fd, comp))
            os.close(fd)
            fd = nxt
        result, fd = fd, -1
        return result
    finally:
        if fd >= 0:
            os.close(fd)


def _step(fd: int, comp: bytes, create: bool) -> int | None:
    """The directory ``comp`` of ``fd`` (made if missing and ``create``); None if
    missing, -1 if something else is in the way."""
    for _ in range(2):
        try:
            return os.open(comp, _O_DIR, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                return None
            # Made meanwhile (EEXIST): open it, O_NOFOLLOW again, on the second round.
            with contextlib.suppress(FileExistsError):
                os.mkdir(comp, 0o777, dir_fd=fd)
        except NotADirectoryError:
            return -1
    return -1


def _what_is(fd: int, name: bytes) -> str:
    try:
        st = os.lstat(name, dir_fd=fd)
    except OSError:
        return "is not a directory"
    return "is a symlink" if stat.S_ISLNK(st.st_mode) else "is not a directory"


class OutputDir:
    """An output directory named by the user, and safe writes beneath it.

    ``what`` names the export in errors (``--cache-to``, ``-o type=oci``).
    """

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = os.fspath(path)
        self.what = what
        try:
            os.makedirs(self.path, exist_ok=True)  # the user's own path: followed, as typed
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise UnsafeOutput(f"{what} {self.path}: cannot use it as an output directory: "
                               f"{err.strerror}") from None

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def refuse(self, comps: list[bytes], what: str) -> UnsafeOutput:
        name = os.fsdecode(b"/".join(comps))
        return UnsafeOutput(f"{self.what} {self.path}: {name} {what}; pybuild never writes "
                            "through it (remove it, or use another dest)")

    def open_dir(self, comps: list[bytes], *, create: bool = True) -> int | None:
        return open_beneath(self.fd, comps, create=create, refuse=self.refuse)

    def dir_fd(self, comps: list[bytes]) -> int:
        """``open_dir`` with ``create``: never None."""
        fd = self.open_dir(comps, create=True)
        assert fd is not None
        return fd

    def has_blob(self, rel: str, digest: str, size: int) -> bool:
        """Whether ``rel`` is already the blob ``digest`` (``size`` bytes, an earlier
        export's).  Its bytes are hashed, read through an fd opened beneath the
        dir without following links: a file someone planted there with the right
        size and other bytes is not the blob, and is replaced.  A symlink there is
        refused."""
        comps = components(rel)
        dfd = self.open_dir(comps[:-1], create=False)
        if dfd is None:
            return False
        try:
            st = os.lstat(comps[-1], dir_fd=dfd)
            if stat.S_ISLNK(st.st_mode):
                raise self.refuse(comps, "is a symlink")
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                return False
            # O_NONBLOCK: swapped for a FIFO since the lstat, the open must not hang.
            fd = os.open(comps[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC | os.O_NOCTTY, dir_fd=dfd)
        except OSError:  # gone, or swapped for a link since: write() settles it
            return False
        finally:
            os.close(dfd)
        with os.fdopen(fd, "rb") as f:
            return stat.S_ISREG(os.fstat(f.fileno()).st_mode) and _sha256(f, size) == digest

    def write(self, rel: str, write: Callable[[BinaryIO], object]) -> None:
        """Write the file ``rel`` with ``write(file)``; it appears (renamed into
        place) only once ``write`` returns."""
        comps = components(rel)
        dfd = self.dir_fd(comps[:-1])
        try:
            self._check_final(dfd, comps)
            temp = b".%s.pybuild-%d-%s" % (comps[-1][:64], os.getpid(),
                                           secrets.token_hex(4).encode())
            fd = os.open(temp, _O_TEMP, 0o666, dir_fd=dfd)
            done = False
            try:
                with os.fdopen(fd, "wb") as out:
                    write(out)
                self._check_final(dfd, comps)
                os.rename(temp, comps[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
                done = True
            finally:
                if not done:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temp, dir_fd=dfd)
        finally:
            os.close(dfd)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.write(rel, lambda out: out.write(data))

    def _check_final(self, dfd: int, comps: list[bytes]) -> None:
        # rename() would replace a symlink without following it; refusing it
        # anyway tells the user their dest holds something planted.
        try:
            st = os.lstat(comps[-1], dir_fd=dfd)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise self.refuse(comps, "is a symlink")
        if stat.S_ISDIR(st.st_mode):
            raise self.refuse(comps, "is a directory")

    def make_room(self, dfd: int, comps: list[bytes], *, is_dir: bool) -> bool:
        """Clear the final name of ``comps`` (open as ``dfd``) for a new entry of a
        tree being exported; True when a directory is already there to merge into.

        A non-directory there is unlinked (the entry itself, never what a link
        points to), so exporting over an earlier export replaces its files and
        links; a symlink where a directory goes, or a directory where a file
        goes, is refused: the first would lead out, the second is the user's.
        """
        name = comps[-1]
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True
            raise self.refuse(comps, "is a directory where the image has a file")
        if is_dir and stat.S_ISLNK(st.st_mode):
            raise self.refuse(comps, "is a symlink where the image has a directory")
        os.unlink(name, dir_fd=dfd)
        return False


def _sha256(f: BinaryIO, size: int) -> str:
    """The digest of at most ``size`` + 1 bytes of ``f`` (a file that grew is no match)."""
    hasher, seen = hashlib.sha256(), 0
    while seen <= size and (chunk := f.read(min(1 << 20, size + 1 - seen))):
        hasher.update(chunk)
        seen += len(chunk)
    return "sha256:" + hasher.hexdigest() if seen == size else ""
