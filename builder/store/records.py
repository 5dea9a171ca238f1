"""The rows the layers above keep in the store: build cache entries, the context stat
cache, explain's build records and cached lint results.

The store owns the tables (``schema``) and every query on them; the cache and explain
own what the JSON columns hold (``inputs``, ``changes``, ``steps``), which the store
keeps as text and never reads.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import msgspec

from builder.store.database import Database


class CacheRow(msgspec.Struct, frozen=True):
    key: str
    parent: str
    slot: str                # where the step sits: "<dockerfile>:<stage>:<index>"
    inputs: str              # JSON, as the cache writes it
    chain_id: str | None     # the layer chain after the step
    created: str             # the history "created" of the original run
    changes: str             # JSON, as the cache writes it


class StatRow(msgspec.Struct, frozen=True):
    path: str
    size: int
    ctime_ns: int   # in the column named mtime_ns (see cache.records: K04)
    ino: int
    digest: str


_CACHE_COLUMNS = "key, parent, slot, inputs, chain_id, created, changes"


# -- cache entries --------------------------------------------------------------------
def cache_row(store: Database, key: str) -> CacheRow | None:
    row = store.db.execute(f"SELECT {_CACHE_COLUMNS} FROM cache_entries WHERE key = ?",
                           (key,)).fetchone()
    return None if row is None else CacheRow(*row)


def put_cache_row(store: Database, row: CacheRow) -> None:
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO cache_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (row.key, row.parent, row.slot, row.inputs, row.chain_id, row.created,
                    row.changes, time.time()))


def recent_cache_rows(store: Database, slot_prefix: str, limit: int) -> list[CacheRow]:
    """The rows last recorded in slots starting with ``slot_prefix`` (one project:
    explain's baseline for a miss), newest first."""
    rows = store.db.execute(f"SELECT {_CACHE_COLUMNS} FROM cache_entries "
                            "WHERE substr(slot, 1, ?) = ? ORDER BY recorded DESC LIMIT ?",
                            (len(slot_prefix), slot_prefix, limit))
    return [CacheRow(*row) for row in rows]


def cache_chains(store: Database) -> dict[str, str | None]:
    """Every entry's key and the layer chain it names (``prune``, ``doctor``)."""
    return dict(store.db.execute("SELECT key, chain_id FROM cache_entries"))


def drop_cache_rows(store: Database, keys: Iterable[str] | None = None) -> None:
    """Drop the entries for ``keys``; every entry if None (``prune --cache``)."""
    with store.transaction() as db:
        if keys is None:
            db.execute("DELETE FROM cache_entries")
        else:
            db.executemany("DELETE FROM cache_entries WHERE key = ?", [(k,) for k in keys])


# -- the stat cache ---------------------------------------------------------------------
StatKey = tuple[int, int, int]
"""What a stat cache row is valid for: (size, ctime_ns, inode)."""


def stat_digest(store: Database, path: str) -> tuple[StatKey, str] | None:
    """(its StatKey, digest) of one path, the shape ``stat_digests_below`` gives."""
    row = store.db.execute("SELECT size, mtime_ns, ino, digest FROM stat_cache "
                           "WHERE path = ?", (path,)).fetchone()
    return None if row is None else ((row[0], row[1], row[2]), row[3])


def stat_digests_below(store: Database, below: str) -> dict[str, tuple[StatKey, str]]:
    """path -> (its StatKey, digest) for every path starting with ``below`` (a directory,
    ending in "/"): one range scan of the primary key ("0" is the character after "/"),
    as plain tuples (100,000 rows are read per no-op rebuild of a large context)."""
    return {path: ((size, ctime_ns, ino), digest)
            for path, size, ctime_ns, ino, digest in store.db.execute(
                "SELECT path, size, mtime_ns, ino, digest FROM stat_cache WHERE path >= ? "
                "AND path < ?", (below, below[:-1] + "0"))}


def dir_summaries_below(store: Database, below: str) -> dict[tuple[str, str], bytes]:
    """(path, scope) -> summary of ``below`` (a directory, ending in "/") and of every
    directory under it: one range scan, as ``stat_digests_below``."""
    top = below.rstrip("/")
    return {(path, scope): summary for path, scope, summary in store.db.execute(
        "SELECT path, scope, summary FROM dir_summaries WHERE path = ? OR (path >= ? "
        "AND path < ?)", (top, below, below[:-1] + "0"))}


def put_dir_summaries(store: Database, rows: Iterable[tuple[str, str, bytes]]) -> None:
    with store.transaction() as db:
        db.executemany("INSERT OR REPLACE INTO dir_summaries VALUES (?, ?, ?)", rows)


def put_stat_rows(store: Database, rows: Iterable[StatRow]) -> None:
    with store.transaction() as db:
        db.executemany("INSERT OR REPLACE INTO stat_cache VALUES (?, ?, ?, ?, ?)",
                       [(r.path, r.size, r.ctime_ns, r.ino, r.digest) for r in rows])


def forget_context_paths(store: Database, *, everything: bool = False) -> None:
    """Drop the stat cache rows and directory summaries of context paths that are gone
    (a CI job's checkout directory, made anew for every job, would otherwise add a row
    per file per job for ever); every such row with ``everything``."""
    rows = [("stat_cache", path) for (path,) in store.db.execute("SELECT path FROM stat_cache")]
    rows += [("dir_summaries", path)
             for (path,) in store.db.execute("SELECT DISTINCT path FROM dir_summaries")]
    gone = [(table, path) for table, path in rows if everything or not os.path.lexists(path)]
    with store.transaction() as db:
        for table in ("stat_cache", "dir_summaries"):
            db.executemany(f"DELETE FROM {table} WHERE path = ?",
                           [(path,) for kind, path in gone if kind == table])


# -- explain's build records ------------------------------------------------------------
def put_build_steps(store: Database, image_id: str, steps: str) -> None:
    """``steps``: JSON, as explain writes it."""
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO builds VALUES (?, ?, ?)",
                   (image_id, time.time(), steps))


