"""Content checksums of build-context sources, for cache keys.

A COPY step's key covers exactly what it selects: for every entry under each
source, its relative path, type, permission bits, link target and content
digest; never mtimes, inode numbers or owners (owners in the context are the
builder's, not the image's).  Reading contents is the expensive part, so a
``StatCache`` remembers (path, size, ctime, inode) -> digest and a rebuild
reads only files whose stat changed.

A no-op rebuild of a large context must not even do Python work per file beyond
its lstat (issue 17): each directory's summary (``DirSummary``: every entry's stat
key, and the digest records of the entries kept, as bytes) is stored, and a
directory whose listing and stat keys are unchanged feeds its stored records to
the digest whole.  A changed directory is summed again, taking each unchanged
file's digest from its old summary.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import Protocol

import msgspec

from builder import interrupt, limits, replay
from builder.errors import ContextError

_CHUNK = 1 << 20
_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "char",
          stat.S_IFBLK: "block"}


class StatCache(Protocol):
    def preload(self, directory: str) -> None: ...
    def get(self, path: str, st: os.stat_result) -> str | None: ...
    def put(self, path: str, st: os.stat_result, digest: str) -> None: ...
    def dir_summaries(self, directory: str) -> dict[tuple[str, str], bytes]: ...
    def put_dir_summary(self, path: str, scope: str, summary: bytes) -> None: ...


class SourceChecksum:
    """The digest of the sources, the first ``keep_files`` entries (they go into the
    step's inputs), and every entry on demand (explain's manifest of a large source)."""

    __slots__ = ("_pieces", "count", "digest", "files", "keep_files", "read_bytes")

    def __init__(self, digest: str, pieces: list[_Piece], count: int, read_bytes: int,
                 keep_files: int) -> None:
        self.digest = digest              # sha256 over every entry below
        self.count = count                # entries, sources included
        self.read_bytes = read_bytes      # content actually read (stat-cache misses)
        self.keep_files = keep_files
        self._pieces = pieces
        self.files: dict[str, str] = {}   # rel path -> entry, the first keep_files
        for rel, entry in self._entries():
            if len(self.files) >= keep_files:
                break
            self.files[rel] = entry

    @property
    def large(self) -> bool:
        """More entries than ``files`` keeps: explain needs the manifest
        (``cache.manifests``) to name a changed file whatever its directory."""
        return self.count > self.keep_files

    def entries(self) -> list[tuple[str, str]]:
        return list(self._entries())

    def _entries(self) -> Iterator[tuple[str, str]]:
        for prefix, names, entries, start, end in self._pieces:
            for i in range(start, end):
                yield prefix + names[i], entries[i]


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
        entry = entry_text(kind, mode, content)
        self._hash.update(record(rel, entry))
        return entry

    def add_records(self, records: bytes) -> None:
        """Entries already encoded by ``record``, in order."""
        self._hash.update(records)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def entry_text(kind: str, mode: int, content: str) -> str:
    """One entry as the digest and explain's manifest name it: ``kind mode content``."""
    return f"{kind} {mode:o} {content}"


def record(rel: str, entry: str) -> bytes:
    """One entry as the digest reads it."""
    return f"{len(rel)}:{rel}\0{len(entry)}:{entry}\0".encode(errors="surrogateescape")


def kind_of(mode: int) -> str:
    return _TYPES.get(stat.S_IFMT(mode), "other")


def file_digest(path: str, st: os.stat_result, cache: StatCache | None,
                dir_fd: int | None = None) -> tuple[str, int]:
    """sha256 of a regular file's content, from the stat cache when its stat is unchanged.
    With ``dir_fd``, ``path``'s last component is opened in that directory (a parent
    swapped for a link since it was listed cannot redirect the read)."""
    if cache is not None and (known := cache.get(path, st)) is not None:
        return known, 0
    hasher = hashlib.sha256()
    name = path if dir_fd is None else path.rpartition("/")[2]
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                 dir_fd=dir_fd)
    try:
        # The file read must be the one whose stat keys the digest (not another put in
        # its place since): else the stat cache would keep the other one's digest.
        if os.fstat(fd).st_ino != st.st_ino:
            raise OSError(errno.ESTALE, "replaced while being read", path)
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


def checksum_sources(sources: list[tuple[str, str]], *, cache: StatCache | None = None,
                     skip: Skip = lambda source, rel, is_dir: False,
                     skip_identity: str | None = None,
                     keep_files: int = 5000) -> SourceChecksum:
    """Checksum ``(relative path, host path)`` sources, each followed if it is a link.

    Entries below a source are not followed (symlinks are hashed as links), as
    COPY copies them.  ``skip`` drops .dockerignore'd and --exclude'd entries;
    ``skip_identity`` names what it drops (the patterns: a directory summed under
    other patterns is summed anew; "" for nothing); None (the default) when it cannot
    be named: no directory summary is used then.  An empty host path means the source
    did not resolve inside its root.
    """
    # A source that resolves to nothing (a link pointing out of the context) or
    # an entry that vanishes while it is read (a context changed during the
    # build, C03/C04) is a one-line error, never a traceback.
    for source_rel, source_host in sources:
        if not source_host:
            raise ContextError(f'"/{source_rel}": not found in the build context')
    summer = _Summer(cache, skip, skip_identity, keep_files)
    with reading_the_context():
        for source_rel, source_host in sources:
            summer.source(source_rel, source_host)
    return summer.result()


