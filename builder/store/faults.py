"""Crash points for fault-injection tests: ``PYBUILD_FAULT_POINT=NAME:N``.

When the variable is set, the N-th time this process reaches ``point(NAME)`` it
sends itself SIGKILL: a crash at a known place, with no Python cleanup, no
``finally`` and no atexit, exactly what ``kill -9`` or an OOM kill would do.
Unset (always, outside tests), ``point`` is one dictionary lookup.

The points (each named where it is reached):

    blob:renamed      a blob's temp file is fsynced, renamed into blobs/sha256/
    layer:locked      a layer commit holds the store lock, nothing moved yet
    layer:renamed     the layer dir is renamed into layers/, its short link made,
                      the SQLite row not yet written
    export:layer      an image archive has had a layer header written, not its body
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("PYBUILD_FAULT_POINT", "")
_NAME, _, _COUNT = _SPEC.rpartition(":")
_WANTED = int(_COUNT) if _COUNT.isdigit() else 0
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Die here (SIGKILL) if ``PYBUILD_FAULT_POINT`` names this point and count."""
    if not _WANTED or name != _NAME:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == _WANTED:
        os.kill(os.getpid(), signal.SIGKILL)