def build_steps(store: Database, image_id: str) -> str | None:
    row = store.db.execute("SELECT steps FROM builds WHERE image_id = ?",
                           (image_id,)).fetchone()
    return None if row is None else str(row[0])


def put_build_bases(store: Database, image_id: str, bases: str) -> None:
    """``bases``: JSON, as explain writes it."""
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO build_bases VALUES (?, ?)", (image_id, bases))


def build_bases(store: Database, image_id: str) -> str | None:
    row = store.db.execute("SELECT bases FROM build_bases WHERE image_id = ?",
                           (image_id,)).fetchone()
    return None if row is None else str(row[0])


# -- lint results (builder.lint owns what ``result`` holds) ---------------------------
def lint_result(store: Database, key: str) -> str | None:
    row = store.db.execute("SELECT result FROM lint_results WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def put_lint_result(store: Database, key: str, result: str) -> None:
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO lint_results VALUES (?, ?, ?)",
                   (key, result, time.time()))


# -- manifests of large COPY sources (builder.cache.manifests owns ``entries``) --------
MANIFESTS_KEPT = 16  # the newest few: a manifest of 100,000 files is about 2 MB


def put_manifest(store: Database, digest: str, entries: bytes) -> None:
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO content_manifests VALUES (?, ?, ?)",
                   (digest, entries, time.time()))
        db.execute("DELETE FROM content_manifests WHERE digest NOT IN (SELECT digest FROM "
                   "content_manifests ORDER BY recorded DESC LIMIT ?)", (MANIFESTS_KEPT,))


def has_manifest(store: Database, digest: str) -> bool:
    return store.db.execute("SELECT 1 FROM content_manifests WHERE digest = ?",
                            (digest,)).fetchone() is not None


def manifest(store: Database, digest: str) -> bytes | None:
    row = store.db.execute("SELECT entries FROM content_manifests WHERE digest = ?",
                           (digest,)).fetchone()
    return None if row is None else bytes(row[0])
