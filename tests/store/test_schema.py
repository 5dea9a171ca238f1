"""The store's schema: one definition, numbered migrations (``builder.store.schema``).

A store made before migrations existed (``user_version`` 0, every table there, the old
``value_digests`` marker) must open and migrate cleanly, rows intact; a new store starts
at the latest version; a process that cannot scrub old values (it never imported the
cache) stops before that migration and a later one finishes it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from builder.store import schema
from builder.store.store import Store

# The tables as pybuild wrote them before builder/store/schema.py (issue 16): spread
# over store.py, cache/records.py and explain/records.py, with no user_version.
_OLD_TABLES = """
CREATE TABLE layers (chain_id TEXT PRIMARY KEY, diff_id TEXT NOT NULL, parent TEXT,
    size INTEGER NOT NULL, short TEXT NOT NULL UNIQUE, epoch INTEGER, created REAL NOT NULL);
CREATE TABLE packed_layers (chain_id TEXT PRIMARY KEY, diff_id TEXT NOT NULL, parent TEXT,
    size INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE layer_blobs (diff_id TEXT NOT NULL, compression TEXT NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, media_type TEXT NOT NULL,
    PRIMARY KEY (diff_id, compression));
CREATE TABLE images (id TEXT PRIMARY KEY, top_chain TEXT, created REAL NOT NULL);
CREATE TABLE tags (name TEXT PRIMARY KEY, image_id TEXT NOT NULL REFERENCES images(id));
CREATE TABLE value_digests (version INTEGER NOT NULL);
CREATE TABLE cache_entries (key TEXT PRIMARY KEY, parent TEXT NOT NULL, slot TEXT NOT NULL,
    inputs TEXT NOT NULL, chain_id TEXT, created TEXT NOT NULL, changes TEXT NOT NULL,
    recorded REAL NOT NULL);
CREATE TABLE stat_cache (path TEXT PRIMARY KEY, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, digest TEXT NOT NULL);
"""
_IMAGE = "sha256:" + "a" * 64
_KEY = "sha256:" + "c" * 64


def _old_store(root: Path, *, digested: bool) -> None:
    root.mkdir(mode=0o700)
    db = sqlite3.connect(root / "pybuild.db")
    db.executescript(_OLD_TABLES)
    if digested:
        db.executescript("INSERT INTO value_digests VALUES (1); "
                         "INSERT INTO value_digests VALUES (2);")
    db.execute("INSERT INTO images VALUES (?, NULL, 1.0)", (_IMAGE,))
    db.execute("INSERT INTO tags VALUES ('app:latest', ?)", (_IMAGE,))
    inputs = [["parent", "p"], ["env", "TOKEN=hunter2-secret"]]
    db.execute("INSERT INTO cache_entries VALUES (?, 'p', 's', ?, NULL, '', '{}', 1.0)",
               (_KEY, json.dumps(inputs)))
    db.commit()
    db.close()


def _version(root: Path) -> int:
    db = sqlite3.connect(root / "pybuild.db")
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _tables(store: Store) -> set[str]:
    return {row[0] for row in store.db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_new_store_starts_at_the_latest_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    assert {"layers", "cache_entries", "stat_cache", "builds"} <= _tables(store)
    store.close()
    assert _version(tmp_path / "s") == schema.LATEST


def test_a_pre_migration_store_migrates_with_its_rows(tmp_path: Path) -> None:
    import builder.cache.records  # noqa: F401 - registers the scrubbers, as the CLI does

    root = tmp_path / "old"
    _old_store(root, digested=True)
    store = Store(root)
    assert store.resolve_tag("app") == _IMAGE
    assert "builds" in _tables(store) and "value_digests" not in _tables(store)
    # Already digested by the older pybuild (value_digests says so): rows left as they were.
    from builder.store import records

    row = records.cache_row(store, _KEY)
    assert row is not None and "hunter2-secret" in row.inputs
    store.close()
    assert _version(root) == schema.LATEST


def test_old_plain_values_are_digested_once_the_cache_is_there(tmp_path: Path) -> None:
    root = tmp_path / "old"
    _old_store(root, digested=False)
    # A process that never imported the cache cannot scrub: it stops after migration 1.
    code = textwrap.dedent(f"""
        import sys
        from builder.store.store import Store
        store = Store({str(root)!r})
        store.resolve_tag("app")
        assert "builder.cache.records" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert _version(root) == 1
    assert b"hunter2-secret" in b"".join(p.read_bytes() for p in root.glob("pybuild.db*"))
    subprocess.run([sys.executable, "-c", "import builder.cache.records\n" + code.replace(
        'assert "builder.cache.records" not in sys.modules', "store.close()")], check=True)
    assert _version(root) == schema.LATEST
    assert b"hunter2-secret" not in b"".join(p.read_bytes() for p in root.glob("pybuild.db*"))


def test_two_processes_migrate_an_old_store_at_once(tmp_path: Path) -> None:
    root = tmp_path / "old"
    _old_store(root, digested=False)
    code = textwrap.dedent(f"""
        import builder.cache.records
        from builder.store.store import Store
        store = Store({str(root)!r})
        assert store.resolve_tag("app") is not None
        store.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert _version(root) == schema.LATEST
