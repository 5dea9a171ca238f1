"""Reading files someone else wrote: an OCI layout given to ``load -i`` or ``--cache-from``.

Everything in such a directory is hostile until proven otherwise (catalogue
M05, M06, M08; security.md "cache imports").  A file is opened beneath the
directory one component at a time with ``O_NOFOLLOW`` (no symlink anywhere,
so ``blobs/sha256/<hex> -> /dev/zero`` or ``blobs -> /`` is refused), the last
one as an ``O_PATH`` fd that must be a regular file before it is reopened for
reading through ``/proc/self/fd`` (a FIFO cannot hang the open, a device is
never opened).  Reads stop at the size ``fstat`` gave, so a file that
grows while read is cut where it was.  JSON is parsed strictly with a bounded
size and nesting depth.  Every refusal is a ``StoreError`` naming the
directory and the file, one line.

A leaf module beside ``limits``: the standard library, ``errors``, ``limits``
and ``textsafe`` only.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import msgspec

from builder.errors import StoreError

MAX_DOCUMENT = 4 << 20    # an index or manifest, as a registry's (registry/transport.py)
MAX_DEPTH = 64            # JSON nesting; real OCI documents nest fewer than 10 levels
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def shown(text: str, limit: int = 80) -> str:
    """``text`` from the input, safe to print in a message: control characters (ESC,
    BEL, CR...) made visible by ``textsafe.printable``, cut at ``limit``."""
    from builder.textsafe import printable

    return printable(text[:limit] + ("..." if len(text) > limit else ""))


class BoundedFile(io.RawIOBase):
    """A regular file opened beneath an untrusted directory; reads stop at ``size``."""

    def __init__(self, fd: int, size: int, what: str):
        self.fd = fd
        self.size = size
        self.left = size
        self.what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self.left)]
        n = os.readv(self.fd, [view])
        self.left -= n
        return n

    def close(self) -> None:
        if not self.closed and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()


class UntrustedDir:
    """A directory whose files are opened beneath it, never through a symlink.

    ``path`` itself is the user's choice and may be reached through symlinks;
    nothing below it may be.
    """

    def __init__(self, path: str | Path, what: str | None = None):
        self.path = Path(path)
        self.what = what or str(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise StoreError(f"{self.what}: {err.strerror}") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> UntrustedDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refuse(self, name: str, why: str) -> StoreError:
        return StoreError(f"{self.what}: {shown(name)}: {why}")

    def open(self, name: str) -> BoundedFile:
        """``name`` (``a/b/c``, plain components only) as a bounded regular file."""
        try:
            fd = self._open_fd(name)
        except FileNotFoundError:
            raise self._refuse(name, "missing") from None
        except OSError as err:
            raise self._refuse(name, _why(err)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._refuse(name, f"not a regular file ({_kind(st.st_mode)}); refused")
            # Reopened through the O_PATH fd: the very inode just checked, and a FIFO or
            # a device is never opened for reading (no hang, no side effect of open).
            data_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        finally:
            os.close(fd)
        return BoundedFile(data_fd, st.st_size, f"{self.what}: {name}")

    def _open_fd(self, name: str) -> int:
        parts = name.split("/")
        if not all(_NAME.match(part) and part not in (".", "..") for part in parts):
            raise self._refuse(name, "not a plain relative file name")
        fd = self.fd
        for part in parts[:-1]:
            fd = _step(fd, part, _O_DIR, self.fd)
        return _step(fd, parts[-1], _O_PATH, self.fd)

    def exists(self, name: str) -> bool:
        """Whether ``name`` is there at all, of any type (``open`` says what is wrong)."""
        try:
            os.close(self._open_fd(name))
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return True

    def read(self, name: str, limit: int, size: int | None = None) -> bytes:
        """The whole of a small file: at most ``limit`` bytes, exactly ``size`` if given."""
        with self.open(name) as f:
            if f.size > limit:
                raise self._refuse(name, f"{f.size} bytes, more than the limit of {limit}")
            if size is not None and f.size != size:
                raise self._refuse(name, f"{f.size} bytes, its descriptor says {size}")
            return f.read()


class Budget(msgspec.Struct):
    """What one untrusted source (an archive, a layout, a cache) may make us parse.

    Callers parse each distinct document once (by digest or name); this caps
    what is left: how many manifests the source lists, and the JSON bytes read
    in all (``limits.md``), so a 4 MiB index naming one 13 MB document 48 000
    times is refused, not parsed 48 000 times.
    """

    parsed: int = 0

    def manifests(self, count: int, where: str) -> None:
        from builder import limits

        cap = limits.get().max_manifests
        if count > cap:
            raise StoreError(f"{where}: lists {count} manifests, more than the limit of "
                             f"{cap} (raise it with {limits.env_name('max_manifests')})")

    def charge(self, size: int, where: str) -> None:
        """Count ``size`` more bytes to be parsed; refuse past the source's cap."""
        from builder import limits

        cap = limits.get().max_parsed_bytes
        self.parsed += size
        if self.parsed > cap:
            raise StoreError(f"{where}: more than {cap} bytes of JSON to parse from "
                             f"this source (raise it with "
                             f"{limits.env_name('max_parsed_bytes')})")


def check_room(directory: str | Path, size: int, what: str) -> None:
    """Refuse a blob that cannot fit (with the free space a store keeps, limits.md):
    a sparse 1 TB "blob" or a lying size must not fill the disk while it is copied."""
    from builder import limits

    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize - limits.get().min_free_bytes
    if size > free:
        raise StoreError(f"{what}: {size} bytes, more than the free space of {directory}")


def _step(at: int, part: str, flags: int, root: int) -> int:
    """Open ``part`` relative to ``at`` and close ``at`` (unless it is the root)."""
    try:
        return os.open(part, flags, dir_fd=at)
    finally:
        if at != root:
            os.close(at)


def _why(err: OSError) -> str:
    import errno

    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a symlink or not a directory on the way; refused"
    return err.strerror or str(err)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a file"


def parse_json(data: bytes, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON (no duplicate keys, no NaN) nested at most ``max_depth`` deep (M05)."""
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError("duplicate keys")
        return result

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        doc = json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except RecursionError:  # the C scanner stops at the interpreter's recursion limit
        raise StoreError(f"{what}: JSON nested too deeply") from None
    except ValueError as err:
        raise StoreError(f"{what}: not valid JSON: {shown(str(err))}") from None
    if _depth(doc) > max_depth:
        raise StoreError(f"{what}: JSON nested more than {max_depth} levels deep")
    return doc


def _depth(doc: Any) -> int:
    """How deep containers nest (iteratively: no recursion on hostile input)."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in value
                         if isinstance(item, (dict, list)))
    return deepest


def need(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is a ``kind`` (bool is never an int here), else a one-line error."""
    if isinstance(value, kind) and not (isinstance(value, bool) and bool not in
                                        (kind if isinstance(kind, tuple) else (kind,))):
        return value
    shown_type = type(value).__name__ if value is not None else "missing"
    raise StoreError(f"{what}: expected {_names(kind)}, found {shown_type}")


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def need_digest(value: Any, what: str) -> str:
    """A ``sha256:<64 hex>`` digest, checked before it goes into any path (M03)."""
    text: str = need(value, str, what)
    if not _DIGEST.match(text):
        raise StoreError(f"{what}: invalid digest {shown(text)!r}")
    return text


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {dict: "an object", list: "a list", str: "a string", int: "an integer",
             bool: "true or false"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)
