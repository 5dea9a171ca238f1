"""The store's SQLite schema, defined once, and the numbered migrations that reach it.

``PRAGMA user_version`` is the number of the last migration a database has had.  Each
open reads it (one query); a database behind runs the missing migrations in order,
each in its own ``BEGIN IMMEDIATE`` transaction that first reads the version again, so
two processes opening an old store at once migrate it once.  A new database gets the
tables and the latest version in one transaction.  Stores made before migrations
existed have version 0 and every table already: migration 1 only adds what is missing.

Every table the store has, and its columns (the code that reads them is in this package:
``layers``, ``blobs``, ``images`` and ``records``):

    layers         extracted layers: chain ID, diff_id, parent, tar size, l/ link, epoch
    packed_layers  pulled layers whose blob is not extracted yet
    layer_blobs    a layer's blobs, one per compression
    images, tags   image IDs with their top layer; names
    image_indexes  a name built for several platforms -> its member images (JSON)
    provenance     an image's SLSA provenance predicate (--provenance), by the name its
                   build gave it
    cache_entries  build cache: step key, parent key, slot, recorded inputs, chain, ...
    stat_cache     context path + stat -> content digest
    dir_summaries  context directory + what was skipped in it -> every entry's stat and
                   its digest records (builder.context.checksum.DirSummary)
    replays, store_generation  fully cached builds' records (builder.replay), valid
                   while the generation, which triggers bump on every write to the
                   tables a build reads, has not moved
    builds         explain: what each step of a built image did
    build_bases    explain: the base images a build started from, with the digests chosen
    content_manifests  every entry of a large COPY source by its content digest, for
                   explain to name a changed file (builder.cache.manifests); the newest few
    lint_results   lint findings by Dockerfile digest + rule set (builder.lint.gate), and
                   the wasted-bytes finding by image; a cached rebuild reads, never lints

Migration 2 rewrites rows an older pybuild wrote with build-arg values in clear.  What
such a value looks like is the cache's and explain's business, not the store's, so they
register a ``Scrub`` per column (``register_scrubber``); the store runs them over the
rows.  Until both are registered (a process that never imported the cache), the
migration waits for the next open.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Callable

import msgspec

_LINT_RESULTS = """CREATE TABLE IF NOT EXISTS lint_results (
        key TEXT PRIMARY KEY,
        result TEXT NOT NULL,
        recorded REAL NOT NULL)"""
_CONTENT_MANIFESTS = """CREATE TABLE IF NOT EXISTS content_manifests (
        digest TEXT PRIMARY KEY,
        entries BLOB NOT NULL,
        recorded REAL NOT NULL)"""
# A name built for several platforms: its members, one image per platform, in the
# order asked for (JSON); the name's tags row points at the member for this host.
_IMAGE_INDEXES = """CREATE TABLE IF NOT EXISTS image_indexes (
        name TEXT PRIMARY KEY,
        members TEXT NOT NULL)"""
# An image's SLSA provenance predicate (builder.image.provenance) as the build that
# named it ``name`` made it ("": a build that named it nothing).
_PROVENANCE = """CREATE TABLE IF NOT EXISTS provenance (
        image_id TEXT NOT NULL,
        name TEXT NOT NULL,
        predicate BLOB NOT NULL,
        PRIMARY KEY (image_id, name))"""
# The base images a build started from (builder.explain.records owns the JSON).
_BUILD_BASES = """CREATE TABLE IF NOT EXISTS build_bases (
        image_id TEXT PRIMARY KEY,
        bases TEXT NOT NULL)"""
_DIR_SUMMARIES = """CREATE TABLE IF NOT EXISTS dir_summaries (
        path TEXT NOT NULL,
        scope TEXT NOT NULL,
        summary BLOB NOT NULL,
        PRIMARY KEY (path, scope))"""
# builder.replay's records, and the generation they are valid for: every write to a
# table a build reads bumps it, whichever code (or pybuild version) writes.
def _generation_triggers(*tables: str) -> tuple[str, ...]:
    return tuple(f"""CREATE TRIGGER IF NOT EXISTS generation_{table}_{event.lower()} AFTER
        {event} ON {table} BEGIN UPDATE store_generation SET n = n + 1; END"""
                 for table in tables for event in ("INSERT", "UPDATE", "DELETE"))


_REPLAYS = (
    """CREATE TABLE IF NOT EXISTS replays (
        invocation BLOB PRIMARY KEY,
        generation INTEGER NOT NULL,
        checks BLOB NOT NULL,
        output BLOB NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS store_generation (n INTEGER NOT NULL)",
    "INSERT INTO store_generation SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM store_generation)",
    *_generation_triggers("images", "tags", "cache_entries", "layers", "packed_layers"),
)
_INDEXES = (_IMAGE_INDEXES, *_generation_triggers("image_indexes"))
_TABLES = (
    """CREATE TABLE IF NOT EXISTS layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT,
        size INTEGER NOT NULL,
        short TEXT NOT NULL UNIQUE,
        epoch INTEGER,
        created REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS packed_layers (
        chain_id TEXT PRIMARY KEY,
        diff_id TEXT NOT NULL,
        parent TEXT,
        size INTEGER NOT NULL,
        created REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS layer_blobs (
        diff_id TEXT NOT NULL,
        compression TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        media_type TEXT NOT NULL,
        PRIMARY KEY (diff_id, compression))""",
    """CREATE TABLE IF NOT EXISTS images (
        id TEXT PRIMARY KEY,
        top_chain TEXT,
        created REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS tags (
        name TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id))""",
    """CREATE TABLE IF NOT EXISTS cache_entries (
        key TEXT PRIMARY KEY,
        parent TEXT NOT NULL,
        slot TEXT NOT NULL,
        inputs TEXT NOT NULL,
        chain_id TEXT,
        created TEXT NOT NULL,
        changes TEXT NOT NULL,
        recorded REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cache_by_parent ON cache_entries (parent, slot)",
    "CREATE INDEX IF NOT EXISTS cache_by_slot ON cache_entries (slot, recorded)",
    """CREATE TABLE IF NOT EXISTS stat_cache (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        digest TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS builds (
        image_id TEXT PRIMARY KEY,
        recorded REAL NOT NULL,
        steps TEXT NOT NULL)""",
    _LINT_RESULTS,
    _CONTENT_MANIFESTS,
    _DIR_SUMMARIES,
    *_REPLAYS,
    *_INDEXES,
    _PROVENANCE,
    _BUILD_BASES,
)


class Scrubbed(enum.Enum):
    """The columns whose text an older pybuild may have left a build-arg value in."""

    CACHE_INPUTS = "cache_entries.inputs"
    BUILD_STEPS = "builds.steps"


# The column's text without values in clear, or None: the row is unreadable, drop it.
Scrub = Callable[[str], "str | None"]
_SCRUBBERS: dict[Scrubbed, Scrub] = {}


def register_scrubber(column: Scrubbed, scrub: Scrub) -> None:
    """Called by the package that owns the column's contents, as it is imported."""
    _SCRUBBERS[column] = scrub


class Migration(msgspec.Struct, frozen=True):
    version: int
    what: str
    # Returns False when it cannot run now (the next open tries again).
    apply: Callable[[sqlite3.Connection], bool]
    in_transaction: bool = True


def _create_tables(db: sqlite3.Connection) -> bool:
    for statement in _TABLES:
        db.execute(statement)
    return True


def _legacy_done(db: sqlite3.Connection) -> int:
    """How far the pre-migration clean-up went (its own ``value_digests`` table): 1 rows
    rewritten, 2 the file vacuumed too, 0 never."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'value_digests'").fetchone() is None:
        return 0
    return int(db.execute("SELECT max(version) FROM value_digests").fetchone()[0] or 0)


def _scrub_plain_values(db: sqlite3.Connection) -> bool:
    if _legacy_done(db) >= 1:
        return True
    if set(_SCRUBBERS) != set(Scrubbed):
        return False
    for column, table, key in ((Scrubbed.CACHE_INPUTS, "cache_entries", "key"),
                               (Scrubbed.BUILD_STEPS, "builds", "image_id")):
        field = column.value.split(".", 1)[1]
        scrub = _SCRUBBERS[column]
        for row_key, raw in db.execute(f"SELECT {key}, {field} FROM {table}").fetchall():
            cleaned = scrub(raw)
            if cleaned is None:
                db.execute(f"DELETE FROM {table} WHERE {key} = ?", (row_key,))
            elif cleaned != raw:
                db.execute(f"UPDATE {table} SET {field} = ? WHERE {key} = ?", (cleaned, row_key))
    return True


def _vacuum(db: sqlite3.Connection) -> bool:
    """Rewrite the file, so that no freed page (nor the WAL) still holds an old value."""
    if _legacy_done(db) < 2:
        try:  # another process reading the store makes VACUUM wait, then give up
            db.execute("DROP TABLE IF EXISTS value_digests")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            return False
    db.execute("DROP TABLE IF EXISTS value_digests")
    return True


def _add_lint_results(db: sqlite3.Connection) -> bool:
    db.execute(_LINT_RESULTS)
    return True


def _add_content_manifests(db: sqlite3.Connection) -> bool:
    db.execute(_CONTENT_MANIFESTS)
    return True


def _add_dir_summaries(db: sqlite3.Connection) -> bool:
    db.execute(_DIR_SUMMARIES)
    return True


def _add_replays(db: sqlite3.Connection) -> bool:
    for statement in _REPLAYS:
        db.execute(statement)
    return True


def _add_image_indexes(db: sqlite3.Connection) -> bool:
    for statement in _INDEXES:  # with its generation triggers: a build reads it
        db.execute(statement)
    return True


def _add_provenance(db: sqlite3.Connection) -> bool:
    db.execute(_PROVENANCE)
    return True


def _add_build_bases(db: sqlite3.Connection) -> bool:
    db.execute(_BUILD_BASES)
    return True


MIGRATIONS = (
    Migration(1, "every table and index", _create_tables),
    Migration(2, "build-arg values in clear digested", _scrub_plain_values),
    Migration(3, "the file rewritten without the freed pages", _vacuum, in_transaction=False),
    Migration(4, "lint results cached by Dockerfile digest", _add_lint_results),
    Migration(5, "manifests of large COPY sources", _add_content_manifests),
    Migration(6, "context directory summaries", _add_dir_summaries),
    Migration(7, "replay records of fully cached builds", _add_replays),
    Migration(8, "names built for several platforms", _add_image_indexes),
    Migration(9, "provenance of images", _add_provenance),
    Migration(10, "the base images of each build", _add_build_bases),
)
LATEST = MIGRATIONS[-1].version


def version_of(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _set_version(db: sqlite3.Connection, version: int) -> None:
    db.execute(f"PRAGMA user_version = {int(version)}")


def migrate(db: sqlite3.Connection) -> None:
    """Bring an open database (autocommit mode) to ``LATEST``."""
    version = version_of(db)
    for migration in MIGRATIONS:
        if version >= LATEST:
            return
        if version >= migration.version:
            continue
        if migration.in_transaction:
            done = _in_transaction(db, migration)
        elif (done := migration.apply(db)):
            _in_transaction(db, Migration(migration.version, migration.what, lambda _db: True))
        if not done:
            return
        version = version_of(db)


def _in_transaction(db: sqlite3.Connection, migration: Migration) -> bool:
    db.execute("BEGIN IMMEDIATE")
    try:
        current = version_of(db)
        fresh = current == 0 and db.execute("SELECT 1 FROM sqlite_master").fetchone() is None
        if current >= migration.version:
            done = True  # another process got here first
        elif (done := migration.apply(db)):
            # A new database has no old rows to rewrite: it starts at the latest version.
            _set_version(db, LATEST if fresh else migration.version)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return done
