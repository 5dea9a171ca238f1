"""The records of fully cached builds (``builder.replay`` says what is in them and
when one may be used): found by the invocation's digest, valid while the store's
generation (``schema``: bumped by triggers on every write to the tables a build
reads) is the one they were made at.

Read by the fast path of ``pybuild`` before anything else is loaded: this module
imports only ``sqlite3`` (the package's ``__init__`` loads the rest lazily).
"""

from __future__ import annotations

import os
import sqlite3


def load(root: str, key: str) -> tuple[bytes, bytes] | None:
    """(checks, output) of the record ``key`` if it is valid at the store's current
    generation; None if there is none, or the store cannot tell (missing, older)."""
    path = os.path.join(root, "pybuild.db")
    if not os.path.isfile(path):
        return None
    try:  # read-write, though it only reads: as the last connection it removes the
        # -wal and -shm files on close, as a build does (read-only, it would leave them)
        db = sqlite3.connect(path, timeout=5, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT r.checks, r.output FROM replays r JOIN store_generation g "
                         "ON r.generation = g.n WHERE r.invocation = ?", (key,)).fetchone()
    except sqlite3.Error:  # a store from before the replays table
        row = None
    finally:
        db.close()
    return None if row is None else (bytes(row[0]), bytes(row[1]))


def generation(db: sqlite3.Connection) -> int:
    """The store's generation now: read before a build reads the store, it is what the
    build's record is valid for (a write during the build, by anyone, outdates it)."""
    return int(db.execute("SELECT n FROM store_generation").fetchone()[0])


def save(db: sqlite3.Connection, key: str, at: int, checks: bytes, output: bytes) -> None:
    """Keep a record valid at generation ``at`` (``db``: the store's, autocommit)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        # A generation only grows: a record made at another one can never hold again,
        # and one made now for an earlier one (the build itself wrote) is not kept.
        if generation(db) == at:
            db.execute("DELETE FROM replays WHERE generation != ?", (at,))
            db.execute("INSERT OR REPLACE INTO replays VALUES (?, ?, ?, ?)",
                       (key, at, checks, output))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
