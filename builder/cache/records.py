"""Cache entries and the stat cache, in the store's SQLite database.

An entry's inputs are recorded as ``keys.recorded_inputs`` makes them: build-arg
values only as digests.  ``scrub_inputs`` cleans a store written by an older
pybuild, which kept them in clear, the first time it is opened (the store's
migration 2 runs it; importing this module registers it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from builder.cache.keys import DIGESTED_MARK, Inputs, is_digest, legacy_inputs, same_value
from builder.store import records, schema
from builder.store.records import CacheRow, StatRow
from builder.store.store import Store

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
    """Cache entries keyed by step key, plus the context stat cache (the store's
    ``records`` hold the rows; this class owns what is in them)."""

    def __init__(self, store: Store):
        self.store = store
        self._pending_stats: list[StatRow] = []

    def lookup(self, key: str) -> CacheEntry | None:
        row = records.cache_row(self.store, key)
        if row is None:
            return None
        entry = _entry(row)
        if not entry.changes.get("layer"):
            return None  # an older pybuild's: no layer for an unchanged step (see _LEGACY)
        if entry.chain_id is not None and not self.store.has_layer(entry.chain_id):
            return None  # the layer was pruned: the entry is useless
        return entry

    def record(self, entry: CacheEntry) -> None:
        """Store ``entry``; inputs without the digested mark (an entry imported from an
        older pybuild's export) have their values digested first."""
        inputs = legacy_inputs(entry.inputs)
        records.put_cache_row(self.store, CacheRow(
            entry.key, entry.parent, entry.slot, json.dumps(inputs), entry.chain_id,
            entry.created, json.dumps(entry.changes)))

    def explain_miss(self, parent: str, slot: str, inputs: Inputs) -> str:
        """Why no entry matched: diff the inputs (as recorded: ``recorded_inputs``) against
        the closest earlier run of this step.  Build-arg values are never named."""
        row = (records.latest_cache_row(self.store, parent, slot)
               or records.latest_cache_row(self.store, parent))
        if row is None:
            if records.slot_was_built(self.store, slot):
                return "the step before it changed (a miss above, or a different base image)"
            return "not built before"
        reason = describe_difference(_inputs(row.inputs), inputs)
        if reason == _SAME and not json.loads(row.changes).get("layer"):
            return _LEGACY
        return reason

    # -- the stat cache: context path + stat -> content digest ------------------
    # The "mtime_ns" column holds the ctime (K04): a same-size rewrite with its
    # mtime put back (touch -d, tar -x, a clock step) keeps the mtime, but every
    # write, chmod, link or utime moves the ctime, which no caller can set.
    def get(self, path: str, st: os.stat_result) -> str | None:
        row = records.stat_row(self.store, path)
        if row is not None and (row.size, row.ctime_ns, row.ino) == (
                st.st_size, st.st_ctime_ns, st.st_ino):
            return row.digest
        return None

    def put(self, path: str, st: os.stat_result, digest: str) -> None:
        self._pending_stats.append(StatRow(path, st.st_size, st.st_ctime_ns, st.st_ino, digest))

    def flush_stats(self) -> None:
        if not self._pending_stats:
            return
        records.put_stat_rows(self.store, self._pending_stats)
        self._pending_stats.clear()


def _inputs(raw: str) -> Inputs:
    return legacy_inputs([tuple(i) for i in json.loads(raw)])  # type: ignore[misc]


def _entry(row: CacheRow) -> CacheEntry:
    return CacheEntry(row.key, row.parent, row.slot, _inputs(row.inputs), row.chain_id,
                      row.created, json.loads(row.changes))


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
def scrub_inputs(raw: str) -> str | None:
    """A row's inputs as an older pybuild may have written them, build-arg values in
    clear, with those values digested (``schema`` migration 2); None: unreadable, and
    it may hold a value, so the row goes."""
    try:
        inputs = [(str(n), str(v)) for n, v in json.loads(raw)]
    except (ValueError, TypeError):
        return None
    cleaned = legacy_inputs(inputs)
    return raw if cleaned == inputs else json.dumps(cleaned)


def _scrub_steps(raw: str) -> str | None:
    from builder.explain.records import scrub_steps

    return scrub_steps(raw)


schema.register_scrubber(schema.Scrubbed.CACHE_INPUTS, scrub_inputs)
schema.register_scrubber(schema.Scrubbed.BUILD_STEPS, _scrub_steps)
