"""Cache entries and the stat cache, in the store's SQLite database.

An entry's inputs are recorded as ``keys.recorded_inputs`` makes them: build-arg
values only as digests.  ``forget_plain_values`` cleans a store written by an
older pybuild, which kept them in clear, the first time it is opened.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass

from builder.cache.keys import DIGESTED_MARK, Inputs, is_digest, legacy_inputs, same_value
from builder.store.store import ON_OPEN, Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    slot TEXT NOT NULL,
    inputs TEXT NOT NULL,
    chain_id TEXT,
    created TEXT NOT NULL,
    changes TEXT NOT NULL,
    recorded REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_by_parent ON cache_entries (parent, slot);
CREATE INDEX IF NOT EXISTS cache_by_slot ON cache_entries (slot, recorded);
CREATE TABLE IF NOT EXISTS stat_cache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    digest TEXT NOT NULL
);
"""
_SHOWN = 3  # how many differing inputs a miss explanation names
_SAME = "inputs equal an earlier run's, but its layer is gone (pruned)"
# An entry an older pybuild recorded for a step that changed nothing: it made no layer,
# where BuildKit (and pybuild now) makes the empty one; never used, the step runs again.
_LEGACY = ("an older pybuild recorded this step without a layer (a step that changes "
           "nothing now makes the empty layer, as BuildKit's)")


@dataclass
class CacheEntry:
    key: str
    parent: str
    slot: str                 # where the step sits: "<dockerfile>:<stage>:<index>"
    inputs: Inputs
    chain_id: str | None      # the layer chain after the step (ends in its own layer)
    created: str              # the history "created" of the original run
    changes: dict             # added/modified/deleted/bytes, for explain


class CacheStore:
    """Cache entries keyed by step key, plus the context stat cache."""

    def __init__(self, store: Store):
        self.store = store
        self._ready = False
        self._pending_stats: list[tuple] = []

    @property
    def db(self):  # type: ignore[no-untyped-def]
        db = self.store.db
        if not self._ready:
            db.executescript(_SCHEMA)
            self._ready = True
        return db

    def lookup(self, key: str) -> CacheEntry | None:
        row = self.db.execute(
            "SELECT key, parent, slot, inputs, chain_id, created, changes "
            "FROM cache_entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        entry = CacheEntry(row[0], row[1], row[2],
                           legacy_inputs([tuple(i) for i in json.loads(row[3])]),
                           row[4], row[5], json.loads(row[6]))
        if not entry.changes.get("layer"):
            return None  # an older pybuild's: no layer for an unchanged step (see _LEGACY)
        if entry.chain_id is not None and not self.store.has_layer(entry.chain_id):
            return None  # the layer was pruned: the entry is useless
        return entry

    def record(self, entry: CacheEntry) -> None:
        """Store ``entry``; inputs without the digested mark (an entry imported from an
        older pybuild's export) have their values digested first."""
        inputs = legacy_inputs(entry.inputs)
        self.db  # noqa: B018 - the schema, created outside the transaction
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO cache_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (entry.key, entry.parent, entry.slot, json.dumps(inputs),
                        entry.chain_id, entry.created, json.dumps(entry.changes), time.time()))

    def explain_miss(self, parent: str, slot: str, inputs: Inputs) -> str:
        """Why no entry matched: diff the inputs (as recorded: ``recorded_inputs``) against
        the closest earlier run of this step.  Build-arg values are never named."""
        row = self.db.execute(
            "SELECT inputs, changes FROM cache_entries WHERE parent = ? AND slot = ? "
            "ORDER BY recorded DESC LIMIT 1", (parent, slot)).fetchone()
        if row is None:
            row = self.db.execute(
                "SELECT inputs, changes FROM cache_entries WHERE parent = ? "
                "ORDER BY recorded DESC LIMIT 1", (parent,)).fetchone()
        if row is None:
            earlier = self.db.execute("SELECT 1 FROM cache_entries WHERE slot = ? LIMIT 1",
                                      (slot,)).fetchone()
            if earlier is not None:
                return "the step before it changed (a miss above, or a different base image)"
            return "not built before"
        reason = describe_difference(legacy_inputs([tuple(i) for i in json.loads(row[0])]),
                                     inputs)
        if reason == _SAME and not json.loads(row[1]).get("layer"):
            return _LEGACY
        return reason

    # -- the stat cache: context path + stat -> content digest ------------------
    # The "mtime_ns" column holds the ctime (K04): a same-size rewrite with its
    # mtime put back (touch -d, tar -x, a clock step) keeps the mtime, but every
    # write, chmod, link or utime moves the ctime, which no caller can set.
    def get(self, path: str, st: os.stat_result) -> str | None:
        row = self.db.execute("SELECT size, mtime_ns, ino, digest FROM stat_cache "
                              "WHERE path = ?", (path,)).fetchone()
        if row is not None and row[:3] == (st.st_size, st.st_ctime_ns, st.st_ino):
            return row[3]
        return None

    def put(self, path: str, st: os.stat_result, digest: str) -> None:
        self._pending_stats.append((path, st.st_size, st.st_ctime_ns, st.st_ino, digest))

    def flush_stats(self) -> None:
        if not self._pending_stats:
            return
        self.db  # noqa: B018 - the schema, created outside the transaction
        with self.store.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO stat_cache VALUES (?, ?, ?, ?, ?)",
                           self._pending_stats)
        self._pending_stats.clear()


