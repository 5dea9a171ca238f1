"""The store as one of several threads of a process uses it, while others fork.

SQLite connections are per thread, so each thread that reads or writes the
store opens its own view with :func:`thread_store`.  Threads of one build also
fork children (a RUN sandbox, a COPY helper) that open the database
themselves; if another thread held one of SQLite's process-wide mutexes at the
instant of fork(), the child would inherit it locked and hang.  So every
SQLite call of a thread view holds :data:`FORK_GUARD` shared, and fork() holds
it exclusively (``os.register_at_fork`` below).

Only the database connection is guarded; everything else a thread view does
is the plain :class:`~builder.store.store.Store`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

from builder.store.store import Store

# One row as sqlite3 returns it (the store's tables hold text, integers and blobs).
Row = tuple[object, ...]


class ForkGuard:
    """No fork() while another thread is inside SQLite.

    SQLite calls hold the guard shared (they never wait for each other: a
    transaction spans several calls); fork() holds it exclusively.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0

    # ``with FORK_GUARD:`` holds it shared (a plain context manager: it wraps every query).
    def __enter__(self) -> None:
        with self._cond:
            self._readers += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()
        while self._readers:
            self._cond.wait()

    def after_fork_in_parent(self) -> None:
        self._cond.release()

    def after_fork_in_child(self) -> None:
        # The child has one thread: nobody else can be inside SQLite there.
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0


FORK_GUARD = ForkGuard()
os.register_at_fork(before=FORK_GUARD.before_fork,
                    after_in_parent=FORK_GUARD.after_fork_in_parent,
                    after_in_child=FORK_GUARD.after_fork_in_child)


class GuardedCursor:
    """A cursor whose fetches hold the fork guard (a fetch steps the statement)."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def fetchone(self) -> Row | None:
        with FORK_GUARD:
            row: Row | None = self._cursor.fetchone()
            return row

    def fetchall(self) -> list[Row]:
        with FORK_GUARD:
            return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def description(self) -> object:
        return self._cursor.description


class GuardedConnection:
    """A thread view's SQLite connection: every call under the fork guard.

    It offers the part of :class:`sqlite3.Connection` the store's modules use.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str,
                parameters: Sequence[object] | Mapping[str, object] = ()) -> GuardedCursor:
        with FORK_GUARD:
            return GuardedCursor(self._conn.execute(sql, parameters))

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> GuardedCursor:
        with FORK_GUARD:
            return GuardedCursor(self._conn.executemany(sql, rows))

    def executescript(self, script: str) -> GuardedCursor:
        with FORK_GUARD:
            return GuardedCursor(self._conn.executescript(script))

    def commit(self) -> None:
        with FORK_GUARD:
            self._conn.commit()

    def close(self) -> None:
        with FORK_GUARD:
            self._conn.close()

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    @property
    def total_changes(self) -> int:
        return self._conn.total_changes


class ThreadStore(Store):
    """A thread's own view of a store another object of this process opened.

    It opens its own connection (connections are per thread), guarded against
    forks from other threads, and never sweeps: the process's main view swept
    tmp/ when it opened, and a sweep from here would look at other threads'
    work dirs while they start.
    """

    sweeps_on_open = False

    @property
    def db(self) -> sqlite3.Connection:
        # The guarded proxy answers every call the store makes on its connection;
        # typed as the connection so that Store's methods accept it unchanged.
        return cast(sqlite3.Connection, GuardedConnection(super().db))

    def close(self) -> None:
        with FORK_GUARD:
            super().close()


def thread_store(root: Path) -> ThreadStore:
    """A view of the store at ``root`` for the calling thread; close it when the thread ends."""
    return ThreadStore(root)


__all__ = ["FORK_GUARD", "ForkGuard", "GuardedConnection", "ThreadStore", "thread_store"]
