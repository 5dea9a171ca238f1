"""``pybuild load`` without ``-i`` (or with ``-i -``): the archive comes on stdin,
as ``docker load`` reads it (docker/cli ``cli/command/image/load.go``).

The loader reads members by name, in any order, so the stream is spooled first
to a private file in the store's ``tmp/`` (a TmpDir: removed when done, swept if
the process dies), chunk by chunk and never whole in memory, keeping the free
space the store keeps for itself (``limits.min_free_bytes``, ``check_room``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from builder.errors import UsageError
from builder.store.store import Store

STDIN = "-"
_CHUNK = 1 << 20
SHOWN = "stdin"  # how messages name the spooled archive


@contextmanager
def archive_input(store: Store, name: str | None, stdin: BinaryIO) -> Iterator[tuple[str, str]]:
    """``(path to open, name for messages)`` for ``-i NAME``; stdin when ``name`` is
    None or ``-``, spooled to a temp file that is removed on the way out."""
    if name is not None and name != STDIN:
        yield name, name
        return
    if stdin.isatty():  # docker: "requested load from stdin, but stdin is empty"
        raise UsageError("requested load from stdin, but stdin is a terminal: pipe an "
                         "archive in ('pybuild load < app.tar') or name it with -i FILE")
    work = store.tmp_dir("load")
    try:
        path = work.path / "stdin.tar"
        if not spool(stdin, str(path), store):
            raise UsageError("requested load from stdin, but stdin is empty")
        yield str(path), SHOWN
    finally:
        work.release()


def spool(src: BinaryIO, path: str, store: Store) -> int:
    """Copy ``src`` to a new private file at ``path``; returns the bytes written."""
    from builder.untrusted import check_room

    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            check_room(store.root, len(chunk), f"{SHOWN}: the archive after {written} bytes")
            out.write(chunk)
            written += len(chunk)
    return written