def _short(value: str, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _grouped(inputs: Inputs) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in inputs:
        if (name, value) == DIGESTED_MARK:
            continue
        if name in ("env", "arg", "file"):
            sub, _, rest = value.partition("=")
            out[f"{name} {sub}"] = rest
        else:
            out[name] = value
    return out


def describe_difference(old: Inputs, new: Inputs) -> str:
    """Name the inputs that differ, e.g. ``env HOME: '/a' -> '/b'``, ``arg TOKEN changed``
    or ``file app.py changed``.  A build arg, or any value recorded as a digest, is only
    said to have changed: its values are not kept."""
    salt = next((value for name, value in new if name == "parent"), "")
    before, after = _grouped(old), _grouped(new)
    reasons = []
    for name in [*after, *(n for n in before if n not in after)]:
        if name in before and name in after and same_value(before[name], after[name], salt):
            continue
        opaque = name.startswith(("file ", "arg ")) or any(
            is_digest(values.get(name, "")) for values in (before, after))
        if opaque:
            what = ("added" if name not in before else "removed" if name not in after
                    else "changed")
            reasons.append(f"{name} {what}")
        elif name not in before:
            reasons.append(f"{name} added: {_short(after[name])}")
        elif name not in after:
            reasons.append(f"{name} removed (was {_short(before[name])})")
        else:
            reasons.append(f"{name}: {_short(before[name])} -> {_short(after[name])}")
    if not reasons:
        return _SAME
    more = f" (and {len(reasons) - _SHOWN} more)" if len(reasons) > _SHOWN else ""
    return "; ".join(reasons[:_SHOWN]) + more


# -- stores written before values were digested ---------------------------------
# Version 1: rows rewritten; version 2: the file vacuumed too, so no freed page (nor
# the WAL) still holds an old value.  A store made by this version starts at 2.
_DONE = 2


def forget_plain_values(db: sqlite3.Connection) -> None:
    """Digest the build-arg values an older pybuild left in clear (cache entry inputs,
    explain notes), then rewrite the file without them.  Runs as any store opens (in a
    process that imported this module: the CLI, a build); after the first time it costs
    one query."""
    db.execute("CREATE TABLE IF NOT EXISTS value_digests (version INTEGER NOT NULL)")
    row = db.execute("SELECT max(version) FROM value_digests").fetchone()
    if row[0] is not None and row[0] >= _DONE:
        return
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")}
    if row[0] is None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM value_digests").fetchone() is None:
                _rewrite_rows(db, tables)
                db.execute("INSERT INTO value_digests VALUES (1)")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    if tables & {"cache_entries", "builds"}:
        try:  # another process reading the store makes VACUUM wait, then give up
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            return  # the next open tries again
    db.execute("INSERT INTO value_digests VALUES (?)", (_DONE,))


def _rewrite_rows(db: sqlite3.Connection, tables: set[str]) -> None:
    if "cache_entries" in tables:
        for key, raw in db.execute("SELECT key, inputs FROM cache_entries").fetchall():
            try:
                inputs = [(str(n), str(v)) for n, v in json.loads(raw)]
            except (ValueError, TypeError):  # unreadable: useless, and it may hold a value
                db.execute("DELETE FROM cache_entries WHERE key = ?", (key,))
                continue
            cleaned = legacy_inputs(inputs)
            if cleaned != inputs:
                db.execute("UPDATE cache_entries SET inputs = ? WHERE key = ?",
                           (json.dumps(cleaned), key))
    if "builds" in tables:
        from builder.explain.records import forget_note_values

        forget_note_values(db)


ON_OPEN.append(forget_plain_values)