@contextlib.contextmanager
def reading_the_context() -> Iterator[None]:
    """An OSError while the build context is resolved or read (an entry that vanishes
    or changes kind, a component swapped for a link: a context changed during the
    build, C03/C04) as a one-line ContextError naming the path, never an internal
    error."""
    try:
        yield
    except OSError as err:
        where = os.fsdecode(err.filename or "build context")
        raise ContextError(f"{where}: {err.strerror} (did the build context change during "
                           "the build?)") from None


# ---------------------------------------------------------------- directory summaries

StatKey = tuple[str, int, int, int, int]
"""An entry as a directory summary knows it: (name, st_mode, size, ctime_ns, inode).
The ctime, not the mtime (K04): every write, chmod or utime moves it, no caller sets it."""

_Piece = tuple[str, list[str], list[str], int, int]
"""Entries in digest order: (rel prefix, names, entry texts, start, end)."""


class DirSummary(msgspec.Struct, array_like=True):
    """A directory as last summed: every entry's ``StatKey`` (the kept and the skipped,
    in name order), the kept entries' names and texts, and their digest records as
    runs of bytes, each run but the last ending with a kept subdirectory's record
    (that subdirectory's own entries follow it in the digest)."""

    keys: list[StatKey]
    kept: list[str]
    entries: list[str]
    runs: list[bytes]
    subdirs: list[int]            # index in ``kept`` of the subdirectory ending each run


_decode_summary = msgspec.msgpack.Decoder(DirSummary).decode
_encode_summary = msgspec.msgpack.Encoder().encode


_Dir = tuple[str, str, "int | None"]
"""A directory to walk: (rel, host path, the inode its parent's listing gave)."""


class _Run:
    __slots__ = ("piece", "records")

    def __init__(self, records: bytes, piece: _Piece) -> None:
        self.records, self.piece = records, piece


