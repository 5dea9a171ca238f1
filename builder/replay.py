"""Replaying a fully cached build: the fast path of ``pybuild build`` (issue 17).

A rebuild whose every step hits the cache does no work but checking; most of its
time is Python loading the parser, the engine and their libraries.  So when such a
build ends, what it depended on is recorded with what it printed; the next identical
invocation checks those inputs and, when none changed, prints the same output and
exits, before the command line, the parser or the engine are imported.

What a record is valid for, all compared exactly (any doubt: the normal build runs):

- the invocation: pybuild's code (version and every module's stat), the user, the
  working directory, argv and the whole environment;
- the store: a generation counter that SQLite triggers bump on every write to the
  tables a build reads (images, tags, cache entries, layers; ``store/schema.py``);
- the files the build read: the Dockerfile's and ignore file's bytes, the absence of
  the names looked for before them, the listing (names and lstat keys) of every
  context directory a COPY's checksum walked or a wildcard listed, the lstat key of
  every source and that every directory on its way is a real directory.

Builds whose result depends on more (a registry, secrets, stdin, named contexts,
exports, ``--reproducible``, a .dockerignore exception, a link on a source's way)
are never recorded: ``Recorder.refuse``.  Only plain and quiet progress is replayed
(a terminal's live view and the JSON streams carry timings).

This module is a leaf: it imports nothing from ``builder``, and the build's code
calls ``recording()`` to report what it reads.  The records live in the store
(``store/replays.py``); ``builder.entry`` puts the two together.  The key and the
Dockerfile check are digests: build-arg values and the environment are never stored.
"""

from __future__ import annotations

import os
import stat
import sys

# CPython's own sha256, without loading OpenSSL as hashlib does (~4 ms here), nor
# typing (~2 ms): this module is the whole of a replay.
try:
    from _sha256 import sha256  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # another Python
    from hashlib import sha256

_VERSION = b"replay-1"
STDOUT, STDERR = b"1", b"2"
# Check kinds (a record is a list of (kind, subject path, expected bytes)).
_FILE, _ABSENT, _LSTAT, _ISDIR, _LISTING, _NAMES = (b"file", b"absent", b"lstat", b"isdir",
                                                    b"listing", b"names")


def stat_key(name: str, st: os.stat_result) -> tuple[str, int, int, int, int]:
    """(name, mode, size, ctime_ns, inode): what a context checksum's directory summary
    and a replay's listing check both compare an entry by."""
    return (name, st.st_mode, st.st_size, st.st_ctime_ns, st.st_ino)


def listing_keys(fd: int, names: list[str]) -> list[tuple[str, int, int, int, int]]:
    """The ``stat_key`` of each entry of the directory open at ``fd``."""
    return [stat_key(name, os.lstat(name, dir_fd=fd)) for name in names]


def _lstat_key(path: str) -> bytes:
    st = os.lstat(path)
    return repr((st.st_mode, st.st_size, st.st_ctime_ns, st.st_ino)).encode()


def _path(path: str) -> bytes:
    return os.fsencode(path)


def _typed_names(path: str, names: list[str]) -> bytes:
    return repr([(name, stat.S_IFMT(os.lstat(os.path.join(path, name)).st_mode))
                 for name in names]).encode()


def _digest(data: bytes) -> bytes:
    return str(sha256(data).hexdigest()).encode()


