"""Content checksums of build-context sources, for cache keys.

A COPY step's key covers exactly what it selects: for every entry under each
source, its relative path, type, permission bits, link target and content
digest; never mtimes, inode numbers or owners (owners in the context are the
builder's, not the image's).  Reading contents is the expensive part, so a
``StatCache`` remembers (path, size, mtime, inode) -> digest and a rebuild
reads only files whose stat changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import Protocol

import msgspec

from builder import interrupt, limits
from builder.errors import ContextError

_CHUNK = 1 << 20
_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "char",
          stat.S_IFBLK: "block"}


class StatCache(Protocol):
    def preload(self, directory: str) -> None: ...
    def get(self, path: str, st: os.stat_result) -> str | None: ...
    def put(self, path: str, st: os.stat_result, digest: str) -> None: ...


class SourceChecksum(msgspec.Struct):
    digest: str                                  # sha256 over every entry below
    files: dict[str, str] = msgspec.field(default_factory=dict)   # rel path -> entry (first few)
    # Every entry when there are more than ``files`` keeps: explain's manifest of a
    # large source (``cache.manifests``), so a changed file is named whatever its dir.
    overflow: list[tuple[str, str]] | None = None
    read_bytes: int = 0                          # content actually read (stat-cache misses)


class EntryDigest:
    """The running digest over ``(path, entry)`` records that a COPY key's content is.

    The checksum pass and the copy itself both feed one (the copy with the bytes it
    really wrote), so a context changed between the two is caught (catalogue K: a key
    naming content A over a layer holding B would poison every later build)."""

    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, rel: str, kind: str, mode: int, content: str) -> str:
        """Record one entry; returns its text (``kind mode content``)."""
        entry = f"{kind} {mode:o} {content}"
        self._hash.update(f"{len(rel)}:{rel}\0{len(entry)}:{entry}\0".encode(
            errors="surrogateescape"))
        return entry

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def kind_of(mode: int) -> str:
    return _TYPES.get(stat.S_IFMT(mode), "other")


def file_digest(path: str, st: os.stat_result, cache: StatCache | None) -> tuple[str, int]:
    """sha256 of a regular file's content, from the stat cache when its stat is unchanged."""
    if cache is not None and (known := cache.get(path, st)) is not None:
        return known, 0
    hasher = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        while chunk := os.read(fd, _CHUNK):
            interrupt.check()  # a stage thread: a stopping build ends it mid-file
            hasher.update(chunk)
    finally:
        os.close(fd)
    digest = "sha256:" + hasher.hexdigest()
    if cache is not None:
        cache.put(path, st, digest)
    return digest, st.st_size


Skip = Callable[[str, str, bool], bool]
"""``skip(source_rel, rel, is_dir)``: leave an entry below a source out (.dockerignore,
COPY --exclude); ``source_rel`` is the source it was found under."""


def _walk(host: str, source_rel: str,
          skip: Skip) -> Iterator[tuple[str, str, os.stat_result]]:
    # Iterative pre-order, children sorted by name: the order COPY copies in, so the
    # copy can recompute the same digest (EntryDigest).  A context 4,096 directories
    # deep must not hit Python's recursion limit (X07, X11).  One lstat per entry.
    stack = [(source_rel, host)]
    while stack:
        rel, host = stack.pop()
        st = os.lstat(host)
        yield rel, host, st
        if not stat.S_ISDIR(st.st_mode):
            continue
        with os.scandir(host) as it:
            entries = sorted(it, key=lambda e: e.name)
        children = []
        for entry in entries:
            entry_rel = f"{rel}/{entry.name}" if rel != "." else entry.name
            if not skip(source_rel, entry_rel, entry.is_dir(follow_symlinks=False)):
                children.append((entry_rel, entry.path))
        stack.extend(reversed(children))


def checksum_sources(sources: list[tuple[str, str]], *, cache: StatCache | None = None,
                     skip: Skip = lambda source, rel, is_dir: False,
                     keep_files: int = 5000) -> SourceChecksum:
    """Checksum ``(relative path, host path)`` sources, each followed if it is a link.

    Entries below a source are not followed (symlinks are hashed as links), as
    COPY copies them.  ``skip`` drops .dockerignore'd and --exclude'd entries.
    An empty host path means the source did not resolve inside its root.
    """
    # A source that resolves to nothing (a link pointing out of the context) or
    # an entry that vanishes while it is read (a context changed during the
    # build, C03/C04) is a one-line error, never a traceback.
    for source_rel, source_host in sources:
        if not source_host:
            raise ContextError(f'"/{source_rel}": not found in the build context')
    try:
        return _checksum_sources(sources, cache, skip, keep_files)
    except OSError as err:
        where = err.filename or "build context"
        raise ContextError(f"{where}: {err.strerror} (did the build context change during "
                           "the build?)") from None


def _checksum_sources(sources: list[tuple[str, str]], cache: StatCache | None,
                      skip: Skip, keep_files: int) -> SourceChecksum:
    total = EntryDigest()
    result = SourceChecksum(digest="")
    max_files = limits.get().max_context_files
    count = 0
    for source_rel, source_host in sources:
        if cache is not None and os.path.isdir(source_host):
            cache.preload(source_host)
        for rel, host, lst in _walk(source_host, source_rel, skip):
            interrupt.check()
            count += 1
            if count > max_files:  # X11: a context of millions of files
                raise ContextError(f"build context: more than {max_files} files under "
                                   f"{source_rel!r} (raise it with "
                                   f"{limits.env_name('max_context_files')}, or .dockerignore "
                                   "them)")
            st = os.stat(host) if rel == source_rel else lst  # a source is followed
            kind = kind_of(st.st_mode)
            if kind == "file":
                content, read = file_digest(host, st, cache)
                result.read_bytes += read
            elif kind == "symlink":
                content = os.readlink(host)
            else:
                content = ""
            entry = total.add(rel, kind, stat.S_IMODE(st.st_mode), content)
            if result.overflow is not None:
                result.overflow.append((rel, entry))
            elif len(result.files) < keep_files:
                result.files[rel] = entry
            else:
                result.overflow = [*result.files.items(), (rel, entry)]
    result.digest = total.digest()
    return result