class _Summer:
    """One checksum: the digest over the sources' entries, walked in COPY's order
    (pre-order, names sorted; iterative, as a context 4,096 directories deep must not
    hit Python's recursion limit: X07, X11)."""

    def __init__(self, cache: StatCache | None, skip: Skip, identity: str | None,
                 keep_files: int) -> None:
        self.cache, self.skip, self.keep_files = cache, skip, keep_files
        self.identity = identity if cache is not None else None
        self.total = EntryDigest()
        self.pieces: list[_Piece] = []
        self.count = self.read_bytes = 0
        self.max_files = limits.get().max_context_files
        self.source_rel = self.source_host = ""
        self.summaries: dict[tuple[str, str], bytes] = {}
        self.stats_loaded = False

    def result(self) -> SourceChecksum:
        return SourceChecksum(self.total.digest(), self.pieces, self.count, self.read_bytes,
                              self.keep_files)

    def source(self, source_rel: str, source_host: str) -> None:
        if not os.path.isabs(source_host):  # summaries are found by absolute path
            source_host = os.path.join(os.getcwd(), source_host)
        self.source_rel, self.source_host = source_rel, source_host
        self.stats_loaded = False
        st = os.stat(source_host)  # a source is followed
        self._count(1)
        kind = kind_of(st.st_mode)
        content = self._file(source_host, st) if kind == "file" else ""
        entry = self.total.add(source_rel, kind, stat.S_IMODE(st.st_mode), content)
        self.pieces.append(("", [source_rel], [entry], 0, 1))
        if kind != "dir":
            return
        if self.identity is not None and self.cache is not None:
            self.summaries = self.cache.dir_summaries(source_host)
        work: list[_Run | _Dir] = [(source_rel, source_host, None)]
        while work:
            item = work.pop()
            if isinstance(item, _Run):
                self.total.add_records(item.records)
                self.pieces.append(item.piece)
            else:
                work.extend(reversed(self._directory(*item)))

    def _count(self, entries: int) -> None:
        self.count += entries
        if self.count > self.max_files:  # X11: a context of millions of files
            raise ContextError(f"build context: more than {self.max_files} files under "
                               f"{self.source_rel!r} (raise it with "
                               f"{limits.env_name('max_context_files')}, or .dockerignore "
                               "them)")

    def _file(self, host: str, st: os.stat_result, dir_fd: int | None = None) -> str:
        if self.cache is not None and not self.stats_loaded:
            self.cache.preload(self.source_host)  # the rows below the source, one query
            self.stats_loaded = True
        content, read = file_digest(host, st, self.cache, dir_fd)
        self.read_bytes += read
        return content

    def _directory(self, rel: str, host: str, inode: int | None) -> list[_Run | _Dir]:
        """The work a directory adds: its runs of records, and its kept subdirectories.
        ``inode``: what its parent's listing said it is (None: a source, followed)."""
        interrupt.check()  # a stage thread: a stopping build ends it between directories
        nofollow = os.O_NOFOLLOW if inode is not None else 0
        fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | nofollow | os.O_CLOEXEC)
        try:
            # By path, so a parent swapped for a link since its listing would open a
            # directory elsewhere: it must be the one the listing named.
            if inode is not None and os.fstat(fd).st_ino != inode:
                raise OSError(errno.ESTALE, "replaced while being read", host)
            names = sorted(os.listdir(fd))
            stats = _lstat_all(fd, host, names)
            keys = [replay.stat_key(name, st) for name, st in zip(names, stats, strict=True)]
            if (recorder := replay.recording()) is not None:
                recorder.listing(host, keys)
            scope = f"{self.identity}\0{self.source_rel}\0{rel}"
            summary = self._stored(host, scope, names)
            if summary is None or summary.keys != keys:
                summary = self._sum(rel, host, fd, stats, keys, summary)
                if self.identity is not None and self.cache is not None:
                    self._keep(host, scope, summary)
        finally:
            os.close(fd)
        self._count(len(summary.kept))
        return _work(rel, host, summary)

    def _keep(self, host: str, scope: str, summary: DirSummary) -> None:
        if self.cache is None:
            return
        # A name that is not UTF-8 cannot be encoded: that directory is summed every time.
        with contextlib.suppress(UnicodeEncodeError, msgspec.EncodeError):
            self.cache.put_dir_summary(host, scope, _encode_summary(summary))

    def _stored(self, host: str, scope: str, names: list[str]) -> DirSummary | None:
        raw = self.summaries.get((host, scope))
        if raw is None:
            return None
        try:
            summary = _decode_summary(raw)
        except msgspec.DecodeError:  # unreadable (not ours): summed anew, then replaced
            return None
        # Never trusted beyond its shape: a kept name (a subdirectory walked next) must
        # be in this very listing, so no stored row can lead the walk elsewhere.
        runs, subdirs = len(summary.runs), summary.subdirs
        if len(summary.kept) != len(summary.entries) or runs != len(subdirs) + 1 or \
                not set(summary.kept) <= set(names) or \
                any(not 0 <= i < len(summary.kept) for i in subdirs) or \
                subdirs != sorted(set(subdirs)):
            return None
        return summary

    def _sum(self, rel: str, host: str, fd: int, stats: list[os.stat_result],
             keys: list[StatKey], old: DirSummary | None) -> DirSummary:
        prefix = f"{rel}/" if rel != "." else ""
        known = _known_entries(old)
        summary = DirSummary(keys, [], [], [], [])
        run = bytearray()
        for key, st in zip(keys, stats, strict=True):
            name, child = key[0], prefix + key[0]
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.skip(self.source_rel, child, is_dir):
                continue
            entry = known.get(key)
            if entry is None:
                kind = kind_of(st.st_mode)
                content = ""
                if kind == "file":
                    content = self._file(f"{host}/{name}", st, fd)
                elif kind == "symlink":
                    content = _at(fd, host, name, os.readlink)
                entry = f"{kind} {stat.S_IMODE(st.st_mode):o} {content}"
            summary.kept.append(name)
            summary.entries.append(entry)
            run += record(child, entry)
            if is_dir:
                summary.runs.append(bytes(run))
                summary.subdirs.append(len(summary.kept) - 1)
                run.clear()
        summary.runs.append(bytes(run))
        return summary


def _lstat_all(fd: int, host: str, names: list[str]) -> list[os.stat_result]:
    try:
        return [os.lstat(name, dir_fd=fd) for name in names]
    except OSError as err:  # the error names the whole path, not the bare name
        raise OSError(err.errno, err.strerror, f"{host}/{err.filename}") from None


def _at(fd: int, host: str, name: str, call: Callable[..., str]) -> str:
    try:
        return call(name, dir_fd=fd)
    except OSError as err:
        raise OSError(err.errno, err.strerror, f"{host}/{name}") from None


def _known_entries(old: DirSummary | None) -> dict[StatKey, str]:
    """The entry texts an old summary holds, by stat key: an unchanged file's digest."""
    if old is None:
        return {}
    key_of = {key[0]: key for key in old.keys}
    return {key_of[name]: entry for name, entry in zip(old.kept, old.entries, strict=True)
            if name in key_of}


def _work(rel: str, host: str, summary: DirSummary) -> list[_Run | _Dir]:
    prefix = f"{rel}/" if rel != "." else ""
    inode_of = {key[0]: key[4] for key in summary.keys}
    work: list[_Run | _Dir] = []
    start = 0
    for i, records in enumerate(summary.runs):
        below = summary.subdirs[i] if i < len(summary.subdirs) else None
        end = len(summary.kept) if below is None else below + 1
        work.append(_Run(records, (prefix, summary.kept, summary.entries, start, end)))
        if below is not None:
            name = summary.kept[below]
            work.append((prefix + name, f"{host}/{name}", inode_of[name]))
        start = end
    return work
