"""Build records in the store: one per built image (the store's ``records`` keep the
row; this module owns the JSON in it).

A step's reasons (why it was or was not cached) never quote a build-arg value:
``cache.difference`` makes an ``arg-changed`` with the name only.  Notes written by an
older pybuild could; ``scrub_steps`` drops those once per store (the store's
migration 2).
"""

from __future__ import annotations

import json

import msgspec

from builder.explain.steps import StepRecord
from builder.store import records
from builder.store.store import Store


class BaseRecord(msgspec.Struct, frozen=True):
    """A stage's base image: the FROM as written, the platform it was chosen for, the
    image it resolved to and, when pulled, the manifest digest chosen (from an index:
    the platform's entry)."""

    stage: str
    name: str
    platform: str
    image: str
    digest: str | None = None


_BASES = msgspec.json.Decoder(list[BaseRecord])


def save_build(store: Store, image_id: str, steps: list[StepRecord],
               bases: list[BaseRecord] | None = None) -> None:
    """Record the build of ``image_id``, unless the record there already says the same
    (durations aside): a no-op rebuild writes nothing."""
    new = json.dumps([step.to_record() for step in steps])
    stored = records.build_steps(store, image_id)
    if stored is None or _outcomes(stored) != _outcomes(new):
        records.put_build_steps(store, image_id, new)
    if bases is not None and load_bases(store, image_id) != bases:
        records.put_build_bases(store, image_id, msgspec.json.encode(bases).decode())


def load_bases(store: Store, image_id: str) -> list[BaseRecord]:
    """The base images of the build of ``image_id`` ([] if none or not recorded)."""
    raw = records.build_bases(store, image_id)
    if raw is None:
        return []
    try:
        return _BASES.decode(raw)
    except msgspec.DecodeError:
        return []


def _outcomes(raw: str) -> list[object] | None:
    """A record's steps without their durations; None if it does not read."""
    try:
        steps = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(steps, list):
        return None
    return [{k: v for k, v in step.items() if k != "seconds"} if isinstance(step, dict)
            else step for step in steps]


def load_build(store: Store, image_id: str) -> list[StepRecord] | None:
    raw = records.build_steps(store, image_id)
    if raw is None:
        return None
    loaded = json.loads(raw)
    return [StepRecord.from_record(step) for step in loaded if isinstance(step, dict)]


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
