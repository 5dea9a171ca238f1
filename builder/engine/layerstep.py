"""A step that changes the filesystem: reuse its cached layer, or run it on a snapshot
and commit what it changed as a layer (prepare -> action -> commit -> record)."""

from __future__ import annotations

from collections.abc import Callable

from builder.cache import CacheEntry, Inputs
from builder.engine.buildrun import BuildRun
from builder.engine.cachelookup import decide
from builder.engine.options import StepRecord
from builder.engine.state import StageState
from builder.snapshot import ActiveSnapshot, commit, prepare

# What a step does on its snapshot (mounted by the action itself, often in a child).
SnapshotAction = Callable[[ActiveSnapshot], None]


class StepResult:
    """What a layer step left: its chain, whether it made a layer, and its change counts.

    A plain slotted class: on the cached path a dataclass costs ~1 ms at import."""

    __slots__ = ("added", "chain_id", "deleted", "layer", "modified", "size")

    def __init__(self, chain_id: str | None, layer: bool, added: int = 0, modified: int = 0,
                 deleted: int = 0, size: int = 0) -> None:
        self.chain_id = chain_id
        self.layer = layer
        self.added, self.modified, self.deleted = added, modified, deleted
        self.size = size      # bytes of the layer's content

    @classmethod
    def from_entry(cls, entry: CacheEntry) -> StepResult:
        changes = entry.changes
        return cls(entry.chain_id, bool(changes.get("layer")), changes.get("added", 0),
                   changes.get("modified", 0), changes.get("deleted", 0),
                   changes.get("bytes", 0))

    def changes(self) -> dict[str, int | bool]:
        """The cache entry's record of it."""
        return {"layer": self.layer, "added": self.added, "modified": self.modified,
                "deleted": self.deleted, "bytes": self.size}


def layer_step(run: BuildRun, state: StageState, record: StepRecord, inputs: Inputs,
               action: SnapshotAction) -> None:
    """Reuse the cached result of a step with these inputs, or run it and record it."""
    decision = decide(run, state, record.index, inputs)
    record.key = decision.key
    if decision.hit is not None:
        result = StepResult.from_entry(decision.hit)
        record.cached, record.created, record.note = True, decision.hit.created, "cache hit"
        _note(record, result)
        state.chain, state.cache_key = result.chain_id, decision.key
        run.progress.cached()
        return
    record.note = decision.miss
    record.created = run.created()
    result = _run_on_snapshot(run, state, action)
    _note(record, result)
    run.cache.record(CacheEntry(
        key=decision.key, parent=state.cache_key, slot=decision.slot, inputs=decision.inputs,
        chain_id=result.chain_id, created=record.created, changes=result.changes()))
    state.chain, state.cache_key = result.chain_id, decision.key


def _run_on_snapshot(run: BuildRun, state: StageState, action: SnapshotAction) -> StepResult:
    """Prepare a snapshot of the stage's chain, run ``action`` on it, commit it."""
    snapshot = prepare(run.store, state.chain, run.options.storage_driver)
    try:
        action(snapshot)
        committed = commit(snapshot, source_date_epoch=run.options.source_date_epoch)
    except BaseException:
        snapshot.release()
        raise
    changes = committed.changes
    return StepResult(committed.chain_id, bool(committed.layer), len(changes.added),
                      len(changes.modified), len(changes.deleted), changes.bytes)


def _note(record: StepRecord, result: StepResult) -> None:
    record.layer = result.chain_id if result.layer else None
    record.added, record.modified, record.deleted = result.added, result.modified, result.deleted
    record.size = result.size
