"""The store's root and its database connection: open (and migrate, and sweep) on first
use, transactions, and the store lock that layer commits and the sweeper share."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from builder.store import perms, schema
from builder.store.names import default_root
from builder.store.tmpdir import TmpDir, remove_tree, sweep_tmp

_OPEN_STORES: weakref.WeakSet[Database] = weakref.WeakSet()
_INHERITED: list[sqlite3.Connection] = []


SNAPSHOTTER = "snapshotter"  # a file in the root: recorded_snapshotter


def _forget_connections_in_child() -> None:
    """SQLite connections must not cross fork(): a child opens its own on first use.

    The inherited ones are kept referenced (never closed: closing could touch the
    parent's WAL and locks) and die with the child.
    """
    for store in list(_OPEN_STORES):
        if store._db is not None:
            _INHERITED.append(store._db)
            store._db = None


os.register_at_fork(after_in_child=_forget_connections_in_child)


def _alive(pid: int) -> bool:
    """Whether a process with this PID exists (a reused PID only delays a sweep)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wal_mode(conn: sqlite3.Connection) -> None:
    """WAL, waiting for another process's exclusive hold: SQLite answers "locked" at
    once, without its busy timeout, while another process migrates an old
    rollback-journal store (its VACUUM holds the file)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Database:
    """The root directory and its SQLite database.  Cheap to construct; the database
    opens on first use of ``db``.

    ``db`` (a property), ``_db`` (the open connection or None) and ``_owner`` (the PID
    that sweeps on open; -1 for none) are the hooks a per-thread store overrides
    (``builder.store.threads``); ``sweeps_on_open`` False makes a view that never sweeps."""

    sweeps_on_open = True

    def __init__(self, root: str | os.PathLike[str] | None = None):
        # Absolute: mounts and overlay options are made from other working directories.
        self.root = Path(os.path.abspath(root if root is not None else default_root()))
        self._db: sqlite3.Connection | None = None
        self._owner = os.getpid()  # only the opening process sweeps, not its children
        _OPEN_STORES.add(self)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            perms.open_root(self.root)  # 0700, whatever the umask or an old store's modes
            # SQLite gives -wal and -shm the database's mode: make it 0600 first.
            perms.private_file(self.root / "pybuild.db")
            conn = sqlite3.connect(self.root / "pybuild.db", timeout=60, isolation_level=None)
            _wal_mode(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            schema.migrate(conn)
            self._db = conn
            if self.sweeps_on_open and os.getpid() == self._owner:
                self.sweep()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def integrity_check(self) -> list[str]:
        """SQLite's own check: ``["ok"]``, or what is wrong (``doctor``)."""
        return [str(row[0]) for row in self.db.execute("PRAGMA integrity_check").fetchall()]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def store_lock(self) -> Iterator[None]:
        """Serialises layer commits against the sweeper, ``prune`` and ``doctor``,
        across processes."""
        fd = os.open(self.root / "lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Remove what a dead process left half-done: unlocked tmp dirs, unrecorded layers."""
        if self._db is None:
            self.db  # noqa: B018 - opening the database sweeps
            return
        sweep_tmp(self.root / "tmp")
        # Half-written blobs: ".incoming-<pid>-<random>", left by a process that died.
        for entry in (self.root / "blobs").glob(".incoming-*"):
            pid = entry.name.split("-")[1]
            if not (pid.isdigit() and _alive(int(pid))):
                entry.unlink(missing_ok=True)
        with self.store_lock():
            known = {row[0].split(":", 1)[1] for row in
                     self.db.execute("SELECT chain_id FROM layers")}
            for entry in (self.root / "layers").iterdir():
                if entry.name not in known:
                    remove_tree(entry)
            for link in (self.root / "l").iterdir():
                if not link.exists():
                    link.unlink()

    def recorded_snapshotter(self) -> str | None:
        """The snapshot driver this store chose when it was first probed (rootless
        mode: builder.snapshot), or None."""
        self.db  # noqa: B018 - the root is checked and its layout made
        try:
            with open(self.root / SNAPSHOTTER, encoding="ascii", errors="replace") as f:
                return f.read(64).strip() or None
        except FileNotFoundError:
            return None

    def record_snapshotter(self, name: str) -> None:
        """Keep ``name`` for every later build (written whole, then renamed in)."""
        work = self.tmp_dir("snapshotter")
        try:
            staged = work.path / SNAPSHOTTER
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(name + "\n")
            os.rename(staged, self.root / SNAPSHOTTER)
        finally:
            work.release()

    def tmp_dir(self, prefix: str = "work") -> TmpDir:
        self.db  # noqa: B018 - make sure the layout exists
        name = f"{prefix}-{os.getpid()}-{os.urandom(6).hex()}"  # secrets.token_hex's bytes
        return TmpDir(self.root / "tmp" / name)