class Recorder:
    """What one build read, as checks a replay repeats, and what it printed."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.checks: list[tuple[bytes, bytes, bytes]] = []
        self.output: list[tuple[bytes, str]] = []
        self.refused = ""        # why this build cannot be replayed ("" : it can)
        self.generation: int | None = None   # the store's, before the build read it
        self.streams = (sys.stdout, sys.stderr)   # restored by stop()

    def refuse(self, why: str) -> None:
        self.refused = self.refused or why

    def file(self, path: str, data: bytes) -> None:
        self.checks.append((_FILE, _path(path), b"%d:%s" % (len(data), _digest(data))))

    def absent(self, path: str) -> None:
        self.checks.append((_ABSENT, _path(path), b""))

    def source(self, context: str, rel: str) -> None:
        """A context source ``rel``, reached without links: every directory on its way
        stays a directory, and the source keeps its lstat key."""
        path = context
        for part in rel.split("/")[:-1] if rel != "." else []:
            path = os.path.join(path, part)
            self.checks.append((_ISDIR, _path(path), b""))
        host = context if rel == "." else os.path.join(context, rel)
        try:
            self.checks.append((_LSTAT, _path(host), _lstat_key(host)))
        except OSError:  # gone since the build found it: the build says so, or not
            self.refuse(f"{host}: changed during the build")

    def listing(self, path: str, keys: list[tuple[str, int, int, int, int]]) -> None:
        self.checks.append((_LISTING, _path(path), repr(keys).encode()))

    def names(self, path: str, names: list[str]) -> None:
        """A directory a wildcard listed: its names and their types (a match that
        becomes a directory or a link changes what the wildcard selects)."""
        try:
            self.checks.append((_NAMES, _path(path), _typed_names(path, names)))
        except OSError:  # changed since the wildcard listed it
            self.refuse(f"{path}: changed during the build")

    def entry(self, path: str) -> None:
        """A path a wildcard met that is not a directory to list (or not there)."""
        try:
            self.checks.append((_LSTAT, _path(path), _lstat_key(path)))
        except FileNotFoundError:
            self.absent(path)
        except OSError:  # ENOTDIR, EACCES...: nothing a replay could compare
            self.refuse(f"{path}: cannot be checked")


_active: Recorder | None = None


def recording() -> Recorder | None:
    """The recorder of the build under way, if it may be replayed."""
    return _active


def start(argv: list[str]) -> Recorder:
    """Record the build of ``argv`` (the command's arguments): what it reads, and
    what it prints from now on."""
    global _active
    _active = recorder = Recorder(argv)
    if not can_play():
        recorder.refuse("a standard stream is closed")
        return recorder
    sys.stdout = Tee(sys.stdout, STDOUT, recorder)
    sys.stderr = Tee(sys.stderr, STDERR, recorder)
    return recorder


def stop(recorder: Recorder) -> None:
    global _active
    _active = None
    sys.stdout, sys.stderr = recorder.streams


class Tee:
    """A text stream that also keeps what is written to it (the build's output)."""

    def __init__(self, stream: object, fd: bytes, recorder: Recorder) -> None:
        self._stream, self._fd, self._recorder = stream, fd, recorder

    def write(self, text: str) -> int:
        self._recorder.output.append((self._fd, text))
        return self._stream.write(text)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:  # flush, isatty, fileno, encoding...
        return getattr(self._stream, name)


# ---------------------------------------------------------------- the record

def invocation(argv: list[str]) -> str:
    """Everything about this process a build could depend on, digested: the record's
    key (argv and the environment hold build-arg values and tokens, never stored).
    Whether each standard stream is a terminal is in it: ``--progress auto`` and
    ``BUILDKIT_PROGRESS`` choose by that.  OSError: no working directory."""
    terminals = [str(stream is not None and stream.isatty()).encode()
                 for stream in (sys.stdin, sys.stdout, sys.stderr)]
    parts = [_VERSION, _code_stamp(), os.fsencode(sys.executable), sys.version.encode(),
             *terminals, _invoking_uid(), os.fsencode(os.getcwd()),
             *(os.fsencode(a) for a in argv), b"\1",
             *sorted(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in os.environ.items())]
    return str(sha256(b"\0".join(parts)).hexdigest())


def _invoking_uid() -> bytes:
    """The host's uid of whoever runs pybuild: rootless mode records inside its user
    namespace (uid 0 there, builder.userns) what is looked up outside it.  Read here,
    not from builder.userns: a replay loads nothing else."""
    uid = os.geteuid()
    if uid == 0:
        with open("/proc/self/uid_map", "rb") as f:
            for row in f.read().splitlines():
                inside, outside, _ = row.split()
                if inside == b"0":
                    return outside
    return str(uid).encode()


def _code_stamp() -> bytes:
    """Every module of pybuild's stat, and the import path's directories': an upgrade
    (of pybuild or a library) or an edit makes every record stale."""
    top = os.path.dirname(os.path.abspath(__file__))
    stamps, todo = [], [top]
    while todo:
        directory = todo.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat(follow_symlinks=False)
                    stamps.append(f"{entry.path}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_size}")
                elif entry.is_dir(follow_symlinks=False) and entry.name != "__pycache__":
                    todo.append(entry.path)
    stamps.sort()
    for directory in sys.path:  # pip installing or removing a library moves its mtime
        if not directory.endswith(("site-packages", "dist-packages")):
            continue
        try:
            st = os.stat(directory)
        except OSError:
            continue
        stamps.append(f"{directory}:{st.st_mtime_ns}:{st.st_ino}")
    return "\n".join(stamps).encode(errors="surrogateescape")


def _encode(items: list[tuple[bytes, ...]]) -> bytes:
    out = bytearray()
    for item in items:
        out += b"%d:" % len(item)
        for field in item:
            out += b"%d:" % len(field)
            out += field
    return bytes(out)


def _decode(data: bytes) -> list[tuple[bytes, ...]]:
    items, at = [], 0
    while at < len(data):
        colon = data.index(b":", at)
        count, at = int(data[at:colon]), colon + 1
        fields = []
        for _ in range(count):
            colon = data.index(b":", at)
            size, at = int(data[at:colon]), colon + 1
            fields.append(data[at:at + size])
            at += size
        items.append(tuple(fields))
    return items


def record_of(recorder: Recorder) -> tuple[bytes, bytes]:
    """(checks, output) of a recorded build, as the store keeps them."""
    output = [(fd, text.encode(errors="surrogateescape")) for fd, text in recorder.output]
    return _encode(list(recorder.checks)), _encode(list(output))


# ---------------------------------------------------------------- the replay

def holds(checks: bytes) -> bool:
    """Does every check of a record hold now?  Anything unreadable: no."""
    try:
        return all(_check(kind, os.fsdecode(subject), expected)
                   for kind, subject, expected in _decode(checks))
    except (OSError, ValueError):
        return False


def can_play() -> bool:
    """A closed stdout or stderr (None in Python): the build decides what that does."""
    return sys.stdout is not None and sys.stderr is not None


def play(output: bytes) -> None:
    """Print a record's output, in its order, on the streams it went to."""
    for fd, data in _decode(output):
        stream = sys.stdout if fd == STDOUT else sys.stderr
        stream.write(data.decode(errors="surrogateescape"))
        stream.flush()


def may_be_build(argv: list[str]) -> bool:
    """Could this be ``pybuild build`` (a cheap filter: other commands skip the lookup)?"""
    return "build" in argv or any(a.startswith(("-t", "--tag")) for a in argv)


def store_root(argv: list[str]) -> str:
    """The store root as ``pybuild.cli`` finds it (``store.names.default_root``): a wrong
    guess only finds no record, as a record's key holds the whole argv."""
    for i, arg in enumerate(argv):
        if arg == "--root" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--root="):
            return arg[len("--root="):]
    if env := os.environ.get("PYBUILD_ROOT"):
        return env
    if os.geteuid() == 0:
        return "/var/lib/pybuild"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "pybuild")


def _check(kind: bytes, path: str, expected: bytes) -> bool:
    if kind == _LISTING:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            return repr(listing_keys(fd, sorted(os.listdir(fd)))).encode() == expected
        finally:
            os.close(fd)
    if kind == _LSTAT:
        return _lstat_key(path) == expected
    if kind == _ISDIR:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    if kind == _ABSENT:
        return not os.path.lexists(path)
    if kind == _FILE:
        size, _, digest = expected.partition(b":")
        # Never through a link (the build refuses one that leaves the context) and never
        # a device or FIFO: only the regular file the build read.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != int(size):
                return False
            return _digest(os.read(fd, int(size) + 1)) == digest
        finally:
            os.close(fd)
    if kind == _NAMES:
        return _typed_names(path, sorted(os.listdir(path))) == expected
    return False
