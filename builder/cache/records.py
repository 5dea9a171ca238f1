"""Cache entries and the stat cache, in the store's SQLite database.

An entry's inputs are recorded as ``keys.recorded_inputs`` makes them: build-arg
values only as digests.  ``scrub_inputs`` cleans a store written by an older
pybuild, which kept them in clear, the first time it is opened (the store's
migration 2 runs it; importing this module registers it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import msgspec

from builder.cache.keys import Inputs, legacy_inputs
from builder.cache.reasons import Reason, ReasonCode
from builder.layers.summary import ChangeSummary
from builder.store import records, schema
from builder.store.records import CacheRow, StatRow
from builder.store.store import Store

_FILE_CODES = frozenset({ReasonCode.FILE_ADDED, ReasonCode.FILE_CHANGED, ReasonCode.FILE_REMOVED,
                         ReasonCode.MODE_CHANGED, ReasonCode.CONTENT_CHANGED,
                         ReasonCode.MORE})
_BASELINE_ROWS = 200  # rows of a stage searched for a miss's baseline
# The inputs that say which instruction a row is (its text, not its context): a step
# that moved to another line finds its earlier run by them.
_IDENTITY = ("instruction", "argv", "sources", "dest", "path", "heredocs", "url", "git")


class CacheEntry(msgspec.Struct):
    key: str
    parent: str
    slot: str                 # where the step sits: "<project>/<dockerfile>:<stage>:<index>"
    inputs: Inputs
    chain_id: str | None      # the layer chain after the step (ends in its own layer)
    created: str              # the history "created" of the original run
    changes: ChangeSummary    # what its layer changed, for explain


class MissContext:
    """What the engine knows about a missed step beyond its inputs.  (A plain slotted
    class: the cached path imports this module, and a dataclass costs ~1 ms there.)"""

    __slots__ = ("base", "parent", "ran_above", "slot")

    def __init__(self, parent: str, slot: str, ran_above: str = "", base: str = "") -> None:
        self.parent = parent        # the key the step builds on (a step's, or "image <id>")
        self.slot = slot            # "<project>/<dockerfile>:<stage>:<index>"
        self.ran_above = ran_above  # the first step above it that ran in this build
        self.base = base            # the stage's FROM text, for a changed base image


class CacheStore:
    """Cache entries keyed by step key, plus the context stat cache (the store's
    ``records`` hold the rows; this class owns what is in them)."""

    def __init__(self, store: Store):
        self.store = store
        self._pending_stats: list[StatRow] = []
        self._stats: dict[str, tuple[records.StatKey, str]] = {}   # rows read by preload
        self._preloaded: set[str] = set()       # directories read whole (with a "/")
        self._pending_summaries: list[tuple[str, str, bytes]] = []

    def lookup(self, key: str) -> CacheEntry | None:
        row = records.cache_row(self.store, key)
        if row is None:
            return None
        if _legacy(row):
            return None  # an older pybuild's: no layer for an unchanged step
        entry = _entry(row)
        if entry.chain_id is not None and not self.store.has_layer(entry.chain_id):
            return None  # the layer was pruned: the entry is useless
        return entry

    def record(self, entry: CacheEntry) -> None:
        """Store ``entry``; inputs without the digested mark (an entry imported from an
        older pybuild's export) have their values digested first."""
        inputs = legacy_inputs(entry.inputs)
        records.put_cache_row(self.store, CacheRow(
            entry.key, entry.parent, entry.slot, json.dumps(inputs), entry.chain_id,
            entry.created, json.dumps({"layer": True, **entry.changes.to_record()})))

    def miss_reasons(self, miss: MissContext, inputs: Inputs, clear: Inputs) -> list[Reason]:
        """Why no entry matched, against the previous build of the same step (the
        baseline): its inputs as recorded (``recorded_inputs``), so build-arg values are
        never named; ``clear``, the inputs before that, only to compare digests."""
        row = self.baseline(miss.slot, inputs)
        if row is None:
            return [Reason(ReasonCode.NOT_BUILT_BEFORE)]
        from builder.cache.difference import differences  # a miss only

        reasons: list[Reason] = []
        if miss.ran_above:
            reasons.append(Reason(ReasonCode.PARENT_MISSED, step=miss.ran_above))
        elif row.parent != miss.parent:
            reasons.append(_parent_reason(row.parent, miss))
        before = _inputs(row.inputs)
        own = self._named_files(before, inputs, differences(before, inputs, clear))
        if reasons or own:
            return reasons + own
        return [Reason(ReasonCode.LEGACY_ENTRY if _legacy(row) else ReasonCode.LAYER_PRUNED)]

    def reasons_between(self, old_key: str, new_key: str, ran_above: str) -> list[Reason]:
        """``explain --against``: how the step with ``new_key`` differs from the
        baseline's step ``old_key`` (no clear values: they are not kept)."""
        if old_key == new_key:
            return [Reason(ReasonCode.SAME)]
        old, new = records.cache_row(self.store, old_key), records.cache_row(self.store, new_key)
        from builder.cache.difference import differences

        if old is None or new is None:
            return [Reason(ReasonCode.NOTE, text="the cache no longer records "
                           f"{'the baseline' if old is None else 'this'} step's inputs")]
        reasons = [Reason(ReasonCode.PARENT_DIFFERS, step=ran_above)] if ran_above else \
            [_parent_reason(old.parent, MissContext(new.parent, new.slot))] \
            if old.parent != new.parent else []
        return reasons + differences(_inputs(old.inputs), _inputs(new.inputs))

    def put_manifest(self, content_digest: str,
                     entries: Callable[[], list[tuple[str, str]]]) -> None:
        """Every entry of a large COPY source, for ``_named_files`` (``manifests``);
        ``entries`` is called only when the store does not have them yet."""
        from builder.cache import manifests

        manifests.save(self.store, content_digest, entries)

    def _named_files(self, old: Inputs, new: Inputs, reasons: list[Reason]) -> list[Reason]:
        """A large source's changed files from the two builds' manifests, in place of
        the few its inputs could name (they record at most 5,000 files)."""
        before = next((value for name, value in old if name == "content"), None)
        after = next((value for name, value in new if name == "content"), None)
        if before is None or after is None or before == after:
            return reasons
        from builder.cache import manifests

        old_files, new_files = manifests.load(self.store, before), \
            manifests.load(self.store, after)
        if old_files is None or new_files is None:
            return reasons
        from builder.cache.difference import capped

        kept = [r for r in reasons if r.code not in _FILE_CODES]
        return capped(kept + manifests.file_reasons(old_files, new_files))

    def baseline(self, slot: str, inputs: Inputs) -> CacheRow | None:
        """The previous build of this step, among the steps of the same project (the
        slot's ``<project>/``: one context directory) and stage: the newest with the
        same instruction text in the same slot, else anywhere in the stage (lines
        moved), else in the same stage of another Dockerfile of the project (``-f``);
        else the newest in the same slot (the instruction was edited)."""
        dockerfile, stage, _ = slot.rsplit(":", 2)
        project = dockerfile.split("/", 1)[0] + "/"
        rows = [row for row in records.recent_cache_rows(self.store, project, _BASELINE_ROWS)
                if row.slot.rsplit(":", 2)[1:2] == [stage]]
        identity = _identity(inputs)
        same_text = [row for row in rows if _identity(_inputs(row.inputs)) == identity]
        here = [row for row in same_text if row.slot.startswith(dockerfile + ":")]
        return next((row for row in here if row.slot == slot), None) \
            or next(iter(here), None) or next(iter(same_text), None) \
            or next((row for row in rows if row.slot == slot), None)

    # -- the stat cache: context path + stat -> content digest ------------------
    # The "mtime_ns" column holds the ctime (K04): a same-size rewrite with its
    # mtime put back (touch -d, tar -x, a clock step) keeps the mtime, but every
    # write, chmod, link or utime moves the ctime, which no caller can set.
    def preload(self, directory: str) -> None:
        """Read the rows of every file below ``directory`` in one query: a COPY of a
        large context then asks the database nothing per file."""
        below = directory.rstrip("/") + "/"
        if below in self._preloaded or not _storable(below):
            return
        self._stats.update(records.stat_digests_below(self.store, below))
        self._preloaded.add(below)

    def get(self, path: str, st: os.stat_result) -> str | None:
        known = self._stats.get(path)
        if known is None and not any(path.startswith(below) for below in self._preloaded) \
                and _storable(path):
            known = records.stat_digest(self.store, path)
        if known is not None and known[0] == (st.st_size, st.st_ctime_ns, st.st_ino):
            return known[1]
        return None

    def put(self, path: str, st: os.stat_result, digest: str) -> None:
        if not _storable(path):
            return  # a name that is not UTF-8: that file is read every time
        self._pending_stats.append(StatRow(path, st.st_size, st.st_ctime_ns, st.st_ino, digest))

    def dir_summaries(self, directory: str) -> dict[tuple[str, str], bytes]:
        """The directory summaries of ``directory`` and below, in one query."""
        below = directory.rstrip("/") + "/"
        return records.dir_summaries_below(self.store, below) if _storable(below) else {}

    def put_dir_summary(self, path: str, scope: str, summary: bytes) -> None:
        if _storable(path) and _storable(scope):
            self._pending_summaries.append((path, scope, summary))

    def flush_stats(self) -> None:
        """Write what the checksums learnt (nothing, when every stat was unchanged)."""
        if self._pending_stats:
            records.put_stat_rows(self.store, self._pending_stats)
            self._pending_stats.clear()
        if self._pending_summaries:
            records.put_dir_summaries(self.store, self._pending_summaries)
            self._pending_summaries.clear()


def _storable(text: str) -> bool:
    """Can SQLite keep this path?  A name that is not UTF-8 comes with lone surrogates
    (os.fsdecode), which its TEXT columns refuse: such paths are not cached."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _inputs(raw: str) -> Inputs:
    return legacy_inputs([(str(name), str(value)) for name, value in json.loads(raw)])


def _entry(row: CacheRow) -> CacheEntry:
    return CacheEntry(row.key, row.parent, row.slot, _inputs(row.inputs), row.chain_id,
                      row.created, ChangeSummary.from_record(json.loads(row.changes)))


def _identity(inputs: Inputs) -> list[tuple[str, str]]:
    return [(name, value) for name, value in inputs if name in _IDENTITY]


def _legacy(row: CacheRow) -> bool:
    """An older pybuild's entry for a step that changed nothing: it made no layer, where
    BuildKit (and pybuild now) makes the empty one; never used, the step runs again."""
    try:
        return not json.loads(row.changes).get("layer")
    except (ValueError, AttributeError):
        return True


def _parent_reason(old_parent: str, miss: MissContext) -> Reason:
    """The step above hit, yet on other content than last time: the base image moved
    (a new digest behind the tag), or an earlier step hit another run's entry."""
    if old_parent.startswith("image ") and miss.parent.startswith("image "):
        named = {"base": miss.base} if miss.base else {}
        return Reason(ReasonCode.BASE_CHANGED, old=old_parent[len("image "):],
                      new=miss.parent[len("image "):], **named)
    return Reason(ReasonCode.PARENT_CHANGED)


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
