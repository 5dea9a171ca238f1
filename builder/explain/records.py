"""Build records in the store's database: one row per built image."""

from __future__ import annotations

import json
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
