"""Build records in the store's database: one row per built image.

A step's note (why it was or was not cached) never quotes a build-arg value:
``cache.records.describe_difference`` says ``arg TOKEN changed``.  Notes written by an
older pybuild could; ``forget_note_values`` drops those once per store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict
from typing import Any

from builder.store.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
    image_id TEXT PRIMARY KEY,
    recorded REAL NOT NULL,
    steps TEXT NOT NULL
);
"""


def save_build(store: Store, image_id: str, steps: list[Any]) -> None:
    store.db.executescript(_SCHEMA)
    payload = json.dumps([asdict(step) for step in steps])
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO builds VALUES (?, ?, ?)",
                   (image_id, time.time(), payload))


def load_build(store: Store, image_id: str) -> list[dict] | None:
    store.db.executescript(_SCHEMA)
    row = store.db.execute("SELECT steps FROM builds WHERE image_id = ?",
                           (image_id,)).fetchone()
    return None if row is None else json.loads(row[0])


_DROPPED = ("cache miss: inputs changed (this older note quoted input values, which "
            "pybuild no longer keeps)")


def forget_note_values(db: sqlite3.Connection) -> None:
    """Replace every note that quotes a value (an old ``env TOKEN: 'a' -> 'b'``); called
    inside the caller's transaction."""
    for image_id, raw in db.execute("SELECT image_id, steps FROM builds").fetchall():
        try:
            steps = [step for step in json.loads(raw) if isinstance(step, dict)]
        except (ValueError, TypeError):  # unreadable: nothing to explain, maybe a value
            db.execute("DELETE FROM builds WHERE image_id = ?", (image_id,))
            continue
        changed = False
        for step in steps:
            note = str(step.get("note") or "")
            if "'" in note or '"' in note:
                step["note"] = _DROPPED
                changed = True
        if changed:
            db.execute("UPDATE builds SET steps = ? WHERE image_id = ?",
                       (json.dumps(steps), image_id))
