"""Build records in the store: one per built image (the store's ``records`` keep the
row; this module owns the JSON in it).

A step's note (why it was or was not cached) never quotes a build-arg value:
``cache.records.describe_difference`` says ``arg TOKEN changed``.  Notes written by an
older pybuild could; ``scrub_steps`` drops those once per store (the store's
migration 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from builder.store import records
from builder.store.store import Store


def save_build(store: Store, image_id: str, steps: list[Any]) -> None:
    records.put_build_steps(store, image_id, json.dumps([asdict(step) for step in steps]))


def load_build(store: Store, image_id: str) -> list[dict] | None:
    raw = records.build_steps(store, image_id)
    return None if raw is None else json.loads(raw)


_DROPPED = ("cache miss: inputs changed (this older note quoted input values, which "
            "pybuild no longer keeps)")


def scrub_steps(raw: str) -> str | None:
    """A record's steps with every note that quotes a value (an old ``env TOKEN: 'a' ->
    'b'``) replaced; None: unreadable (nothing to explain, maybe a value), drop it."""
    try:
        steps = [step for step in json.loads(raw) if isinstance(step, dict)]
    except (ValueError, TypeError):
        return None
    changed = False
    for step in steps:
        note = str(step.get("note") or "")
        if "'" in note or '"' in note:
            step["note"] = _DROPPED
            changed = True
    return json.dumps(steps) if changed else raw
