"""Manifests of large COPY sources: every entry's path and (shortened) entry, by the
sources' content digest, so that explain names a changed file in a directory of any
size.  A key records at most 5,000 ``file`` inputs (``context.checksum``); past that a
miss could only say that the content changed.

A manifest is zlib-compressed JSON ``[[path, "kind mode content16"], ...]``: the content
digest is cut to 16 hex digits (enough to tell a change; the key itself uses the full
digest), so 100,000 files take about 2 MB.  The store keeps the newest few.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

from builder.cache.reasons import Reason, ReasonCode
from builder.store import records
from builder.store.database import Database

_SHORT = 16
_MAX_BYTES = 512 << 20  # a manifest inflating past this is not ours: ignored


def _short(entry: str) -> str:
    kind, _, rest = entry.partition(" ")
    mode, _, content = rest.partition(" ")
    if content.startswith("sha256:"):
        content = content[7:7 + _SHORT]
    return f"{kind} {mode} {content}"


def save(store: Database, digest: str, entries: Callable[[], list[tuple[str, str]]]) -> None:
    """Keep the manifest of ``digest`` (once: a no-op rebuild of a large context finds it
    stored, and neither lists nor encodes the entries)."""
    if records.has_manifest(store, digest):
        return
    data = json.dumps([[path, _short(entry)] for path, entry in entries()],
                      separators=(",", ":")).encode(errors="surrogateescape")
    records.put_manifest(store, digest, zlib.compress(data, 6))


def load(store: Database, digest: str) -> dict[str, str] | None:
    raw = records.manifest(store, digest)
    if raw is None:
        return None
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(raw, _MAX_BYTES)
        if inflater.unconsumed_tail:
            return None
        return {str(path): str(entry) for path, entry in json.loads(data)}
    except (zlib.error, ValueError, TypeError):
        return None


def file_reasons(old: dict[str, str], new: dict[str, str]) -> list[Reason]:
    """The files that differ between two manifests, as the step's file reasons."""
    from builder.cache.difference import file_reason

    reasons = []
    for path in [*new, *(p for p in old if p not in new)]:
        if old.get(path) != new.get(path):
            reasons.append(file_reason(path, old.get(path), new.get(path)))
    return reasons or [Reason(ReasonCode.CONTENT_CHANGED)]
